//! Moving a SQLite deployment to PostgreSQL (`keel::store::postgres::migrate`, the
//! `migrate_to_postgres` example): memory, API keys and the audit log arrive intact and
//! checked, ids continue without reuse, a wrong keyring or a non-empty target is refused.

#[path = "../src/store/postgres/test_server.rs"]
mod test_server;

use std::sync::Arc;
use std::time::Duration;

use keel::auth::NewKey;
use keel::config::{Config, DatabaseConfig, KeyringConfig};
use keel::memory::{NewMessage, SessionRef};
use keel::store::postgres::migrate::copy_from_sqlite;
use keel::{CryptoError, Engine, Error, Keyring, StoreError};

fn engine(url: &str, keyring_file: &std::path::Path) -> Engine {
    Engine::from_config(&Config {
        database: DatabaseConfig {
            url: Some(url.to_owned()),
            ..DatabaseConfig::default()
        },
        keyring: KeyringConfig {
            file: Some(keyring_file.to_owned()),
            ..KeyringConfig::default()
        },
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn a_sqlite_deployment_moves_to_postgres_intact_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("keel-pg-migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keyring_file = dir.join("keyring");
    let text = format!("1:{}\n", Keyring::generate_key().unwrap().as_str());
    std::fs::write(&keyring_file, &text).unwrap();
    std::fs::set_permissions(&keyring_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keyring = Arc::new(Keyring::from_file(&keyring_file).unwrap());
    let db = dir.join("keel.db");

    // Today's SQLite deployment.
    let sqlite = engine(&format!("sqlite://{}", db.display()), &keyring_file);
    let a = SessionRef::new("acme", "alice", "s1");
    let b = SessionRef::new("globex", "bob", "s2");
    let gone = SessionRef::new("acme", "carol", "deleted");
    for i in 0..5 {
        sqlite
            .memory()
            .append(
                &a,
                &NewMessage::new("user", format!("a{i}")).with_metadata("{\"i\":1}"),
            )
            .unwrap();
    }
    sqlite
        .memory()
        .append_many(
            &b,
            &[
                NewMessage::new("user", "b0"),
                NewMessage::new("assistant", "b1"),
            ],
        )
        .unwrap();
    sqlite
        .memory()
        .append(&gone, &NewMessage::new("user", "bye"))
        .unwrap();
    sqlite.memory().delete_session(&gone).unwrap();
    let keys = sqlite.api_keys();
    let new_key = NewKey {
        tenant: "acme".into(),
        name: "app".into(),
        env: "live".into(),
        scopes: vec!["chat:write".into()],
        metadata: Some("{\"owner\":\"ops\"}".into()),
        ..NewKey::default()
    };
    let (old_key, old_info) = keys.create("admin", &new_key).unwrap();
    let (new_plain, _) = keys
        .rotate("admin", "acme", old_info.id, Duration::from_secs(3600))
        .unwrap();
    let (revoked, revoked_info) = keys.create("admin", &new_key).unwrap();
    keys.revoke("admin", "acme", revoked_info.id).unwrap();
    let audit_entries = sqlite.audit().unwrap().verify().unwrap().entries;
    let history_a = sqlite.memory().history(&a, 100, 0).unwrap();
    drop(sqlite);

    let server = test_server::server();
    let url = server.database_for(&dir);
    // A wrong keyring is refused before anything is copied.
    let wrong = Arc::new(Keyring::generate().unwrap());
    let err = copy_from_sqlite(&db, &url, wrong).unwrap_err();
    assert!(
        matches!(err, Error::Crypto(CryptoError::KeyMismatch { .. })),
        "{err:?}"
    );

    let report = copy_from_sqlite(&db, &url, Arc::clone(&keyring)).unwrap();
    assert_eq!(
        (
            report.sessions,
            report.messages,
            report.api_keys,
            report.audit_entries
        ),
        (2, 7, 3, audit_entries)
    );
    // Into a database that already holds data: refused.
    let err = copy_from_sqlite(&db, &url, Arc::clone(&keyring)).unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::Migration(_))),
        "{err:?}"
    );

    let pg = engine(&url, &keyring_file);
    let moved = pg.memory().history(&a, 100, 0).unwrap();
    assert_eq!(moved, history_a);
    assert_eq!(pg.memory().history(&b, 10, 0).unwrap().len(), 2);
    assert!(pg.memory().history(&gone, 10, 0).is_err());
    assert_eq!(pg.api_keys().verify(&new_plain).unwrap().tenant, "acme");
    assert!(
        pg.api_keys().verify(&old_key).is_ok(),
        "within its grace period"
    );
    assert!(pg.api_keys().verify(&revoked).is_err());
    // The chain continues on PostgreSQL: the refusal just above is its next entry.
    assert_eq!(
        pg.audit().unwrap().verify().unwrap().entries,
        audit_entries + 1
    );
    // Ids continue after every id SQLite handed out (the deleted session's message included).
    let next = pg
        .memory()
        .append(&a, &NewMessage::new("user", "on postgres"))
        .unwrap();
    assert_eq!(next, 9, "message ids 1..=8 were used on SQLite");
    pg.api_keys().create("admin", &new_key).unwrap();
    assert_eq!(
        pg.audit().unwrap().verify().unwrap().entries,
        audit_entries + 2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_memory_only_sqlite_file_moves_to_postgres() {
    // A file written by `MemoryStore::open` alone holds only the memory tables: the API-key and
    // audit backends create theirs (empty) before the copy reads them.
    let dir = std::env::temp_dir().join(format!("keel-pg-migrate-mem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keyring = Arc::new(Keyring::generate().unwrap());
    let db = dir.join("memory.db");
    let at = SessionRef::new("acme", "alice", "s1");
    {
        let memory =
            keel::MemoryStore::open(&db, Arc::clone(&keyring), Default::default()).unwrap();
        memory.append(&at, &NewMessage::new("user", "hi")).unwrap();
        memory
            .append(&at, &NewMessage::new("assistant", "hello"))
            .unwrap();
    }
    let server = test_server::server();
    let url = server.database_for(&dir);
    let report = copy_from_sqlite(&db, &url, Arc::clone(&keyring)).unwrap();
    assert_eq!(
        (
            report.sessions,
            report.messages,
            report.api_keys,
            report.audit_entries
        ),
        (1, 2, 0, 0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
