use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualWallClock;
use crate::store::test_support::TempDir;

fn keys(byte: u8) -> Keyring {
    Keyring::new(1, &crate::crypto::test_key(byte)).unwrap()
}

/// Builds the backend kept in `dir`: a fresh one, or (called again with the same `dir`) the
/// same data reopened.
type Make<B> = fn(&Path) -> B;

struct Fixture<B: MemoryBackend> {
    dir: TempDir,
    path: PathBuf,
    mem: MemoryStore<B>,
    clock: Arc<ManualWallClock>,
    make: Make<B>,
}

impl<B: MemoryBackend> Fixture<B> {
    /// The same data, through a new backend and store opened with `keyring`.
    fn reopen(&self, keyring: Keyring) -> Result<MemoryStore<B>> {
        MemoryStore::with_backend(
            (self.make)(self.dir.path()),
            keyring,
            MemoryOptions::default(),
        )
    }
}

fn fixture<B: MemoryBackend>(make: Make<B>, name: &str) -> Fixture<B> {
    let dir = TempDir::new(name);
    let path = dir.path().join("memory.db");
    let clock = Arc::new(ManualWallClock::at_ms(1_700_000_000_000));
    let mem = MemoryStore::with_backend(make(dir.path()), keys(7), MemoryOptions::default())
        .unwrap()
        .with_clock(clock.clone());
    Fixture {
        dir,
        path,
        mem,
        clock,
        make,
    }
}

fn sqlite(dir: &Path) -> SqliteMemory {
    SqliteMemory::open(dir.join("memory.db"), StoreOptions::default()).unwrap()
}

/// Instantiates every behavioural test of the suite below for one backend factory: a new
/// backend (PostgreSQL, Redis) adds one `memory_suite!` line.
macro_rules! memory_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            memory_suite!(@tests $make;
                history_is_newest_first_with_limit_and_offset,
                a_message_round_trips_every_field,
                the_default_counter_estimates_and_a_custom_one_is_used,
                window_is_the_newest_suffix_that_fits_oldest_first,
                append_many_is_all_or_nothing,
                bad_inputs_are_typed_errors_and_store_nothing,
                unknown_sessions_are_session_not_found,
                tenants_and_users_never_see_each_other,
                the_wrong_keyring_is_a_clear_error,
                sessions_are_listed_most_recent_first,
                export_is_a_json_document_of_the_session,
                delete_session_and_purge_idle,
                purge_idle_works_in_batches,
                key_rotation_reencrypts_in_resumable_batches_then_retires_the_key,
                memory_store_is_send_and_sync_and_threads_share_it,
                a_failing_append_does_not_fail_the_others_of_its_batch,
                appends_to_one_session_in_one_batch_keep_their_order,
                many_threads_appending_to_one_session_keep_each_threads_order,
            );
        }
    };
    (@tests $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test($make)
            }
        )*
    };
}

memory_suite!(sqlite_backend, super::sqlite);

/// PostgreSQL: one test server per run, a database per test directory.
#[cfg(feature = "postgres")]
fn postgres(dir: &Path) -> backend::PgMemory {
    let url = crate::store::postgres::test_server::server().database_for(dir);
    backend::PgMemory::open(&url, crate::store::PgOptions::default()).unwrap()
}

#[cfg(feature = "postgres")]
memory_suite!(postgres_backend, super::postgres);

const A: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "alice",
    session: "s1",
};

fn contents(msgs: &[Message]) -> Vec<&str> {
    msgs.iter().map(|m| m.content.as_str()).collect()
}

fn append_n<B: MemoryBackend>(mem: &MemoryStore<B>, at: &SessionRef<'_>, n: usize) {
    let msgs: Vec<_> = (0..n)
        .map(|i| NewMessage::new("user", format!("m{i}")))
        .collect();
    mem.append_many(at, &msgs).unwrap();
}

fn history_is_newest_first_with_limit_and_offset<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "history");
    append_n(&f.mem, &A, 5);
    assert_eq!(
        contents(&f.mem.history(&A, 10, 0).unwrap()),
        ["m4", "m3", "m2", "m1", "m0"]
    );
    assert_eq!(contents(&f.mem.history(&A, 2, 1).unwrap()), ["m3", "m2"]);
    assert!(f.mem.history(&A, 10, 5).unwrap().is_empty());
}

fn a_message_round_trips_every_field<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "fields");
    let id = f
        .mem
        .append(
            &A,
            &NewMessage::new("assistant", "héllo ✓")
                .with_metadata(r#"{"lang":"fr","n":[1,2]}"#)
                .with_tokens(42),
        )
        .unwrap();
    let got = &f.mem.history(&A, 1, 0).unwrap()[0];
    assert_eq!(got.id, id);
    assert_eq!(got.role, "assistant");
    assert_eq!(got.content, "héllo ✓");
    assert_eq!(got.metadata.as_deref(), Some(r#"{"lang":"fr","n":[1,2]}"#));
    assert_eq!(got.tokens, 42);
    assert_eq!(got.created_at_ms, 1_700_000_000_000);
}

fn the_default_counter_estimates_and_a_custom_one_is_used<B: MemoryBackend>(make: Make<B>) {
    #[derive(Debug)]
    struct Words;
    impl TokenCounter for Words {
        fn count(&self, text: &str) -> u32 {
            text.split_whitespace().count() as u32
        }
    }
    let f = fixture(make, "tokens");
    f.mem
        .append(&A, &NewMessage::new("user", "abcdefghi"))
        .unwrap();
    assert_eq!(f.mem.history(&A, 1, 0).unwrap()[0].tokens, 3);
    let mem = f.mem.with_token_counter(Arc::new(Words));
    mem.append(&A, &NewMessage::new("user", "one two three four"))
        .unwrap();
    assert_eq!(mem.history(&A, 1, 0).unwrap()[0].tokens, 4);
}

fn window_is_the_newest_suffix_that_fits_oldest_first<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "window");
    let msgs: Vec<_> = [5, 3, 4, 2]
        .iter()
        .enumerate()
        .map(|(i, t)| NewMessage::new("user", format!("w{i}")).with_tokens(*t))
        .collect();
    f.mem.append_many(&A, &msgs).unwrap();
    let cases: [(u64, &[&str]); 5] = [
        (0, &[]),
        (2, &["w3"]),
        (5, &["w3"]),
        (9, &["w1", "w2", "w3"]),
        (100, &["w0", "w1", "w2", "w3"]),
    ];
    for (budget, expected) in cases {
        assert_eq!(
            contents(&f.mem.window(&A, budget).unwrap()),
            expected,
            "budget {budget}"
        );
    }
}

fn append_many_is_all_or_nothing<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "atomic");
    append_n(&f.mem, &A, 1);
    let too_big = "x".repeat(MemoryOptions::default().max_content_bytes + 1);
    let batch = [
        NewMessage::new("user", "ok"),
        NewMessage::new("user", too_big),
    ];
    let err = f.mem.append_many(&A, &batch).unwrap_err();
    assert!(
        matches!(err, Error::Memory(MemoryError::ContentTooLarge { max, .. }) if max == 1 << 20),
        "{err:?}"
    );
    assert_eq!(f.mem.history(&A, 10, 0).unwrap().len(), 1);
}

fn bad_inputs_are_typed_errors_and_store_nothing<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "inputs");
    let bad_meta = NewMessage::new("user", "x").with_metadata("{not json");
    assert!(matches!(
        f.mem.append(&A, &bad_meta),
        Err(Error::Memory(MemoryError::InvalidMetadata(_)))
    ));
    let huge_meta =
        NewMessage::new("user", "x").with_metadata(format!("\"{}\"", "m".repeat(70_000)));
    assert!(matches!(
        f.mem.append(&A, &huge_meta),
        Err(Error::Memory(MemoryError::InvalidMetadata(_)))
    ));
    for bad_role in ["", &"r".repeat(65)] {
        assert!(matches!(
            f.mem.append(&A, &NewMessage::new(bad_role, "x")),
            Err(Error::InvalidArgument(_))
        ));
    }
    let long = "t".repeat(257);
    for at in [
        SessionRef::new("", "u", "s"),
        SessionRef::new("t", "", "s"),
        SessionRef::new("t", "u", ""),
        SessionRef::new(&long, "u", "s"),
    ] {
        assert!(matches!(
            f.mem.append(&at, &NewMessage::new("user", "x")),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(f.mem.sessions("acme", "alice", 10, 0).unwrap().is_empty());
}

fn unknown_sessions_are_session_not_found<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "unknown");
    let missing = SessionRef::new("acme", "alice", "nope");
    let not_found = |r: Result<()>| matches!(r, Err(Error::Memory(MemoryError::SessionNotFound)));
    assert!(not_found(f.mem.history(&missing, 1, 0).map(drop)));
    assert!(not_found(f.mem.window(&missing, 10).map(drop)));
    assert!(not_found(f.mem.export(&missing).map(drop)));
    assert!(not_found(f.mem.delete_session(&missing)));
}

fn tenants_and_users_never_see_each_other<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "isolation");
    let other_tenant = SessionRef::new("globex", "alice", "s1");
    let other_user = SessionRef::new("acme", "mallory", "s1");
    f.mem
        .append(&A, &NewMessage::new("user", "acme secret"))
        .unwrap();
    f.mem
        .append(&other_tenant, &NewMessage::new("user", "globex secret"))
        .unwrap();
    // Same user and session names in another tenant: a separate session.
    assert_eq!(
        contents(&f.mem.history(&other_tenant, 10, 0).unwrap()),
        ["globex secret"]
    );
    assert_eq!(
        contents(&f.mem.history(&A, 10, 0).unwrap()),
        ["acme secret"]
    );
    // Another user of the same tenant cannot read, write, export or delete alice's session.
    let not_found = |r: Result<()>| matches!(r, Err(Error::Memory(MemoryError::SessionNotFound)));
    assert!(not_found(f.mem.history(&other_user, 10, 0).map(drop)));
    assert!(not_found(
        f.mem
            .append(&other_user, &NewMessage::new("user", "x"))
            .map(drop)
    ));
    assert!(not_found(f.mem.export(&other_user).map(drop)));
    assert!(not_found(f.mem.delete_session(&other_user)));
    assert!(f.mem.sessions("acme", "mallory", 10, 0).unwrap().is_empty());
    assert_eq!(f.mem.delete_user("acme", "mallory").unwrap(), 0);
    assert_eq!(f.mem.sessions("globex", "alice", 10, 0).unwrap().len(), 1);
    // Deleting alice in acme leaves globex untouched.
    assert_eq!(f.mem.delete_user("acme", "alice").unwrap(), 1);
    assert_eq!(f.mem.history(&other_tenant, 10, 0).unwrap().len(), 1);
}

#[test]
fn a_ciphertext_moved_to_another_row_or_tenant_fails_to_decrypt() {
    let f = fixture(sqlite, "moved");
    let b = SessionRef::new("globex", "bob", "s9");
    f.mem.append(&A, &NewMessage::new("user", "first")).unwrap();
    f.mem
        .append(&A, &NewMessage::new("user", "second"))
        .unwrap();
    f.mem.append(&b, &NewMessage::new("user", "bob's")).unwrap();
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    // Copy message 1's ciphertext over message 2 (same session), then bob's over message 1.
    conn.execute_batch(
        "UPDATE memory_messages SET content = (SELECT content FROM memory_messages WHERE id = 1)
         WHERE id = 2;
         UPDATE memory_messages SET content = (SELECT content FROM memory_messages WHERE id = 3)
         WHERE id = 1;",
    )
    .unwrap();
    let err = f.mem.history(&A, 10, 0).unwrap_err();
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
    // Moving a whole row into another tenant's session fails as well.
    conn.execute_batch(
        "UPDATE memory_messages SET session_id = (SELECT session_id FROM memory_messages WHERE id = 1),
         tenant_id = 'acme' WHERE id = 3;",
    )
    .unwrap();
    let err = f.mem.window(&A, 1_000).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Memory(MemoryError::Tampered {
                message_id: Some(3),
                ..
            })
        ),
        "{err:?}"
    );
}

fn the_wrong_keyring_is_a_clear_error<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "wrongkey");
    f.mem.append(&A, &NewMessage::new("user", "x")).unwrap();
    f.mem.set_keyring(keys(8));
    assert!(matches!(
        f.mem.history(&A, 1, 0),
        Err(Error::Crypto(CryptoError::KeyMismatch { key_id: 1 }))
    ));
    // Nor does it write anything under the wrong key, not even to a new session.
    let fresh = SessionRef::new("acme", "alice", "fresh");
    assert!(matches!(
        f.mem.append(&fresh, &NewMessage::new("user", "x")),
        Err(Error::Crypto(CryptoError::KeyMismatch { key_id: 1 }))
    ));
    f.mem
        .set_keyring(Keyring::new(2, &crate::crypto::test_key(7)).unwrap());
    assert!(matches!(
        f.mem.history(&A, 1, 0),
        Err(Error::Crypto(CryptoError::UnknownKey { key_id: 1 }))
    ));
    // Opening with either keyring fails at once, naming the key id, not at the first read.
    let err = f.reopen(keys(8)).unwrap_err();
    assert!(
        matches!(err, Error::Crypto(CryptoError::KeyMismatch { key_id: 1 })),
        "{err:?}"
    );
    assert!(err.to_string().contains("key 1"), "{err}");
    let other_id = Keyring::new(2, &crate::crypto::test_key(7)).unwrap();
    let err = f.reopen(other_id).unwrap_err();
    assert!(
        matches!(err, Error::Crypto(CryptoError::UnknownKey { key_id: 1 })),
        "{err:?}"
    );
    f.reopen(keys(7)).unwrap();
}

fn sessions_are_listed_most_recent_first<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "sessions");
    for (name, n) in [("a", 1), ("b", 3), ("c", 2)] {
        append_n(&f.mem, &SessionRef::new("acme", "alice", name), n);
        f.clock.advance(Duration::from_secs(1));
    }
    append_n(&f.mem, &SessionRef::new("acme", "bob", "z"), 1);
    let list = f.mem.sessions("acme", "alice", 10, 0).unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|s| (s.session.as_str(), s.message_count))
        .collect();
    assert_eq!(got, [("c", 2), ("b", 3), ("a", 1)]);
    assert_eq!(list[0].updated_at_ms, 1_700_000_002_000);
    assert_eq!(
        f.mem.sessions("acme", "alice", 1, 1).unwrap()[0].session,
        "b"
    );
}

fn export_is_a_json_document_of_the_session<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "export");
    f.mem
        .append(
            &A,
            &NewMessage::new("user", "hi").with_metadata(r#"{"k":1}"#),
        )
        .unwrap();
    f.mem
        .append(&A, &NewMessage::new("assistant", "hello"))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&f.mem.export(&A).unwrap()).unwrap();
    assert_eq!(doc["tenant"], "acme");
    assert_eq!(doc["session"], "s1");
    assert_eq!(doc["messages"][0]["content"], "hi");
    assert_eq!(doc["messages"][0]["metadata"]["k"], 1);
    assert_eq!(doc["messages"][1]["role"], "assistant");
    assert!(doc["messages"][1]["metadata"].is_null());
}

fn delete_session_and_purge_idle<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "delete");
    let old = SessionRef::new("acme", "alice", "old");
    let other_tenant = SessionRef::new("globex", "carol", "old");
    append_n(&f.mem, &old, 2);
    append_n(&f.mem, &other_tenant, 2);
    f.clock.advance(Duration::from_secs(3600));
    append_n(&f.mem, &A, 2);
    // Idle for 30 min: only the sessions last touched an hour ago go, in every tenant.
    assert_eq!(f.mem.purge_idle(Duration::from_secs(1800)).unwrap(), 2);
    assert!(f.mem.history(&old, 1, 0).is_err());
    assert!(f.mem.history(&other_tenant, 1, 0).is_err());
    assert_eq!(f.mem.history(&A, 10, 0).unwrap().len(), 2);
    f.mem.delete_session(&A).unwrap();
    assert!(matches!(
        f.mem.history(&A, 1, 0),
        Err(Error::Memory(MemoryError::SessionNotFound))
    ));
    // No message is left under any key.
    assert_eq!(f.mem.key_usage().unwrap(), []);
}

fn purge_idle_works_in_batches<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "purge_batches");
    for i in 0..1203 {
        let name = format!("s{i}");
        f.mem
            .append(
                &SessionRef::new("t", "u", &name),
                &NewMessage::new("user", "x"),
            )
            .unwrap();
    }
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(f.mem.purge_idle(Duration::from_secs(5)).unwrap(), 1203);
    assert!(f.mem.sessions("t", "u", 10, 0).unwrap().is_empty());
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn scan(path: &Path, canaries: &[&str]) -> usize {
    let mut hits = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(bytes) = std::fs::read(&file) {
            for c in canaries {
                hits += occurrences(&bytes, c.as_bytes());
            }
        }
    }
    hits
}

#[test]
fn canaries_never_reach_the_db_wal_or_shm_files() {
    let f = fixture(sqlite, "canary");
    let canaries = ["CANARY-CONTENT-7f3a9c", "CANARY-META-b41e02"];
    // Sanity: the scanner finds a plaintext write in these very files.
    {
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch(
            "CREATE TABLE probe (x TEXT); INSERT INTO probe VALUES ('CANARY-PROBE-1');",
        )
        .unwrap();
        assert!(
            scan(&f.path, &["CANARY-PROBE-1"]) > 0,
            "the scan must be able to fail"
        );
        conn.execute_batch("DROP TABLE probe; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    for i in 0..200 {
        let msg = NewMessage::new("user", format!("{} number {i}", canaries[0]))
            .with_metadata(format!(r#"{{"note":"{}","i":{i}}}"#, canaries[1]));
        f.mem.append(&A, &msg).unwrap();
    }
    assert_eq!(
        f.mem.history(&A, 1, 0).unwrap()[0].content,
        format!("{} number 199", canaries[0])
    );
    assert_eq!(scan(&f.path, &canaries), 0, "before delete");
    f.mem.delete_session(&A).unwrap();
    assert_eq!(scan(&f.path, &canaries), 0, "after delete");
    // The dropped probe table's page was zeroed (secure_delete), even in the main file.
    assert_eq!(scan(&f.path, &["CANARY-PROBE-1"]), 0);
}

fn key_rotation_reencrypts_in_resumable_batches_then_retires_the_key<B: MemoryBackend>(
    make: Make<B>,
) {
    let f = fixture(make, "rotate");
    for i in 0..25 {
        f.mem
            .append(
                &A,
                &NewMessage::new("user", format!("r{i}")).with_metadata("{}"),
            )
            .unwrap();
    }
    assert_eq!(f.mem.key_usage().unwrap(), [(1, 25)]);
    let next = f
        .mem
        .keyring()
        .with_key(2, &crate::crypto::test_key(9))
        .unwrap();
    f.mem.set_keyring(next);
    f.mem.append(&A, &NewMessage::new("user", "new")).unwrap();
    assert_eq!(f.mem.key_usage().unwrap(), [(1, 25), (2, 1)]);
    assert!(matches!(
        f.mem.retire_key(1),
        Err(Error::Crypto(CryptoError::KeyInUse {
            key_id: 1,
            rows: 25
        }))
    ));
    // An interrupted rotation: one batch, then the rest later.
    assert_eq!(f.mem.rotate(10).unwrap(), 10);
    assert_eq!(f.mem.key_usage().unwrap(), [(1, 15), (2, 11)]);
    let mut batches = 0;
    while f.mem.rotate(10).unwrap() > 0 {
        batches += 1;
    }
    assert_eq!(batches, 2);
    assert_eq!(f.mem.key_usage().unwrap(), [(2, 26)]);
    f.mem.retire_key(1).unwrap();
    assert_eq!(f.mem.keyring().key_ids(), [2]);
    let all = f.mem.history(&A, 100, 0).unwrap();
    assert_eq!(all.len(), 26);
    assert_eq!(all[25].content, "r0");
    assert_eq!(all[25].metadata.as_deref(), Some("{}"));
    assert!(matches!(f.mem.rotate(0), Err(Error::InvalidArgument(_))));
}

fn memory_store_is_send_and_sync_and_threads_share_it<B: MemoryBackend>(make: Make<B>) {
    fn shareable<T: Send + Sync>() {}
    shareable::<MemoryStore>();
    shareable::<MemoryStore<B>>();
    let f = fixture(make, "threads");
    let mem = Arc::new(f.mem);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let mem = Arc::clone(&mem);
            std::thread::spawn(move || {
                for i in 0..50 {
                    mem.append(&A, &NewMessage::new("user", format!("{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(mem.history(&A, 1000, 0).unwrap().len(), 200);
}

/// Records every span name and field value, to check what spans reveal.
mod capture {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Default, Clone)]
    pub(super) struct Capture(pub(super) Arc<Mutex<Vec<String>>>);

    struct Fields<'a>(&'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut seen = self.0.lock().unwrap();
            seen.push(format!("span {}", span.metadata().name()));
            span.record(&mut Fields(&mut seen));
            Id::from_u64(seen.len() as u64)
        }
        fn record(&self, _: &Id, values: &Record<'_>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            event.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[test]
fn spans_name_the_operation_and_never_carry_content_or_ids() {
    let capture = capture::Capture::default();
    let f = fixture(sqlite, "spans");
    let secret = SessionRef::new("TENANT-SECRET", "USER-SECRET", "SESSION-SECRET");
    tracing::subscriber::with_default(capture.clone(), || {
        let msg = NewMessage::new("user", "CONTENT-SECRET").with_metadata(r#"{"m":"META-SECRET"}"#);
        f.mem.append_many(&secret, &[msg.clone(), msg]).unwrap();
        f.mem.history(&secret, 10, 0).unwrap();
        f.mem.window(&secret, 100).unwrap();
        f.mem.export(&secret).unwrap();
        f.mem
            .sessions("TENANT-SECRET", "USER-SECRET", 10, 0)
            .unwrap();
        f.mem.delete_user("TENANT-SECRET", "USER-SECRET").unwrap();
    });
    let seen = capture.0.lock().unwrap().join("\n");
    for name in [
        "span memory.append",
        "span memory.history",
        "span memory.window",
        "span memory.export",
        "span memory.sessions",
        "span memory.delete_user",
        "db.system.name=\"sqlite\"",
        "keel.memory.statement=\"INSERT\"",
        "db.operation.name=\"TRANSACTION\"",
        "db.operation.name=\"SELECT\"",
        "db.collection.name=\"memory_messages\"",
        "db.collection.name=\"memory_sessions\"",
        "keel.memory.messages=2",
    ] {
        assert!(seen.contains(name), "missing {name} in:\n{seen}");
    }
    assert!(!seen.contains("SECRET"), "a span leaked input:\n{seen}");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_client_spans_name_the_system_and_operation_never_content() {
    let capture = capture::Capture::default();
    let f = fixture(postgres, "pg-spans");
    let secret = SessionRef::new("TENANT-SECRET", "USER-SECRET", "SESSION-SECRET");
    tracing::subscriber::with_default(capture.clone(), || {
        let msg = NewMessage::new("user", "CONTENT-SECRET").with_metadata(r#"{"m":"META-SECRET"}"#);
        f.mem.append(&secret, &msg).unwrap();
        f.mem.history(&secret, 10, 0).unwrap();
    });
    let seen = capture.0.lock().unwrap().join("\n");
    for name in [
        "span memory.append",
        "span db.postgresql",
        "db.system.name=\"postgresql\"",
        "db.operation.name=\"TRANSACTION\"",
        "db.operation.name=\"SELECT\"",
        "db.collection.name=\"memory_messages\"",
    ] {
        assert!(seen.contains(name), "missing {name} in:\n{seen}");
    }
    assert!(!seen.contains("SECRET"), "a span leaked input:\n{seen}");
}

/// Every file under `dir`, recursively, scanned for `canaries`.
#[cfg(feature = "postgres")]
fn scan_tree(dir: &Path, canaries: &[&str]) -> usize {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits += scan_tree(&path, canaries);
        } else if let Ok(bytes) = std::fs::read(&path) {
            for c in canaries {
                hits += occurrences(&bytes, c.as_bytes());
            }
        }
    }
    hits
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_canaries_never_reach_the_server_data_directory() {
    let server = crate::store::postgres::test_server::server();
    let f = fixture(postgres, "pg-canary");
    let url = server.database_for(f.dir.path());
    // Sanity: the scan finds plaintext the server wrote (table, WAL) after a checkpoint.
    server.exec(
        &url,
        "CREATE TABLE probe (x TEXT); INSERT INTO probe VALUES ('CANARY-PG-PROBE-1'); CHECKPOINT;",
    );
    assert!(
        scan_tree(server.data_dir(), &["CANARY-PG-PROBE-1"]) > 0,
        "the scan must be able to fail"
    );
    let canaries = ["CANARY-PG-CONTENT-5d1e", "CANARY-PG-META-90ab"];
    for i in 0..200 {
        let msg = NewMessage::new("user", format!("{} number {i}", canaries[0]))
            .with_metadata(format!(r#"{{"note":"{}","i":{i}}}"#, canaries[1]));
        f.mem.append(&A, &msg).unwrap();
    }
    f.mem
        .append_many(
            &A,
            &[
                NewMessage::new("user", canaries[0]),
                NewMessage::new("assistant", canaries[0]),
            ],
        )
        .unwrap();
    assert_eq!(f.mem.history(&A, 1, 0).unwrap()[0].content, canaries[0]);
    server.exec(&url, "CHECKPOINT");
    assert_eq!(scan_tree(server.data_dir(), &canaries), 0, "before delete");
    f.mem.delete_session(&A).unwrap();
    server.exec(&url, "CHECKPOINT");
    assert_eq!(scan_tree(server.data_dir(), &canaries), 0, "after delete");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_concurrent_stores_append_to_one_session_without_losing_or_forking() {
    // Three stores (as three hosts) on one database, appending to one session and to their own.
    let f = fixture(postgres, "pg-hosts");
    let stores: Vec<_> = (0..3)
        .map(|_| Arc::new(f.reopen(keys(7)).unwrap()))
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(h, mem)| {
            let (mem, barrier) = (Arc::clone(mem), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let own = format!("own-{h}");
                for i in 0..40 {
                    mem.append(&A, &NewMessage::new("user", format!("{h}-{i}")))
                        .unwrap();
                    mem.append_many(
                        &SessionRef::new("acme", "alice", &own),
                        &[NewMessage::new("user", "a"), NewMessage::new("user", "b")],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = stores[2].history(&A, 1000, 0).unwrap();
    assert_eq!(all.len(), 120);
    for h in 0..3 {
        // Each host's messages are in its own order.
        let mine: Vec<_> = all
            .iter()
            .rev()
            .filter(|m| m.content.starts_with(&format!("{h}-")))
            .map(|m| m.content.clone())
            .collect();
        let expected: Vec<_> = (0..40).map(|i| format!("{h}-{i}")).collect();
        assert_eq!(mine, expected);
        let own = format!("own-{h}");
        assert_eq!(
            stores[0]
                .history(&SessionRef::new("acme", "alice", &own), 1000, 0)
                .unwrap()
                .len(),
            80
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit (memory/group.rs).

/// `n` threads each append to their own session while `hold` keeps the database's write lock;
/// once all but the first (the leader, blocked on the lock) are queued, `release` lets them go.
/// Returns the store's stats and each thread's ids.
fn appends_behind_a_held_lock<B: MemoryBackend>(
    f: Fixture<B>,
    n: usize,
    release: impl FnOnce(),
) -> (CommitStats, Arc<MemoryStore<B>>) {
    let mem = Arc::new(f.mem);
    let barrier = Arc::new(std::sync::Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (mem, barrier) = (Arc::clone(&mem), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let own = format!("s-{t}");
                let at = SessionRef::new("acme", "alice", &own);
                mem.append(&at, &NewMessage::new("user", format!("{t}")))
                    .unwrap()
            })
        })
        .collect();
    barrier.wait();
    let leaders = mem.backend.write_concurrency().min(n);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while mem.group.queued() < n - leaders {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {} appends queued",
            mem.group.queued(),
            n - leaders
        );
        std::thread::yield_now();
    }
    release();
    let mut ids: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every append got its own id");
    (mem.commit_stats(), mem)
}

#[test]
fn sqlite_concurrent_appends_share_one_transaction() {
    let f = fixture(sqlite, "group-sqlite");
    // Another connection holds the write lock: the first append waits for it inside its
    // transaction, every other one queues behind it.
    let other = rusqlite::Connection::open(&f.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (stats, mem) =
        appends_behind_a_held_lock(f, 16, move || other.execute_batch("COMMIT").unwrap());
    // The leader's own append, then the 15 queued ones in one batch.
    assert_eq!(
        stats,
        CommitStats {
            transactions: 2,
            appends: 16
        }
    );
    for t in 0..16 {
        let own = format!("s-{t}");
        let got = mem
            .history(&SessionRef::new("acme", "alice", &own), 10, 0)
            .unwrap();
        assert_eq!(contents(&got), [t.to_string()]);
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_concurrent_appends_share_transactions() {
    let f = fixture(postgres, "group-pg");
    let url = crate::store::postgres::test_server::server().database_for(f.dir.path());
    // Every memory write takes the keys lock shared first: holding it exclusively stops them.
    let mut other = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    other
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7738703049236938754)")
        .unwrap();
    let n = 32;
    let leaders = f.mem.backend.write_concurrency();
    assert!(leaders < n);
    let (stats, _) = appends_behind_a_held_lock(f, n, move || {
        other.batch_execute("COMMIT").unwrap();
    });
    // The blocked leaders' own appends, then the rest in one batch.
    assert_eq!(stats.appends, n as u64);
    assert_eq!(stats.transactions, leaders as u64 + 1, "{stats:?}");
}

/// One append of a batch as the queue hands it over.
fn batch_of<'a>(
    at: &'a SessionRef<'a>,
    msgs: &'a [(&'a NewMessage, u32)],
    now: i64,
) -> group::Append<'a> {
    group::Append { at: *at, msgs, now }
}

fn a_failing_append_does_not_fail_the_others_of_its_batch<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "group-isolation");
    f.mem.append(&A, &NewMessage::new("user", "first")).unwrap();
    let now = f.clock.now_ms();
    let (a1, a2, b1, bad) = (
        NewMessage::new("user", "a1"),
        NewMessage::new("user", "a2"),
        NewMessage::new("user", "b1"),
        NewMessage::new("user", "not bob's"),
    );
    let bob_on_alices = SessionRef::new("acme", "bob", "s1");
    let b = SessionRef::new("acme", "bob", "s2");
    let m_a1 = [(&a1, 1)];
    let m_bad = [(&bad, 1)];
    let m_a2 = [(&a2, 1)];
    let m_b1 = [(&b1, 1)];
    let results = f.mem.commit_batch(&[
        batch_of(&A, &m_a1, now),
        batch_of(&bob_on_alices, &m_bad, now),
        batch_of(&b, &m_b1, now),
        batch_of(&A, &m_a2, now),
    ]);
    assert_eq!(results.len(), 4);
    assert!(
        matches!(results[1], Err(Error::Memory(MemoryError::SessionNotFound))),
        "{:?}",
        results[1]
    );
    let ok: Vec<_> = [0, 2, 3]
        .iter()
        .map(|&i| results[i].as_ref().unwrap().ids.clone())
        .collect();
    assert!(results[2].as_ref().unwrap().new_session);
    // Committed in one transaction (the failed attempt rolled back), and acknowledged.
    assert_eq!(f.mem.commit_stats().transactions, 2);
    let alice = f.mem.history(&A, 10, 0).unwrap();
    assert_eq!(contents(&alice), ["a2", "a1", "first"]);
    assert_eq!(alice[0].id, ok[2][0]);
    assert_eq!(alice[1].id, ok[0][0]);
    assert_eq!(contents(&f.mem.history(&b, 10, 0).unwrap()), ["b1"]);
    assert!(matches!(
        f.mem.history(&bob_on_alices, 10, 0),
        Err(Error::Memory(MemoryError::SessionNotFound))
    ));
}

fn appends_to_one_session_in_one_batch_keep_their_order<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "group-order");
    let now = f.clock.now_ms();
    let msgs: Vec<NewMessage> = (0..6)
        .map(|i| NewMessage::new("user", format!("m{i}")))
        .collect();
    let other = NewMessage::new("user", "other");
    let b = SessionRef::new("acme", "alice", "s0");
    let (m01, m2, mo, m345) = (
        [(&msgs[0], 1), (&msgs[1], 1)],
        [(&msgs[2], 1)],
        [(&other, 1)],
        [(&msgs[3], 1), (&msgs[4], 1), (&msgs[5], 1)],
    );
    // A session created by the batch, interleaved with another session that sorts before it.
    let results = f.mem.commit_batch(&[
        batch_of(&A, &m01, now),
        batch_of(&b, &mo, now),
        batch_of(&A, &m2, now),
        batch_of(&A, &m345, now),
    ]);
    let ids: Vec<i64> = [0, 2, 3]
        .iter()
        .flat_map(|&i| results[i].as_ref().unwrap().ids.clone())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(results[0].as_ref().unwrap().new_session);
    assert!(!results[2].as_ref().unwrap().new_session);
    assert_eq!(f.mem.commit_stats().transactions, 1);
    // Read back through the tag and the prev-id chain (a broken link is `Tampered`).
    let got = f.mem.history(&A, 10, 0).unwrap();
    assert_eq!(contents(&got), ["m5", "m4", "m3", "m2", "m1", "m0"]);
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), newest_first);
    assert_eq!(f.mem.window(&A, 1000).unwrap().len(), 6);
    // Reopened (no cached state): still verifies.
    let again = f.reopen(keys(7)).unwrap();
    assert_eq!(again.history(&A, 10, 0).unwrap().len(), 6);
}

fn many_threads_appending_to_one_session_keep_each_threads_order<B: MemoryBackend>(make: Make<B>) {
    let f = fixture(make, "group-threads");
    let mem = Arc::new(f.mem);
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (mem, barrier) = (Arc::clone(&mem), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut last = 0;
                for i in 0..25 {
                    let id = mem
                        .append(&A, &NewMessage::new("user", format!("{t}-{i}")))
                        .unwrap();
                    assert!(id > last);
                    last = id;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = mem.history(&A, 1000, 0).unwrap();
    assert_eq!(all.len(), 200);
    for t in 0..8 {
        let mine: Vec<_> = all
            .iter()
            .rev()
            .filter(|m| m.content.starts_with(&format!("{t}-")))
            .map(|m| m.content.clone())
            .collect();
        let expected: Vec<_> = (0..25).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(mine, expected);
    }
    let stats = mem.commit_stats();
    assert_eq!(stats.appends, 200);
}

#[test]
fn a_forked_child_does_not_wait_for_a_batch_of_its_parent() {
    let f = fixture(sqlite, "group-fork");
    let mem = Arc::new(f.mem);
    // What a child forked while its parent committed a batch inherits: a leader (and a queue)
    // whose threads it does not have. Written as another process's state.
    mem.group.pretend_forked_during_a_batch();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let mem = Arc::clone(&mem);
        std::thread::spawn(move || {
            let _ = tx.send(mem.append(&A, &NewMessage::new("user", "child")));
        });
    }
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the append waited for a leader of another process");
    got.unwrap();
    assert_eq!(contents(&mem.history(&A, 10, 0).unwrap()), ["child"]);
    assert_eq!(mem.group.in_flight(), 0);
}

#[test]
fn a_tampered_session_in_a_batch_is_refused_and_the_others_commit() {
    let f = fixture(sqlite, "group-tamper");
    let t = SessionRef::new("acme", "alice", "tampered");
    f.mem.append(&t, &NewMessage::new("user", "old")).unwrap();
    let raw = rusqlite::Connection::open(&f.path).unwrap();
    raw.execute(
        "UPDATE memory_sessions SET message_count = message_count + 1 WHERE session_key = 'tampered'",
        [],
    )
    .unwrap();
    drop(raw);
    let now = f.clock.now_ms();
    let (a, bad, b) = (
        NewMessage::new("user", "a"),
        NewMessage::new("user", "never"),
        NewMessage::new("user", "b"),
    );
    let other = SessionRef::new("acme", "alice", "zz");
    let (ma, mbad, mb) = ([(&a, 1)], [(&bad, 1)], [(&b, 1)]);
    let before = f.mem.commit_stats().transactions;
    let results = f.mem.commit_batch(&[
        batch_of(&A, &ma, now),
        batch_of(&t, &mbad, now),
        batch_of(&other, &mb, now),
    ]);
    assert!(
        matches!(results[1], Err(Error::Memory(MemoryError::Tampered { .. }))),
        "{:?}",
        results[1]
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    assert_eq!(f.mem.commit_stats().transactions, before + 1);
    assert_eq!(contents(&f.mem.history(&A, 10, 0).unwrap()), ["a"]);
    assert_eq!(contents(&f.mem.history(&other, 10, 0).unwrap()), ["b"]);
}
