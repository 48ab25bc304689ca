use std::time::Duration;

use super::test_support::TempDir;
use super::*;

fn temp_db(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.path().join("keel.db");
    (dir, path)
}

fn pragma<T: rusqlite::types::FromSql>(conn: &Connection, name: &str) -> T {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn open_sets_wal_and_every_pooled_connection_is_configured() {
    let (_dir, path) = temp_db("pragmas");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    // Several connections at once, so more than one pooled connection is checked.
    let a = store.conn().unwrap();
    let b = store.conn().unwrap();
    for conn in [&a, &b] {
        assert_eq!(pragma::<String>(conn, "journal_mode"), "wal");
        assert_eq!(pragma::<i64>(conn, "foreign_keys"), 1);
        assert_eq!(pragma::<i64>(conn, "secure_delete"), 1);
        assert_eq!(pragma::<i64>(conn, "busy_timeout"), 5000);
        assert_eq!(pragma::<i64>(conn, "synchronous"), 1, "NORMAL");
    }
}

#[test]
fn synchronous_full_is_applied() {
    let (_dir, path) = temp_db("full");
    let options = StoreOptions {
        synchronous: Synchronous::Full,
        ..StoreOptions::default()
    };
    let store = Store::open(&path, options).unwrap();
    assert_eq!(pragma::<i64>(&store.conn().unwrap(), "synchronous"), 2);
}

/// A stand-in for a backend's schema, for the store's own tests.
static SESSIONS: Schema = Schema {
    component: "test_sessions",
    steps: &["CREATE TABLE memory_sessions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT    NOT NULL,
        user_id     TEXT    NOT NULL,
        session_key TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        UNIQUE (tenant_id, session_key)
    )"],
    legacy: |_| 0,
};

/// A store with the stand-in table.
fn open_with_table(path: &Path) -> Store {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    store.ensure_schemas(&[&SESSIONS]).unwrap();
    store
}

#[test]
fn a_schema_applies_once_and_reopen_is_idempotent() {
    let (_dir, path) = temp_db("migrate");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert!(store.schema_versions().unwrap().is_empty());
    drop(open_with_table(&path));
    let store = open_with_table(&path);
    assert_eq!(
        store.schema_versions().unwrap(),
        [("test_sessions".to_owned(), 1)]
    );
    let conn = store.conn().unwrap();
    // The shared sequence of earlier keel is not used any more.
    assert_eq!(pragma::<i64>(&conn, "user_version"), 0);
}

#[test]
fn a_zero_pool_size_is_rejected() {
    let (_dir, path) = temp_db("zero");
    let options = StoreOptions {
        pool_size: 0,
        ..StoreOptions::default()
    };
    assert!(matches!(
        Store::open(&path, options),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let (_dir, path) = temp_db("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Store(StoreError::Open(_))), "{err:?}");
}

#[test]
fn write_rolls_back_when_the_closure_fails() {
    let (_dir, path) = temp_db("rollback");
    let store = open_with_table(&path);
    let err = store
        .write(|tx| {
            tx.execute(
                "INSERT INTO memory_sessions (tenant_id, user_id, session_key, created_at, updated_at)
                 VALUES ('t', 'u', 's', 0, 0)",
                [],
            )
            .map_err(sqlite_err)?;
            Err::<(), _>(Error::InvalidArgument("stop".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    let n: i64 = store
        .read(|c| {
            c.query_row("SELECT count(*) FROM memory_sessions", [], |r| r.get(0))
                .map_err(sqlite_err)
        })
        .unwrap();
    assert_eq!(n, 0);
}

fn short_waits() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_millis(20),
        busy_deadline: Duration::from_millis(150),
        ..StoreOptions::default()
    }
}

#[test]
fn a_write_waits_past_busy_timeout_for_a_lock_that_is_released() {
    let (_dir, path) = temp_db("retry");
    let store = Store::open(&path, short_waits()).unwrap();
    // Another "process": a separate connection holding the write lock for longer than
    // busy_timeout but shorter than busy_deadline.
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(60));
        holder.execute_batch("COMMIT").unwrap();
    });
    let attempts = std::cell::Cell::new(0);
    store
        .write(|_tx| {
            attempts.set(attempts.get() + 1);
            Ok(())
        })
        .unwrap();
    release.join().unwrap();
    assert_eq!(
        attempts.get(),
        1,
        "the closure only runs once the lock is ours"
    );
}

#[test]
fn a_lock_held_past_the_deadline_is_a_busy_error() {
    let (_dir, path) = temp_db("busy");
    let store = Store::open(&path, short_waits()).unwrap();
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.write(|_tx| Ok(())).unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::Busy { waited_ms }) if waited_ms >= 150),
        "{err:?}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_forked_child_gets_a_new_pool_and_can_write() {
    let (_dir, path) = temp_db("fork");
    let store = open_with_table(&path);
    let insert = |s: &Store, key: &str| {
        s.write(|tx| {
            tx.execute(
                "INSERT INTO memory_sessions (tenant_id, user_id, session_key, created_at, updated_at)
                 VALUES ('t', 'u', ?1, 0, 0)",
                [key],
            )
            .map_err(sqlite_err)
        })
    };
    insert(&store, "parent").unwrap();
    let parent_pid = std::process::id();
    // SAFETY: the child only runs Rust code of this test and leaves with `_exit`, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::process::id() != parent_pid
            && insert(&store, "child").is_ok()
            && Arc::strong_count(&store.inner.state.read().unwrap()) >= 1;
        // SAFETY: terminates the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    insert(&store, "parent-again").unwrap();
    let n: i64 = store
        .read(|c| {
            c.query_row("SELECT count(*) FROM memory_sessions", [], |r| r.get(0))
                .map_err(sqlite_err)
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(store.inner.state.read().unwrap().pid, parent_pid);
}
