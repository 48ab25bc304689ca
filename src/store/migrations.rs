//! The versioned schema, applied at open by rusqlite_migration (`PRAGMA user_version`).
//!
//! Migrations are append-only: a released migration is never edited, a change is a new entry.
//! They run inside `BEGIN IMMEDIATE` (the connection's default transaction behaviour, set by
//! `configure`), so processes that open a fresh file together serialise on the write lock and
//! the losers find the schema already at the latest version.
//!
//! Schema notes (docs/memory.md has the reasoning):
//! - `AUTOINCREMENT` on both tables: ids are never reused, so a ciphertext bound to a row id
//!   (associated data) can never be valid on a later row that happens to get the same id.
//! - ids, tenant/user/session keys, role, token counts and timestamps are in clear for indexing;
//!   `content` and `metadata` hold AES-SIV ciphertexts; `key_id` copies the ciphertexts' key id
//!   so rotation and `key_usage` can find rows under old keys.
//! - Indexes are only those the hot path needs, because every index a commit touches is one
//!   more page written to the WAL: an append touches the session row, the message row and
//!   `memory_messages_by_session`. `updated_at` (rewritten by every append) and `key_id` are
//!   deliberately not indexed; retention and rotation are maintenance scans (docs/memory.md).

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use crate::error::{Result, StoreError};

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE memory_sessions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT    NOT NULL,
        user_id     TEXT    NOT NULL,
        session_key TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        UNIQUE (tenant_id, session_key)
    );
    CREATE INDEX memory_sessions_by_user ON memory_sessions (tenant_id, user_id);
    CREATE TABLE memory_messages (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER NOT NULL REFERENCES memory_sessions (id) ON DELETE CASCADE,
        tenant_id  TEXT    NOT NULL,
        role       TEXT    NOT NULL,
        content    BLOB    NOT NULL,
        metadata   BLOB,
        tokens     INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        key_id     INTEGER NOT NULL
    );
    CREATE INDEX memory_messages_by_session ON memory_messages (session_id, id);",
    ),
    // API keys (src/auth): only an HMAC of each key is stored, with the keyring key id its
    // secret was derived from; metadata is an AES-SIV ciphertext bound to the row.
    M::up(
        "CREATE TABLE api_keys (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id     TEXT    NOT NULL,
        name          TEXT    NOT NULL,
        env           TEXT    NOT NULL,
        display       TEXT    NOT NULL,
        hash          BLOB    NOT NULL UNIQUE,
        secret_key_id INTEGER NOT NULL,
        scopes        TEXT    NOT NULL,
        metadata      BLOB,
        rate_limit    INTEGER,
        rate_window_ms INTEGER,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER,
        revoked_at    INTEGER,
        last_used_at  INTEGER,
        replaced_by   INTEGER REFERENCES api_keys (id)
    );
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);",
    ),
    // The audit log (src/crypto/audit.rs): entries are AES-SIV ciphertexts chained by HMAC;
    // `actor_tag` is a keyed hash of the actor for equality queries; `audit_head` holds the
    // HMAC of the latest link so that truncation is detected too.
    M::up(
        "CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        key_id    INTEGER NOT NULL,
        actor_tag BLOB    NOT NULL,
        entry     BLOB    NOT NULL,
        link      BLOB    NOT NULL
    );
    CREATE INDEX audit_log_by_actor ON audit_log (actor_tag, at);
    CREATE INDEX audit_log_by_time ON audit_log (at);
    CREATE TABLE audit_head (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        seq     INTEGER NOT NULL,
        key_id  INTEGER NOT NULL,
        mac     BLOB    NOT NULL
    );",
    ),
    // API-key policy MAC (src/auth/keys.rs): `policy_mac` authenticates every column that
    // decides access under a keyring-derived key. The migration cannot compute MACs (it has no
    // keyring): it records the highest existing row id in `api_keys_upgrade`, and the first
    // `ApiKeys` to open the database seals those rows once and drops the marker (trust on
    // upgrade); after that a row without a MAC is refused as tampered.
    M::up(
        "ALTER TABLE api_keys ADD COLUMN policy_mac BLOB;
    CREATE TABLE api_keys_upgrade (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        max_id  INTEGER NOT NULL
    );
    INSERT INTO api_keys_upgrade (id, max_id) SELECT 1, id FROM api_keys ORDER BY id DESC LIMIT 1;",
    ),
    // Memory integrity (src/memory/integrity.rs). Sessions get a keyed tag (AES-SIV, format 4)
    // over their owner, times, message count and newest message id, and the key id it was made
    // with; messages get the id of the previous message of their session (authenticated, with
    // role, tokens and time, by format-3 ciphertexts). `memory_keys` holds one keyed check value
    // per key id, so that a wrong keyring is refused when the store opens. Rows written before
    // this migration keep NULLs here and stay readable as legacy rows until rotation upgrades
    // them. ADD COLUMN with no default rewrites nothing: instant on any database size.
    M::up(
        "ALTER TABLE memory_sessions ADD COLUMN message_count INTEGER;
    ALTER TABLE memory_sessions ADD COLUMN last_message_id INTEGER;
    ALTER TABLE memory_sessions ADD COLUMN mac BLOB;
    ALTER TABLE memory_sessions ADD COLUMN key_id INTEGER;
    ALTER TABLE memory_messages ADD COLUMN prev_id INTEGER;
    CREATE TABLE memory_keys (
        key_id    INTEGER PRIMARY KEY,
        check_tag BLOB    NOT NULL
    );",
    ),
    // Key derivation version (src/crypto/keyring.rs, `Kdf`): the subkeys behind API-key hashes
    // and policy MACs and audit links/heads/actor tags were HMAC(keyring key, label) (version
    // 1, every row before this migration) and are HKDF-SHA256 for new rows (version 2). Each row
    // records the version it was made with; a constant default rewrites nothing.
    M::up(
        "ALTER TABLE api_keys ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE audit_log ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE audit_head ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;",
    ),
];

/// The schema version after every migration (`PRAGMA user_version`).
#[cfg(test)]
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema to the latest version.
///
/// rusqlite_migration reads `user_version` before it opens its (immediate) transaction, so two
/// processes opening a fresh file together may both decide to migrate; the second then waits
/// for the write lock and fails on "table already exists". When a migration fails, the version
/// is read again: if another process has brought the schema up to date meanwhile, that is
/// success; otherwise the failure is real (after a few attempts).
pub(super) fn apply(conn: &mut Connection) -> Result<()> {
    let migrations = Migrations::from_slice(MIGRATIONS);
    let mut attempts = 0;
    loop {
        let Err(err) = migrations.to_latest(conn) else {
            return Ok(());
        };
        attempts += 1;
        match migrations.pending_migrations(conn) {
            Ok(0) => return Ok(()),
            Ok(_) if attempts < 5 => continue,
            _ => return Err(StoreError::Migration(err.to_string()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }
}
