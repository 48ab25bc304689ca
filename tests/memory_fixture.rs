//! A database written by keel before clear columns were authenticated
//! (`tests/fixtures/memory_v1.db`, written by `examples/write_memory_fixture_v1.rs` at commit
//! b81ea01 with `tests/fixtures/memory_v1.keyring`) must keep working: read as legacy rows, then
//! upgraded by rotation, after which its clear columns are authenticated too.

use std::path::{Path, PathBuf};

use keel::{
    CryptoError, Error, Keyring, MemoryError, MemoryOptions, MemoryStore, NewMessage, SessionRef,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/memory_v1.db");
const KEYRING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/memory_v1.keyring"
);

const ALICE: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "alice",
    session: "s-alice-1",
};
const BOB: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "bob",
    session: "s-bob-1",
};
const CAROL: SessionRef<'static> = SessionRef {
    tenant: "globex",
    user: "carol",
    session: "s-carol-1",
};

struct Copy {
    dir: PathBuf,
    db: PathBuf,
}

impl Copy {
    /// The fixture copied to a fresh folder: tests never modify the committed file.
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keel-fixture-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("memory.db");
        std::fs::copy(FIXTURE, &db).unwrap();
        Self { dir, db }
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keyring() -> Keyring {
    // Parsed from its text: git does not keep the file's 0600 mode, which `from_file` requires.
    Keyring::parse(&std::fs::read_to_string(KEYRING).unwrap()).unwrap()
}

fn open(db: &Path) -> MemoryStore {
    MemoryStore::open(db, keyring(), MemoryOptions::default()).unwrap()
}

fn sql(db: &Path, statements: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(statements)
        .unwrap();
}

fn count(db: &Path, query: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(query, [], |r| r.get(0))
        .unwrap()
}

fn roles_and_contents(mem: &MemoryStore, at: &SessionRef<'_>) -> Vec<(String, String)> {
    mem.history(at, 100, 0)
        .unwrap()
        .into_iter()
        .rev()
        .map(|m| (m.role, m.content))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

#[test]
fn the_v1_fixture_is_read_as_it_was_written() {
    let copy = Copy::new("read");
    let mem = open(&copy.db);
    assert_eq!(
        roles_and_contents(&mem, &ALICE),
        pairs(&[
            ("system", "You are a helpful assistant."),
            ("user", "Hello, what is the weather?"),
            ("assistant", "Sunny, 21 degrees."),
            ("user", "Thanks!"),
        ])
    );
    let alice = mem.history(&ALICE, 100, 0).unwrap();
    assert_eq!(alice[2].metadata.as_deref(), Some(r#"{"channel":"voice"}"#));
    assert_eq!(alice[2].tokens, 7);
    assert_eq!(alice[3].created_at_ms, 1_767_225_600_000);
    assert_eq!(
        roles_and_contents(&mem, &BOB),
        pairs(&[("user", "Bob's first message"), ("assistant", "Hi Bob")])
    );
    assert_eq!(
        mem.window(&CAROL, 100).unwrap()[0].content,
        "Carol at globex"
    );
    assert_eq!(
        mem.history(&ALICE, 1, 2).unwrap()[0].content,
        "Hello, what is the weather?"
    );
    let sessions = mem.sessions("acme", "alice", 10, 0).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].message_count, 4);
    assert!(mem.export(&ALICE).unwrap().contains("Sunny"));
    // Appending to a legacy session works, and tags it from then on.
    mem.append(&ALICE, &NewMessage::new("assistant", "You're welcome."))
        .unwrap();
    assert_eq!(mem.history(&ALICE, 100, 0).unwrap().len(), 5);
    assert_eq!(
        count(
            &copy.db,
            "SELECT count(*) FROM memory_sessions WHERE mac IS NOT NULL"
        ),
        1
    );
    drop(mem);
    // Opened again: the key check value written at the first open matches.
    assert_eq!(open(&copy.db).history(&BOB, 10, 0).unwrap().len(), 2);
}

#[test]
fn a_wrong_keyring_is_refused_at_the_first_open_of_a_v1_database() {
    let copy = Copy::new("wrongkey");
    let err = MemoryStore::open(
        &copy.db,
        Keyring::generate().unwrap(),
        MemoryOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Crypto(CryptoError::KeyMismatch { key_id: 1 })),
        "{err:?}"
    );
    // Nothing was recorded for the wrong key: the right keyring still opens it.
    assert_eq!(open(&copy.db).history(&BOB, 10, 0).unwrap().len(), 2);
}

#[test]
fn legacy_rows_have_unauthenticated_clear_columns_until_rotation_upgrades_them() {
    let copy = Copy::new("rotate");
    let mem = open(&copy.db);
    // Documented limit of legacy rows: a clear column edit goes unnoticed...
    sql(
        &copy.db,
        "UPDATE memory_messages SET role = 'system' WHERE id = 2",
    );
    assert_eq!(mem.history(&ALICE, 100, 0).unwrap()[2].role, "system");
    sql(
        &copy.db,
        "UPDATE memory_messages SET role = 'user' WHERE id = 2",
    );
    // ... until rotation upgrades every row and tags every session (no new key needed).
    let mut rotated = 0;
    loop {
        let n = mem.rotate(2).unwrap();
        if n == 0 {
            break;
        }
        rotated += n;
    }
    assert_eq!(rotated, 7);
    assert_eq!(
        count(
            &copy.db,
            "SELECT count(*) FROM memory_messages WHERE substr(content, 1, 1) != x'03'
             OR prev_id IS NULL"
        ),
        0
    );
    assert_eq!(
        count(
            &copy.db,
            "SELECT count(*) FROM memory_sessions WHERE mac IS NULL"
        ),
        0
    );
    assert_eq!(
        roles_and_contents(&mem, &ALICE)[1],
        (
            "user".to_string(),
            "Hello, what is the weather?".to_string()
        )
    );
    assert_eq!(
        mem.sessions("acme", "bob", 10, 0).unwrap()[0].message_count,
        2
    );
    // Now the same edit, a deleted message and a moved session are all refused.
    sql(
        &copy.db,
        "UPDATE memory_messages SET role = 'system' WHERE id = 2",
    );
    let err = mem.history(&ALICE, 100, 0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Memory(MemoryError::Tampered {
                message_id: Some(2),
                ..
            })
        ),
        "{err:?}"
    );
    sql(&copy.db, "DELETE FROM memory_messages WHERE id = 7");
    assert!(matches!(
        mem.window(&BOB, 100),
        Err(Error::Memory(MemoryError::Tampered { .. }))
    ));
    sql(
        &copy.db,
        "UPDATE memory_sessions SET user_id = 'mallory' WHERE session_key = 's-carol-1'",
    );
    assert!(matches!(
        mem.history(&SessionRef::new("globex", "mallory", "s-carol-1"), 10, 0),
        Err(Error::Memory(MemoryError::Tampered { .. }))
    ));
}

#[test]
fn rotation_to_a_new_key_upgrades_the_v1_fixture_and_retires_its_key() {
    use base64::Engine as _;
    let copy = Copy::new("newkey");
    let mem = open(&copy.db);
    let key = base64::engine::general_purpose::STANDARD
        .decode(Keyring::generate_key().unwrap().as_bytes())
        .unwrap();
    mem.set_keyring(mem.keyring().with_key(2, &key).unwrap());
    while mem.rotate(3).unwrap() > 0 {}
    assert_eq!(mem.key_usage().unwrap(), [(2, 7)]);
    mem.retire_key(1).unwrap();
    assert_eq!(mem.keyring().key_ids(), [2]);
    assert_eq!(roles_and_contents(&mem, &BOB)[1].1, "Hi Bob");
    let next = mem.keyring();
    drop(mem);
    // The retired key's check value is gone with it: the new keyring alone opens the file.
    let reopened = MemoryStore::open(&copy.db, next, MemoryOptions::default()).unwrap();
    assert_eq!(reopened.history(&ALICE, 10, 0).unwrap().len(), 4);
}
