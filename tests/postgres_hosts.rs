//! Several hosts on one PostgreSQL: three app processes (this test binary, re-run as children)
//! append to one conversation at once, each through its own `keel::Engine`; a fourth process
//! reads it: every acknowledged message is there, each host's in its own order. API keys made
//! on one host verify on another, and the audit chain they share verifies.

#[path = "../src/store/postgres/test_server.rs"]
mod test_server;

use std::io::{BufRead, Write};

use std::process::{Command, Stdio};

use keel::auth::NewKey;
use keel::config::{Config, DatabaseConfig, KeyringConfig};
use keel::memory::{NewMessage, SessionRef};
use keel::{Engine, Keyring};

const HOSTS: usize = 3;
const PER_HOST: usize = 60;

fn engine(url: &str, keyring_file: &str) -> Engine {
    let config = Config {
        database: DatabaseConfig {
            url: Some(url.to_owned()),
            ..DatabaseConfig::default()
        },
        keyring: KeyringConfig {
            file: Some(keyring_file.into()),
            ..KeyringConfig::default()
        },
        ..Config::default()
    };
    Engine::from_config(&config).unwrap()
}

fn shared() -> SessionRef<'static> {
    SessionRef::new("acme", "alice", "support-call")
}

/// The child's part: runs only when the parent sets `KEEL_PG_HOST`.
#[test]
fn host_process() {
    let Ok(host) = std::env::var("KEEL_PG_HOST") else {
        return;
    };
    let url = std::env::var("KEEL_PG_URL").unwrap();
    let keyring = std::env::var("KEEL_PG_KEYRING").unwrap();
    let engine = engine(&url, &keyring);
    // Results go to a file (stdout also carries libtest's own lines); READY goes to stdout.
    let mut out = std::fs::File::create(std::env::var("KEEL_PG_OUT").unwrap()).unwrap();
    if host == "reader" {
        let all = engine.memory().history(&shared(), 100_000, 0).unwrap();
        for m in all.iter().rev() {
            writeln!(out, "MSG {}", m.content).unwrap();
        }
        let key = std::env::var("KEEL_PG_KEY").unwrap();
        let identity = engine.api_keys().verify(&key).unwrap();
        writeln!(out, "KEY {}", identity.tenant).unwrap();
        let audit = engine.audit().unwrap().verify().unwrap();
        writeln!(out, "AUDIT {}", audit.entries).unwrap();
        return;
    }
    // Ready, then wait for the parent's go: a barrier across processes, on an advisory lock
    // the parent holds until every host is ready.
    let mut gate = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "READY").unwrap();
    stdout.flush().unwrap();
    gate.execute("SELECT pg_advisory_lock_shared(42)", &[])
        .unwrap();
    drop(gate);
    for i in 0..PER_HOST {
        let text = format!("{host}-{i}");
        engine
            .memory()
            .append(&shared(), &NewMessage::new("user", &text))
            .unwrap();
        writeln!(out, "ACK {text}").unwrap();
    }
    if host == "h0" {
        let (plaintext, _) = engine
            .api_keys()
            .create(
                "admin",
                &NewKey {
                    tenant: "acme".into(),
                    name: "made on h0".into(),
                    env: "live".into(),
                    ..NewKey::default()
                },
            )
            .unwrap();
        writeln!(out, "KEYTEXT {}", plaintext.as_str()).unwrap();
    }
}

fn child(
    host: &str,
    url: &str,
    keyring: &str,
    key: Option<&str>,
    out: &std::path::Path,
) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("KEEL_PG_OUT", out);
    c.args(["--exact", "host_process", "--nocapture", "--test-threads=1"])
        .env("KEEL_PG_HOST", host)
        .env("KEEL_PG_URL", url)
        .env("KEEL_PG_KEYRING", keyring)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(k) = key {
        c.env("KEEL_PG_KEY", k);
    }
    c
}

#[test]
fn three_hosts_share_one_conversation_and_nothing_is_lost() {
    if std::env::var("KEEL_PG_HOST").is_ok() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let server = test_server::server();
    let dir = std::env::temp_dir().join(format!("keel-pg-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = server.database_for(&dir);
    let keyring = dir.join("keyring");
    std::fs::write(
        &keyring,
        format!("1:{}\n", Keyring::generate_key().unwrap().as_str()),
    )
    .unwrap();
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keyring = keyring.to_str().unwrap().to_owned();
    // Migrated once here, so the children race only on data.
    drop(engine(&url, &keyring));
    let mut gate = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    gate.execute("SELECT pg_advisory_lock(42)", &[]).unwrap();
    let mut children: Vec<_> = (0..HOSTS)
        .map(|h| {
            let out = dir.join(format!("h{h}.out"));
            child(&format!("h{h}"), &url, &keyring, None, &out)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| std::io::BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for r in &mut readers {
        let mut line = String::new();
        // libtest may print "test host_process ... " before the test's first line.
        while !line.contains("READY") {
            line.clear();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "a host died before READY"
            );
        }
    }
    gate.execute("SELECT pg_advisory_unlock(42)", &[]).unwrap();
    let mut acked = Vec::new();
    let mut key = None;
    for (h, c) in children.iter_mut().enumerate() {
        assert!(c.wait().unwrap().success());
        let text = std::fs::read_to_string(dir.join(format!("h{h}.out"))).unwrap();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("ACK ") {
                acked.push(t.to_owned());
            } else if let Some(k) = line.strip_prefix("KEYTEXT ") {
                key = Some(k.to_owned());
            }
        }
    }
    drop(readers);
    assert_eq!(acked.len(), HOSTS * PER_HOST);
    let report = dir.join("reader.out");
    let status = child("reader", &url, &keyring, key.as_deref(), &report)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&report).unwrap();
    let read: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("MSG "))
        .collect();
    assert_eq!(
        read.len(),
        HOSTS * PER_HOST,
        "nothing lost, nothing doubled"
    );
    for a in &acked {
        assert!(read.contains(&a.as_str()), "{a} acknowledged but not read");
    }
    for h in 0..HOSTS {
        let prefix = format!("h{h}-");
        let mine: Vec<_> = read.iter().filter(|m| m.starts_with(&prefix)).collect();
        let expected: Vec<_> = (0..PER_HOST).map(|i| format!("h{h}-{i}")).collect();
        assert_eq!(
            mine.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            expected
        );
    }
    assert!(text.contains("KEY acme"), "{text}");
    assert!(text.contains("AUDIT 1"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
