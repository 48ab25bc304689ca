//! Mistakes with the keyring and conversation memory, and the typed error and message each one
//! gets from the Rust API (the same table runs in Python, `tests/python/test_mistakes_memory.py`,
//! and in C, `tests/c/test_memory.c`). Messages name the argument, value, key id or path, never
//! key material.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use keel::{
    CryptoError, Error, Keyring, MemoryError, MemoryOptions, MemoryStore, NewMessage, SessionRef,
};

struct Env {
    dir: PathBuf,
    key_text: String,
    mem: MemoryStore,
    db: PathBuf,
}

impl Env {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keel-mistakes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key_text = Keyring::generate_key().unwrap().to_string();
        let db = dir.join("memory.db");
        let mem = MemoryStore::open(&db, keyring(&key_text), MemoryOptions::default()).unwrap();
        for i in 0..3 {
            mem.append(&AT, &NewMessage::new("user", format!("m{i}")))
                .unwrap();
        }
        Self {
            dir,
            key_text,
            mem,
            db,
        }
    }

    fn key_file(&self, mode: u32) -> PathBuf {
        let path = self.dir.join("keys");
        std::fs::write(&path, format!("1:{}\n", self.key_text)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const AT: SessionRef<'static> = SessionRef {
    tenant: "acme",
    user: "alice",
    session: "s1",
};

fn keyring(key_text: &str) -> Keyring {
    Keyring::parse(&format!("1:{key_text}")).unwrap()
}

fn random_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(Keyring::generate_key().unwrap().as_bytes())
        .unwrap()
}

fn open(db: &Path, keys: Keyring) -> keel::Result<MemoryStore> {
    MemoryStore::open(db, keys, MemoryOptions::default())
}

type Check = fn(&Error) -> bool;
type Mistake = (
    &'static str,
    fn(&Env) -> keel::Result<()>,
    Check,
    &'static str,
);

fn is_source(e: &Error) -> bool {
    matches!(e, Error::Crypto(CryptoError::KeyringSource(_)))
}
fn is_keyring(e: &Error) -> bool {
    matches!(e, Error::Crypto(CryptoError::InvalidKeyring(_)))
}
fn is_argument(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(_))
}

const MISTAKES: &[Mistake] = &[
    (
        "key file readable by others",
        |e| Keyring::from_file(e.key_file(0o644)).map(drop),
        is_source,
        "has mode 0644: it must not be readable or writable by group or others; chmod 600 it",
    ),
    (
        "key file writable by group",
        |e| Keyring::from_file(e.key_file(0o620)).map(drop),
        is_source,
        "mode 0620",
    ),
    (
        "key file missing",
        |e| Keyring::from_file(e.dir.join("nope/keys")).map(drop),
        is_source,
        "nope/keys",
    ),
    (
        "all-zero key",
        |_| Keyring::new(1, &[0; 64]).map(drop),
        is_keyring,
        "key 1 is not random: only 1 distinct byte values in 64 bytes",
    ),
    (
        "constant key in keyring text",
        |_| {
            let text = base64::engine::general_purpose::STANDARD.encode([0x41; 64]);
            Keyring::parse(&format!("3:{text}")).map(drop)
        },
        is_keyring,
        "key 3 is not random",
    ),
    (
        "repeated pattern as a new key",
        |e| {
            keyring(&e.key_text)
                .with_key(2, &b"abcd".repeat(16))
                .map(drop)
        },
        is_keyring,
        "key 2 is not random: only 4 distinct byte values",
    ),
    (
        "key of the wrong length",
        |_| Keyring::new(1, b"short").map(drop),
        is_keyring,
        "key 1 is 5 bytes; keys are 64 bytes",
    ),
    (
        "wrong keyring at open",
        |e| open(&e.db, Keyring::generate().unwrap()).map(drop),
        |e| matches!(e, Error::Crypto(CryptoError::KeyMismatch { key_id: 1 })),
        "key 1 of the keyring does not match the key 1 this database was written with",
    ),
    (
        "keyring without the key the data uses",
        |e| open(&e.db, Keyring::new(5, &random_key()).unwrap()).map(drop),
        |e| matches!(e, Error::Crypto(CryptoError::UnknownKey { key_id: 1 })),
        "no key with id 1",
    ),
    (
        "retire an unknown key id",
        |e| e.mem.retire_key(7),
        is_keyring,
        "key 7 is not in the keyring (its key ids: [1])",
    ),
    (
        "retire the primary key",
        |e| e.mem.retire_key(1),
        is_keyring,
        "key 1 is primary; it cannot be removed",
    ),
    (
        "retire a key still in use",
        |e| {
            e.mem
                .set_keyring(e.mem.keyring().with_key(2, &random_key()).unwrap());
            e.mem.retire_key(1)
        },
        |e| {
            matches!(
                e,
                Error::Crypto(CryptoError::KeyInUse { key_id: 1, rows: 3 })
            )
        },
        "key 1 is still used by 3",
    ),
    (
        "rotation batch of 0",
        |e| e.mem.rotate(0).map(drop),
        is_argument,
        "batch must be at least 1",
    ),
    (
        "unknown session",
        |e| {
            e.mem
                .history(&SessionRef::new("acme", "alice", "nope"), 10, 0)
                .map(drop)
        },
        |e| matches!(e, Error::Memory(MemoryError::SessionNotFound)),
        "session not found",
    ),
    (
        "empty tenant",
        |e| {
            e.mem
                .append(
                    &SessionRef::new("", "u", "s"),
                    &NewMessage::new("user", "x"),
                )
                .map(drop)
        },
        is_argument,
        "tenant must be 1 to 256 bytes (got 0)",
    ),
    (
        "role too long",
        |e| {
            e.mem
                .append(&AT, &NewMessage::new("r".repeat(65), "x"))
                .map(drop)
        },
        is_argument,
        "role must be 1 to 64 bytes (got 65)",
    ),
    (
        "metadata that is not JSON",
        |e| {
            e.mem
                .append(&AT, &NewMessage::new("user", "x").with_metadata("{oops"))
                .map(drop)
        },
        |e| matches!(e, Error::Memory(MemoryError::InvalidMetadata(_))),
        "not JSON (line 1, column 2)",
    ),
    (
        "message edited without the keyring",
        |e| {
            rusqlite::Connection::open(&e.db)
                .unwrap()
                .execute_batch("UPDATE memory_messages SET role = 'system' WHERE id = 2")
                .unwrap();
            e.mem.history(&AT, 10, 0).map(drop)
        },
        |e| {
            matches!(
                e,
                Error::Memory(MemoryError::Tampered {
                    message_id: Some(2),
                    ..
                })
            )
        },
        "message 2 failed its integrity check",
    ),
];

#[test]
fn every_mistake_gets_a_typed_error_with_a_clear_message() {
    for (i, (name, make, check, text)) in MISTAKES.iter().enumerate() {
        let env = Env::new(&format!("case{i}"));
        let err = match make(&env) {
            Ok(()) => panic!("{name}: no error"),
            Err(e) => e,
        };
        assert!(check(&err), "{name}: wrong error {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(text), "{name}: {msg:?} lacks {text:?}");
        assert!(
            !msg.contains(&env.key_text),
            "{name}: key material in {msg:?}"
        );
    }
}
