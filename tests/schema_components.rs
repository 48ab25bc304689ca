//! Each SQLite backend owns its schema: memory, API keys and the audit log each run their own
//! versioned migration sequence, recorded per component in `keel_schema` (store/migrations.rs).
//!
//! Databases written before that (one shared sequence in `PRAGMA user_version`) open with every
//! row intact:
//! - `tests/fixtures/schema_v6/keel.db`: memory, API keys and audit in one file, written by the
//!   code of commit acc2262 (user_version 6) with `tests/fixtures/schema_v6/generate.py`;
//! - `tests/fixtures/memory_v1.db` and `tests/fixtures/auth-v3.db` (both user_version 3), the
//!   older fixtures of tests/memory_fixture.rs and tests/auth_upgrade.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel::auth::{ApiKeys, ApiKeysOptions};
use keel::crypto::{AuditLog, AuditQuery, NewAuditEntry};
use keel::{
    AuthError, Error, Keyring, MemoryOptions, MemoryStore, SessionRef, Store, StoreOptions,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A scratch copy of a fixture database (the fixture itself is never written).
struct Copy {
    dir: PathBuf,
    db: PathBuf,
}

impl Copy {
    fn new(fixture: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "keel-schema-components-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("keel.db");
        std::fs::copy(fixtures().join(fixture), &db).unwrap();
        Self { dir, db }
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keyring(file: &str) -> Arc<Keyring> {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    Arc::new(Keyring::parse(text.trim()).unwrap())
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn versions(store: &Store) -> Vec<(String, i64)> {
    store.schema_versions().unwrap()
}

fn v(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

const LATEST: &[(&str, i64)] = &[("api_keys", 3), ("audit", 2), ("memory", 2)];

const ALICE: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "alice",
    session: "s1",
};
const BOB: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "bob",
    session: "s2",
};

#[test]
fn the_shared_v6_database_opens_with_every_row_and_gets_component_versions() {
    let copy = Copy::new("schema_v6/keel.db", "v6");
    assert_eq!(user_version(&copy.db), 6);
    let keyring = keyring("schema_v6/keel.keyring");
    let store = Store::open(&copy.db, StoreOptions::default()).unwrap();
    assert!(
        versions(&store).is_empty(),
        "opening alone migrates nothing"
    );

    let memory =
        MemoryStore::on_store(store.clone(), keyring.clone(), MemoryOptions::default()).unwrap();
    assert_eq!(versions(&store), v(&[("memory", 2)]));
    let alice = memory.history(&ALICE, 10, 0).unwrap();
    let got: Vec<_> = alice
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str(), m.metadata.as_deref()))
        .collect();
    // Newest first.
    assert_eq!(
        got,
        [
            ("assistant", "hi alice", None),
            ("user", "hello from before", Some(r#"{"lang": "en"}"#)),
        ]
    );
    assert_eq!(
        memory.history(&BOB, 10, 0).unwrap()[0].content,
        "bob's only message"
    );

    let audit = Arc::new(AuditLog::new(store.clone(), keyring.clone()));
    let keys = ApiKeys::new(store.clone(), keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .try_with_audit(audit.clone())
        .unwrap();
    assert_eq!(versions(&store), v(LATEST));
    let plaintexts = std::fs::read_to_string(fixtures().join("schema_v6/keel.keys")).unwrap();
    for line in plaintexts.lines() {
        let (state, key) = line.split_once(' ').unwrap();
        match state {
            "valid" => {
                let id = keys.verify(key).unwrap();
                assert_eq!((id.tenant.as_str(), id.name.as_str()), ("acme", "kept"));
                assert_eq!(id.scopes, ["chat:write"]);
            }
            "revoked" => assert!(matches!(
                keys.verify(key),
                Err(Error::Auth(AuthError::Revoked))
            )),
            other => panic!("unknown fixture line {other}"),
        }
    }
    // The chain written before verifies, and grows.
    let before = audit.verify().unwrap().entries;
    assert!(before >= 4, "{before}");
    let deploy = audit
        .query(&AuditQuery {
            actor: Some("ops".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(deploy.len(), 1);
    assert_eq!(
        (
            deploy[0].entry.action.as_str(),
            deploy[0].entry.target.as_str()
        ),
        ("deploy", "v1")
    );
    audit
        .append(&NewAuditEntry {
            actor: "ops".into(),
            action: "deploy".into(),
            target: "v2".into(),
            outcome: "success".into(),
            request_id: None,
        })
        .unwrap();
    assert_eq!(audit.verify().unwrap().entries, before + 1);
    drop((memory, keys, audit, store));

    // Reopened: the recorded versions are used, nothing runs twice, user_version is untouched.
    let store = Store::open(&copy.db, StoreOptions::default()).unwrap();
    let memory =
        MemoryStore::on_store(store.clone(), keyring.clone(), MemoryOptions::default()).unwrap();
    assert_eq!(memory.history(&ALICE, 10, 0).unwrap().len(), 2);
    assert_eq!(versions(&store), v(LATEST));
    assert_eq!(user_version(&copy.db), 6);
}

#[test]
fn the_v1_memory_and_v3_auth_databases_adopt_their_component_versions() {
    let copy = Copy::new("memory_v1.db", "mem-v1");
    assert_eq!(user_version(&copy.db), 3);
    let store = Store::open(&copy.db, StoreOptions::default()).unwrap();
    let memory = MemoryStore::on_store(
        store.clone(),
        keyring("memory_v1.keyring"),
        MemoryOptions::default(),
    )
    .unwrap();
    // Memory's step 2 (integrity) ran on the adopted version 1; no other component's tables.
    assert_eq!(versions(&store), v(&[("memory", 2)]));
    assert!(!memory.sessions("acme", "alice", 10, 0).unwrap().is_empty());

    let copy = Copy::new("auth-v3.db", "auth-v3");
    assert_eq!(user_version(&copy.db), 3);
    let keyring = keyring("auth-v3.keyring");
    let store = Store::open(&copy.db, StoreOptions::default()).unwrap();
    let keys = ApiKeys::new(store.clone(), keyring.clone(), ApiKeysOptions::default()).unwrap();
    // api_keys adopted 1 (created by shared step 2) and ran 2 and 3; audit adopted 1 (step 3)
    // and ran 2; memory (shared step 1) adopted 1 and waits for a memory backend.
    assert_eq!(versions(&store), v(&[("api_keys", 3), ("audit", 2)]));
    let plaintexts = std::fs::read_to_string(fixtures().join("auth-v3.keys")).unwrap();
    let valid: Vec<_> = plaintexts
        .lines()
        .filter_map(|l| l.strip_prefix("valid "))
        .collect();
    assert!(!valid.is_empty());
    for key in valid {
        keys.verify(key).unwrap();
    }
    MemoryStore::on_store(store.clone(), keyring, MemoryOptions::default()).unwrap();
    assert_eq!(versions(&store), v(LATEST));
}

#[test]
fn a_memory_only_database_gets_only_the_memory_tables() {
    let dir = std::env::temp_dir().join(format!("keel-schema-memonly-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keel.db");
    let memory =
        MemoryStore::open(&db, Keyring::generate().unwrap(), MemoryOptions::default()).unwrap();
    assert_eq!(versions(memory.store()), v(&[("memory", 2)]));
    let tables: Vec<String> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let rows = st.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    };
    assert!(
        tables
            .iter()
            .all(|t| !t.starts_with("api_keys") && !t.starts_with("audit")),
        "{tables:?}"
    );
    drop(memory);
    let _ = std::fs::remove_dir_all(&dir);
}
