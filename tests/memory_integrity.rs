//! Someone who can write the database file but has no keyring edits it with plain SQL: every
//! edit of a clear column, every moved session and every deleted message must make the read fail
//! with a typed integrity error (`MemoryError::Tampered`), never return a tampered row as good.

use std::path::{Path, PathBuf};

use keel::{Error, Keyring, MemoryError, MemoryOptions, MemoryStore, NewMessage, SessionRef};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("keel-integrity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const A: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "alice",
    session: "s1",
};

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    mem: MemoryStore,
    /// Message ids, oldest first: user, assistant, user, assistant, user.
    ids: Vec<i64>,
}

fn fixture(name: &str) -> Fixture {
    let dir = TempDir::new(name);
    let path = dir.0.join("memory.db");
    let mem = MemoryStore::open(
        &path,
        Keyring::generate().unwrap(),
        MemoryOptions::default(),
    )
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let mut msg = NewMessage::new(role, format!("message {i}")).with_tokens(10);
        if i == 1 {
            msg = msg.with_metadata(r#"{"tool":"weather"}"#);
        }
        ids.push(mem.append(&A, &msg).unwrap());
    }
    // Another session of the same tenant, another user.
    mem.append(
        &SessionRef::new("acme", "bob", "s2"),
        &NewMessage::new("user", "bob"),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        path,
        mem,
        ids,
    }
}

fn random_key() -> Vec<u8> {
    use base64::Engine as _;
    let text = Keyring::generate_key().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .unwrap()
}

/// Edits the file as an attacker would: a separate SQLite connection, no keyring.
fn sql(path: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(statements).unwrap();
}

fn tampered(err: &Error) -> Option<Option<i64>> {
    match err {
        Error::Memory(MemoryError::Tampered { message_id, .. }) => Some(*message_id),
        _ => None,
    }
}

/// Every read of the session fails with `Tampered` (naming `message` in `history`, when given).
/// An append to it fails too when the session record itself was edited; when a message was,
/// the append succeeds but blesses nothing: the reads still fail afterwards.
fn assert_every_read_fails(f: &Fixture, at: &SessionRef<'_>, message: Option<i64>) {
    let check = |f: &Fixture, message: Option<i64>| {
        let reads: [(&str, keel::Result<usize>); 3] = [
            ("history", f.mem.history(at, 50, 0).map(|v| v.len())),
            ("window", f.mem.window(at, 1_000).map(|v| v.len())),
            ("export", f.mem.export(at).map(|v| v.len())),
        ];
        for (what, got) in reads {
            let err = match got {
                Ok(n) => panic!("{what} returned {n} rows from a tampered session"),
                Err(e) => e,
            };
            let id = tampered(&err).unwrap_or_else(|| panic!("{what}: {err:?}"));
            let text = err.to_string();
            assert!(text.contains("integrity check"), "{what}: {text}");
            if let (Some(want), "history") = (message, what) {
                assert_eq!(id, Some(want), "{what}: {text}");
            }
        }
    };
    check(f, message);
    let appended = f.mem.append(at, &NewMessage::new("user", "more"));
    match message {
        None => assert!(tampered(&appended.unwrap_err()).is_some()),
        Some(_) => {
            if let Err(err) = appended {
                assert!(tampered(&err).is_some(), "{err:?}");
            }
        }
    }
    check(f, None);
}

#[test]
fn an_untouched_database_reads_back_and_reads_are_unchanged() {
    let f = fixture("untouched");
    let all = f.mem.history(&A, 50, 0).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(f.mem.history(&A, 2, 1).unwrap().len(), 2);
    assert_eq!(f.mem.window(&A, 25).unwrap().len(), 2);
    assert_eq!(f.mem.sessions("acme", "alice", 10, 0).unwrap().len(), 1);
    assert!(f.mem.export(&A).unwrap().contains("message 0"));
}

#[test]
fn a_role_changed_from_user_to_system_is_refused() {
    let f = fixture("role");
    let id = f.ids[2];
    sql(
        &f.path,
        &format!("UPDATE memory_messages SET role = 'system' WHERE id = {id}"),
    );
    assert_every_read_fails(&f, &A, Some(id));
}

#[test]
fn zeroed_tokens_are_refused() {
    let f = fixture("tokens");
    let id = f.ids[0];
    sql(
        &f.path,
        &format!("UPDATE memory_messages SET tokens = 0 WHERE id = {id}"),
    );
    assert_every_read_fails(&f, &A, Some(id));
}

#[test]
fn raised_tokens_cannot_shorten_a_window_silently() {
    let f = fixture("tokens-up");
    // The newest message now "costs" more than the budget: the window would be empty.
    let id = f.ids[4];
    sql(
        &f.path,
        &format!("UPDATE memory_messages SET tokens = 100000 WHERE id = {id}"),
    );
    let err = f.mem.window(&A, 30).unwrap_err();
    assert_eq!(tampered(&err), Some(Some(id)), "{err:?}");
}

#[test]
fn an_edited_created_at_is_refused() {
    let f = fixture("created");
    let id = f.ids[1];
    sql(
        &f.path,
        &format!("UPDATE memory_messages SET created_at = created_at - 86400000 WHERE id = {id}"),
    );
    assert_every_read_fails(&f, &A, Some(id));
}

#[test]
fn removed_metadata_is_refused() {
    let f = fixture("metadata");
    let id = f.ids[1];
    sql(
        &f.path,
        &format!("UPDATE memory_messages SET metadata = NULL WHERE id = {id}"),
    );
    assert_every_read_fails(&f, &A, Some(id));
}

#[test]
fn a_session_moved_to_another_user_is_refused() {
    let f = fixture("user");
    sql(
        &f.path,
        "UPDATE memory_sessions SET user_id = 'mallory' WHERE session_key = 's1'",
    );
    let mallory = SessionRef::new("acme", "mallory", "s1");
    assert_every_read_fails(&f, &mallory, None);
    let err = f.mem.sessions("acme", "mallory", 10, 0).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
    // Swapping the owners of two sessions is refused as well.
    sql(
        &f.path,
        "UPDATE memory_sessions SET user_id = 'alice' WHERE session_key = 's2';
         UPDATE memory_sessions SET user_id = 'bob' WHERE session_key = 's1';",
    );
    let err = f
        .mem
        .history(&SessionRef::new("acme", "alice", "s2"), 10, 0)
        .unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn a_session_moved_to_another_tenant_is_refused() {
    let f = fixture("tenant");
    sql(
        &f.path,
        "UPDATE memory_sessions SET tenant_id = 'globex' WHERE session_key = 's1';
         UPDATE memory_messages SET tenant_id = 'globex' WHERE tenant_id = 'acme';",
    );
    let moved = SessionRef::new("globex", "alice", "s1");
    let err = f.mem.history(&moved, 10, 0).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
    let err = f.mem.window(&moved, 1_000).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn a_session_key_renamed_is_refused() {
    let f = fixture("rename");
    sql(
        &f.path,
        "UPDATE memory_sessions SET session_key = 's9' WHERE session_key = 's1'",
    );
    assert_every_read_fails(&f, &SessionRef::new("acme", "alice", "s9"), None);
}

#[test]
fn a_message_deleted_in_the_middle_is_refused() {
    let f = fixture("delete-middle");
    let gone = f.ids[2];
    sql(
        &f.path,
        &format!("DELETE FROM memory_messages WHERE id = {gone}"),
    );
    // The message after the gap names it.
    assert_every_read_fails(&f, &A, Some(f.ids[3]));
    let err = f.mem.history(&A, 50, 0).unwrap_err();
    assert!(err.to_string().contains(&format!("id {gone}")), "{err}");
    // A page far from the gap: the count gives it away.
    let err = f.mem.history(&A, 1, 4).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
    let err = f.mem.sessions("acme", "alice", 10, 0).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn the_newest_message_deleted_is_refused() {
    let f = fixture("delete-newest");
    let newest = f.ids[4];
    sql(
        &f.path,
        &format!("DELETE FROM memory_messages WHERE id = {newest}"),
    );
    // Even a window too small for any message notices.
    let err = f.mem.window(&A, 5).unwrap_err();
    assert_eq!(tampered(&err), Some(Some(newest)), "{err:?}");
    assert_every_read_fails(&f, &A, Some(newest));
    // Rewriting the session row to match does not help: its tag covers the count and the id.
    sql(
        &f.path,
        &format!(
            "UPDATE memory_sessions SET last_message_id = {}, message_count = 4
             WHERE session_key = 's1'",
            f.ids[3]
        ),
    );
    assert_every_read_fails(&f, &A, None);
}

#[test]
fn the_oldest_message_deleted_is_refused() {
    let f = fixture("delete-oldest");
    sql(
        &f.path,
        &format!("DELETE FROM memory_messages WHERE id = {}", f.ids[0]),
    );
    let err = f.mem.history(&A, 50, 0).unwrap_err();
    assert_eq!(tampered(&err), Some(Some(f.ids[1])), "{err:?}");
    let err = f.mem.window(&A, 1_000).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn a_removed_session_tag_is_refused() {
    let f = fixture("untag");
    sql(
        &f.path,
        "UPDATE memory_sessions SET mac = NULL, message_count = NULL, last_message_id = NULL
         WHERE session_key = 's1'",
    );
    assert_every_read_fails(&f, &A, None);
    let err = f.mem.sessions("acme", "alice", 10, 0).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn messages_swapped_between_rows_are_refused() {
    let f = fixture("swap");
    // Swap the clear columns of two messages (content stays): roles and tokens move.
    sql(
        &f.path,
        &format!(
            "UPDATE memory_messages SET role = 'user' WHERE id = {};
             UPDATE memory_messages SET role = 'assistant' WHERE id = {};",
            f.ids[1], f.ids[2]
        ),
    );
    let err = f.mem.history(&A, 50, 0).unwrap_err();
    assert!(tampered(&err).is_some(), "{err:?}");
}

#[test]
fn rotation_refuses_tampered_rows_instead_of_blessing_them() {
    let f = fixture("rotate");
    let next = f.mem.keyring().with_key(2, &random_key()).unwrap();
    f.mem.set_keyring(next);
    sql(
        &f.path,
        &format!(
            "UPDATE memory_messages SET role = 'system' WHERE id = {}",
            f.ids[0]
        ),
    );
    let err = f.mem.rotate(100).unwrap_err();
    assert_eq!(tampered(&err), Some(Some(f.ids[0])), "{err:?}");
}

#[test]
fn concurrent_appends_and_reads_never_look_like_tampering() {
    let f = fixture("concurrent");
    let mem = &f.mem;
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..40 {
                    mem.append(&A, &NewMessage::new("user", format!("{t}-{i}")))
                        .unwrap();
                    mem.history(&A, 5, 0).unwrap();
                    mem.history(&A, 3, 2).unwrap();
                    mem.window(&A, 30).unwrap();
                    mem.sessions("acme", "alice", 10, 0).unwrap();
                }
            });
        }
    });
    assert_eq!(f.mem.history(&A, 1000, 0).unwrap().len(), 5 + 160);
}
