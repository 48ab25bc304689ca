//! kill -9 while API keys are created, rotated and revoked: no key without its audit entry, no
//! audit entry without its change, and no row whose policy MAC does not match.
//!
//! The child process is this very test binary, re-executed with `KEEL_AUTH_RELIABILITY_ROLE`
//! set (as in tests/memory_reliability.rs).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keel::auth::{ApiKeys, ApiKeysOptions, NewKey};
use keel::crypto::{AuditLog, AuditQuery};
use keel::{AuthError, Error, Keyring, Store, StoreOptions};

const ROLE: &str = "KEEL_AUTH_RELIABILITY_ROLE";
const DB: &str = "KEEL_AUTH_RELIABILITY_DB";
const KEYS: &str = "KEEL_AUTH_RELIABILITY_KEYS";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(db: &Path, keyring: &str) -> (ApiKeys, Arc<AuditLog>, Store) {
    let keyring = Arc::new(Keyring::parse(keyring).unwrap());
    let store = Store::open(db, StoreOptions::default()).unwrap();
    let audit = Arc::new(AuditLog::new(store.clone(), keyring.clone()));
    let keys = ApiKeys::new(store.clone(), keyring, ApiKeysOptions::default())
        .unwrap()
        .try_with_audit(audit.clone())
        .unwrap();
    (keys, audit, store)
}

/// The child: create, rotate and revoke forever, acknowledging each created key.
fn run_child() -> ! {
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let (keys, _audit, _store) = open(&db, &std::env::var(KEYS).unwrap());
    let new = NewKey {
        tenant: "acme".into(),
        name: "k".into(),
        env: "live".into(),
        scopes: vec!["chat:write".into()],
        ..NewKey::default()
    };
    for i in 0u64.. {
        let (plaintext, info) = keys.create("alice", &new).unwrap();
        println!("ACK {}", &*plaintext);
        match i % 3 {
            1 => keys.revoke("bob", "acme", info.id).unwrap(),
            2 => {
                let (next, _) = keys
                    .rotate("carol", "acme", info.id, Duration::from_secs(3600))
                    .unwrap();
                println!("ACK {}", &*next);
            }
            _ => {}
        }
    }
    unreachable!()
}

fn jitter(seed: &mut u64, max_ms: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(*seed % max_ms)
}

#[test]
fn kill_9_never_leaves_a_key_change_without_its_audit_entry() {
    if std::env::var(ROLE).is_ok() {
        run_child();
    }
    let dir = TempDir(std::env::temp_dir().join(format!("keel-auth-kill9-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("keel.db");
    let keyring = format!("1:{}", &*Keyring::generate_key().unwrap());
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut acked: Vec<String> = Vec::new();
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "kill_9_never_leaves_a_key_change_without_its_audit_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "writer")
            .env(DB, &db)
            .env(KEYS, &keyring)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(150) + jitter(&mut seed, 300));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());

        let (keys, audit, store) = open(&db, &keyring);
        assert!(audit.verify().is_ok(), "round {round}: the chain verifies");
        let entries = audit
            .query(&AuditQuery {
                limit: u32::MAX,
                ..AuditQuery::default()
            })
            .unwrap();
        let created: HashSet<String> = entries
            .iter()
            .filter(|e| e.entry.action == "api_key.create")
            .map(|e| e.entry.target.clone())
            .chain(
                entries
                    .iter()
                    .filter(|e| e.entry.action == "api_key.rotate")
                    .filter_map(|e| e.entry.target.split(" -> ").nth(1).map(str::to_owned)),
            )
            .collect();
        let revoked: HashSet<String> = entries
            .iter()
            .filter(|e| e.entry.action == "api_key.revoke")
            .map(|e| e.entry.target.clone())
            .collect();
        let rotated: HashSet<String> = entries
            .iter()
            .filter(|e| e.entry.action == "api_key.rotate")
            .filter_map(|e| e.entry.target.split(" -> ").next().map(str::to_owned))
            .collect();
        type Row = (i64, Option<i64>, Option<i64>);
        let rows: Vec<Row> = {
            let c = rusqlite::Connection::open(store.path()).unwrap();
            let mut stmt = c
                .prepare("SELECT id, revoked_at, replaced_by FROM api_keys")
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows
        };
        assert_eq!(rows.len(), created.len(), "round {round}: keys vs entries");
        for (id, revoked_at, replaced_by) in rows {
            let target = format!("acme/{id}");
            assert!(
                created.contains(&target),
                "round {round}: {target} has no entry"
            );
            assert_eq!(
                revoked_at.is_some(),
                revoked.contains(&target),
                "round {round}: {target} revocation vs entry"
            );
            assert_eq!(
                replaced_by.is_some(),
                rotated.contains(&target),
                "round {round}: {target} rotation vs entry"
            );
        }
        // Every acknowledged key is intact: verified, or refused as revoked, never tampered.
        for key in &acked {
            match keys.verify(key) {
                Ok(_) | Err(Error::Auth(AuthError::Revoked)) => {}
                Err(e) => panic!("round {round}: acknowledged key refused: {e}"),
            }
        }
    }
    assert!(acked.len() >= 20, "only {} keys acknowledged", acked.len());
}
