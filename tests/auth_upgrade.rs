//! API-key databases written before the policy MAC existed keep working after the upgrade.
//!
//! `tests/fixtures/auth-v3.db` was written by `write_fixture` below with the code of commit
//! b81ea01 (schema version 3: api_keys without `policy_mac`), with the keyring in
//! `auth-v3.keyring` and the keys' plaintexts (test keys, worthless elsewhere) in
//! `auth-v3.keys`. The upgrade test copies it, opens it with today's code and checks that the
//! keys verify as they did, and that a tamper after the upgrade is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel::auth::{ApiKeys, ApiKeysOptions, NewKey};
use keel::crypto::AuditLog;
use keel::{AuthError, Error, Keyring, Store, StoreOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn open(db: &Path, keyring: &Arc<Keyring>) -> (ApiKeys, Arc<AuditLog>) {
    let store = Store::open(db, StoreOptions::default()).unwrap();
    let audit = Arc::new(AuditLog::new(store.clone(), keyring.clone()));
    let keys = ApiKeys::new(store, keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .with_audit(audit.clone());
    (keys, audit)
}

fn new_key(name: &str, scopes: &[&str]) -> NewKey {
    NewKey {
        tenant: "acme".into(),
        name: name.into(),
        env: "live".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        metadata: Some(r#"{"owner":"ops"}"#.into()),
        rate_limit: Some((60, Duration::from_secs(60))),
        ..NewKey::default()
    }
}

/// Regenerates the fixture (run by hand, only with the code of the schema it captures):
/// `cargo test --test auth_upgrade -- --ignored write_fixture`.
#[test]
#[ignore = "regenerates tests/fixtures/auth-v3.* with the code of its time"]
fn write_fixture() {
    // Only the code of schema version 3 may write this fixture (never overwrite it with later
    // code): check on a scratch database first.
    let scratch = std::env::temp_dir().join(format!("keel-fixture-probe-{}", std::process::id()));
    drop(Store::open(&scratch, StoreOptions::default()).unwrap());
    let version: i64 = rusqlite::Connection::open(&scratch)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
    }
    assert_eq!(
        version, 3,
        "this code writes schema {version}, not the v3 fixture"
    );
    let dir = fixtures();
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("auth-v3.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let keyring_text = format!("1:{}", &*Keyring::generate_key().unwrap());
    let keyring = Arc::new(Keyring::parse(&keyring_text).unwrap());
    let mut lines = Vec::new();
    {
        let (keys, _audit) = open(&db, &keyring);
        let (admin, _) = keys
            .create("alice", &new_key("admin", &["admin", "chat:write"]))
            .unwrap();
        lines.push(format!("valid {}", &*admin));
        let (reader, _) = keys
            .create(
                "alice",
                &NewKey {
                    tenant: "globex".into(),
                    ..new_key("reader", &["chat:read"])
                },
            )
            .unwrap();
        lines.push(format!("valid {}", &*reader));
        let (revoked, info) = keys
            .create("alice", &new_key("gone", &["chat:read"]))
            .unwrap();
        keys.revoke("bob", "acme", info.id).unwrap();
        lines.push(format!("revoked {}", &*revoked));
        let (expired, _) = keys
            .create(
                "alice",
                &NewKey {
                    expires_at: Some(SystemTime::now() - Duration::from_secs(3600)),
                    ..new_key("old", &["chat:read"])
                },
            )
            .unwrap();
        lines.push(format!("expired {}", &*expired));
        let (old, info) = keys
            .create("alice", &new_key("rotating", &["chat:read"]))
            .unwrap();
        let (new, _) = keys
            .rotate(
                "alice",
                "acme",
                info.id,
                Duration::from_secs(100 * 365 * 86400),
            )
            .unwrap();
        lines.push(format!("valid {}", &*old));
        lines.push(format!("valid {}", &*new));
    }
    let wal = format!("{}-wal", db.display());
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL was checkpointed on close"
    );
    let _ = std::fs::remove_file(wal);
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    std::fs::write(dir.join("auth-v3.keyring"), format!("{keyring_text}\n")).unwrap();
    std::fs::write(dir.join("auth-v3.keys"), lines.join("\n") + "\n").unwrap();
}

struct Copy(PathBuf);

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_fixture(name: &str) -> (Copy, PathBuf, Arc<Keyring>, Vec<(String, String)>) {
    let dir = std::env::temp_dir().join(format!("keel-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keel.db");
    std::fs::copy(fixtures().join("auth-v3.db"), &db).unwrap();
    let text = std::fs::read_to_string(fixtures().join("auth-v3.keyring")).unwrap();
    let keyring = Arc::new(Keyring::parse(text.trim()).unwrap());
    let keys = std::fs::read_to_string(fixtures().join("auth-v3.keys"))
        .unwrap()
        .lines()
        .map(|l| {
            let (state, key) = l.split_once(' ').unwrap();
            (state.to_owned(), key.to_owned())
        })
        .collect();
    (Copy(dir), db, keyring, keys)
}

fn reason(e: Error) -> AuthError {
    match e {
        Error::Auth(a) => a,
        other => panic!("expected an auth error, got {other}"),
    }
}

#[test]
fn keys_written_before_the_policy_mac_still_verify_after_the_upgrade() {
    let (_copy, db, keyring, keys) = copy_fixture("verify");
    let (registry, audit) = open(&db, &keyring);
    for (state, key) in &keys {
        let result = registry.verify(key);
        match state.as_str() {
            "valid" => assert!(result.is_ok(), "{state} {}", &key[..16]),
            "revoked" => assert_eq!(reason(result.unwrap_err()), AuthError::Revoked),
            "expired" => assert_eq!(reason(result.unwrap_err()), AuthError::Expired),
            other => panic!("unknown state {other}"),
        }
    }
    let admin = registry.verify(&keys[0].1).unwrap();
    assert_eq!(admin.tenant, "acme");
    assert!(admin.has_scope("admin"));
    assert_eq!(registry.verify(&keys[1].1).unwrap().tenant, "globex");
    // The old audit log still verifies, with the two refusals above appended.
    assert_eq!(audit.verify().unwrap().entries, 7 + 2);
    let (unsealed, marker): (i64, i64) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT (SELECT count(*) FROM api_keys WHERE policy_mac IS NULL),
                    (SELECT count(*) FROM api_keys_upgrade)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((unsealed, marker), (0, 0), "sealed once, marker consumed");
    // Keys created and rotated after the upgrade work as usual.
    let rotated = registry
        .rotate("alice", "acme", admin.key_id, Duration::from_secs(60))
        .unwrap();
    assert!(registry.verify(&rotated.0).is_ok());
}

#[test]
fn a_tamper_after_the_upgrade_is_refused_and_never_sealed_again() {
    let (_copy, db, keyring, keys) = copy_fixture("tamper");
    drop(open(&db, &keyring)); // the upgrade seals the rows of its time
                               // The reader of tenant globex becomes an admin of acme; the revoked key comes back; the
                               // first key loses its MAC, as if it predated the upgrade.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE api_keys SET tenant_id = 'acme', scopes = 'admin' WHERE id = 2;
             UPDATE api_keys SET revoked_at = NULL WHERE id = 3;
             UPDATE api_keys SET policy_mac = NULL WHERE id = 1;",
        )
        .unwrap();
    // Reopening does not bless them: the one-time upgrade is over.
    let (registry, _audit) = open(&db, &keyring);
    for (i, (_, key)) in keys.iter().enumerate().take(3) {
        assert_eq!(
            reason(registry.verify(key).unwrap_err()),
            AuthError::Tampered,
            "key {}",
            i + 1
        );
    }
    assert!(
        registry.verify(&keys[5].1).is_ok(),
        "untouched rows still verify"
    );
}

/// Subkeys of rows written before HKDF derivation (version 1: HMAC-SHA256(keyring key,
/// label)) keep verifying next to rows made after it (version 2: HKDF-SHA256), in the API-key
/// registry and in the audit log alike; each row records its version.
#[test]
fn rows_derived_before_hkdf_keep_working_next_to_hkdf_rows() {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    let (_copy, db, keyring, keys) = copy_fixture("kdf");
    let text = std::fs::read_to_string(fixtures().join("auth-v3.keyring")).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim().strip_prefix("1:").unwrap())
        .unwrap();
    let label = b"keel/api-key-hash/v1";
    let hash_with = |secret: &[u8], key: &str| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
        m.update(key.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    let v1 = |key: &str| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&raw).unwrap();
        m.update(label);
        hash_with(&m.finalize().into_bytes(), key)
    };
    let v2 = |key: &str| {
        let mut secret = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &raw)
            .expand(label, &mut secret)
            .unwrap();
        hash_with(&secret, key)
    };

    let (registry, audit) = open(&db, &keyring);
    let (fresh, info) = registry
        .create("alice", &new_key("fresh", &["chat:read"]))
        .unwrap();
    let row = |id: i64| -> (Vec<u8>, i64) {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT hash, kdf FROM api_keys WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    };
    let old = registry.verify(&keys[0].1).unwrap();
    assert_eq!(row(old.key_id), (v1(&keys[0].1), 1), "old row: version 1");
    assert_eq!(row(info.id), (v2(&fresh), 2), "new row: HKDF, version 2");
    assert_ne!(v1(&fresh), v2(&fresh));

    // A fresh registry on the mixed database verifies both kinds, and every old key as before.
    let (registry, audit2) = open(&db, &keyring);
    assert_eq!(registry.verify(&fresh).unwrap().key_id, info.id);
    for (state, key) in &keys {
        let result = registry.verify(key);
        match state.as_str() {
            "valid" => assert!(result.is_ok(), "{state} {}", &key[..16]),
            "revoked" => assert_eq!(reason(result.unwrap_err()), AuthError::Revoked),
            "expired" => assert_eq!(reason(result.unwrap_err()), AuthError::Expired),
            other => panic!("unknown state {other}"),
        }
    }

    // The audit log: the fixture's 7 entries under version 1, the new ones under version 2,
    // one chain that verifies, and actor queries that find entries of both versions.
    let by_kdf: Vec<(i64, i64)> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c
            .prepare("SELECT kdf, count(*) FROM audit_log GROUP BY kdf ORDER BY kdf")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    assert_eq!(by_kdf[0], (1, 7));
    assert_eq!(by_kdf[1].0, 2);
    let total = 7 + by_kdf[1].1;
    assert_eq!(audit.verify().unwrap().entries, total as u64);
    assert_eq!(audit2.verify().unwrap().entries, total as u64);
    let alice = audit2
        .query(&keel::crypto::AuditQuery {
            actor: Some("alice".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(alice.iter().any(|e| e.seq <= 7) && alice.iter().any(|e| e.seq > 7));
}
