//! The SQLite memory backend: the `memory_*` tables of a [`Store`].
//!
//! Its schema is [`SCHEMA`], its own versioned sequence (the SQLite backends may share one
//! database file; each migrates its own tables, `store/migrations.rs`). Writes run in `BEGIN IMMEDIATE` ([`Store::write`]), so the ids read from
//! `sqlite_sequence` cannot be taken by another writer before the commit, and `AUTOINCREMENT`
//! never reuses one. Reads run in one `BEGIN DEFERRED` transaction: one snapshot, no write lock.
//! Statements are cached per connection (`prepare_cached`): the hot path (an append) parses no
//! SQL and allocates nothing beyond what rusqlite needs to bind.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    ListedSession, MemoryBackend, MemoryRead, MemoryTable, MemoryWrite, MessageSeal, NewMessageRow,
    NewSession, SessionRecord, SessionRow, SessionSeal, StoredMessage,
};
use crate::error::Result;
use crate::store::{sqlite_err, Schema, Store, StoreOptions};

/// The memory tables' schema: its own versioned sequence in `keel_schema` (see
/// [`crate::store::Schema`]). Append-only: a released step is never edited.
///
/// Schema notes (docs/memory.md has the reasoning):
/// - `AUTOINCREMENT` on both tables: ids are never reused, so a ciphertext bound to a row id
///   (associated data) can never be valid on a later row that happens to get the same id.
/// - ids, tenant/user/session keys, role, token counts and timestamps are in clear for
///   indexing; `content` and `metadata` hold AES-SIV ciphertexts; `key_id` copies the
///   ciphertexts' key id so rotation and `key_usage` can find rows under old keys.
/// - Indexes are only those the hot path needs, because every index a commit touches is one
///   more page written to the WAL: an append touches the session row, the message row and
///   `memory_messages_by_session`. `updated_at` (rewritten by every append) and `key_id` are
///   deliberately not indexed; retention and rotation are maintenance scans (docs/memory.md).
pub(crate) static SCHEMA: Schema = Schema {
    component: "memory",
    steps: &[
        // 1: sessions and messages.
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
        // 2: memory integrity (src/memory/integrity.rs). Sessions get a keyed tag (AES-SIV,
        // format 4) over their owner, times, message count and newest message id, and the key
        // id it was made with; messages get the id of the previous message of their session
        // (authenticated, with role, tokens and time, by format-3 ciphertexts). `memory_keys`
        // holds one keyed check value per key id, so that a wrong keyring is refused when the
        // store opens. Rows written before this step keep NULLs here and stay readable as
        // legacy rows until rotation upgrades them. ADD COLUMN with no default rewrites nothing.
        "ALTER TABLE memory_sessions ADD COLUMN message_count INTEGER;
    ALTER TABLE memory_sessions ADD COLUMN last_message_id INTEGER;
    ALTER TABLE memory_sessions ADD COLUMN mac BLOB;
    ALTER TABLE memory_sessions ADD COLUMN key_id INTEGER;
    ALTER TABLE memory_messages ADD COLUMN prev_id INTEGER;
    CREATE TABLE memory_keys (
        key_id    INTEGER PRIMARY KEY,
        check_tag BLOB    NOT NULL
    );",
    ],
    // The shared sequence of keel before per-component schemas: step 1 created these tables,
    // step 5 added integrity.
    legacy: |v| match v {
        0 => 0,
        1..=4 => 1,
        _ => 2,
    },
};

const SCHEMAS: &[&Schema] = &[&SCHEMA];

/// Conversation memory in a SQLite [`Store`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteMemory {
    store: Store,
    schema_ready: std::sync::Arc<std::sync::OnceLock<()>>,
}

impl SqliteMemory {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Ok(Self::new(Store::open(path, options)?))
    }

    /// Memory in an open store (e.g. one shared with API keys and the audit log).
    pub fn new(store: Store) -> Self {
        Self {
            store,
            schema_ready: Default::default(),
        }
    }

    /// Runs this backend's migrations once, before its first statement.
    fn ready(&self) -> Result<()> {
        if self.schema_ready.get().is_none() {
            self.store.ensure_schemas(SCHEMAS)?;
            let _ = self.schema_ready.set(());
        }
        Ok(())
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl MemoryBackend for SqliteMemory {
    fn read(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryRead) -> Result<()>,
    ) -> Result<()> {
        self.ready()?;
        self.store.read_table(table.as_str(), |conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)
                .map_err(sqlite_err)?;
            f(&Sql(&tx))?;
            tx.commit().map_err(sqlite_err)
        })
    }

    fn write(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryWrite) -> Result<()>,
    ) -> Result<()> {
        self.ready()?;
        self.store.write_table(table.as_str(), |tx| f(&Sql(tx)))
    }

    fn scrub(&self) -> Result<()> {
        self.store.checkpoint_truncate()
    }

    fn location(&self) -> String {
        format!("sqlite://{}", self.store.path().display())
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

/// A connection inside a transaction (deferred for reads, immediate for writes).
struct Sql<'a>(&'a Connection);

/// The columns [`stored`] reads, in order.
const MESSAGE_COLUMNS: &str =
    "id, session_id, tenant_id, role, content, metadata, tokens, created_at, prev_id";

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: r.get(0)?,
        session_id: r.get(1)?,
        tenant: r.get(2)?,
        role: r.get(3)?,
        content: r.get(4)?,
        metadata: r.get(5)?,
        tokens: r.get(6)?,
        created_at: r.get(7)?,
        prev_id: r.get(8)?,
    })
}

/// (id, user, created, updated, count, last, mac) from columns `at..at+7`.
fn session_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(at)?,
        user: r.get(at + 1)?,
        created_at: r.get(at + 2)?,
        updated_at: r.get(at + 3)?,
        message_count: r.get(at + 4)?,
        last_message_id: r.get(at + 5)?,
        mac: r.get(at + 6)?,
    })
}

impl Sql<'_> {
    fn messages_where(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredMessage>> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(args, stored)?.collect())
            .map_err(sqlite_err)
    }

    fn ids(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<i64>> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(args, |r| r.get(0))?.collect())
            .map_err(sqlite_err)
    }

    fn count(&self, sql: &str, key_id: u32) -> Result<u64> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row([key_id], |r| r.get::<_, i64>(0)))
            .map_err(sqlite_err)
            .map(|n| n as u64)
    }

    /// `sqlite_sequence.seq` of an AUTOINCREMENT table (0 before its first row).
    fn sequence(&self, table: &str) -> Result<i64> {
        self.0
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = ?1")
            .and_then(|mut st| st.query_row([table], |r| r.get(0)).optional())
            .map_err(sqlite_err)
            .map(Option::unwrap_or_default)
    }
}

impl MemoryRead for Sql<'_> {
    fn session(&self, tenant: &str, session_key: &str) -> Result<Option<SessionRow>> {
        self.0
            .prepare_cached(
                "SELECT id, user_id, created_at, updated_at, message_count, last_message_id, mac
                 FROM memory_sessions WHERE tenant_id = ?1 AND session_key = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![tenant, session_key], |r| session_row(r, 0))
                    .optional()
            })
            .map_err(sqlite_err)
    }

    fn session_by_id(&self, id: i64) -> Result<Option<SessionRecord>> {
        self.0
            .prepare_cached(
                "SELECT tenant_id, session_key, id, user_id, created_at, updated_at,
                        message_count, last_message_id, mac
                 FROM memory_sessions WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([id], |r| {
                    Ok(SessionRecord {
                        tenant: r.get(0)?,
                        session_key: r.get(1)?,
                        row: session_row(r, 2)?,
                    })
                })
                .optional()
            })
            .map_err(sqlite_err)
    }

    fn sessions_of_user(
        &self,
        tenant: &str,
        user: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<ListedSession>> {
        self.0
            .prepare_cached(
                "SELECT s.session_key, s.id, s.user_id, s.created_at, s.updated_at,
                        s.message_count, s.last_message_id, s.mac,
                        (SELECT count(*) FROM memory_messages m
                         WHERE m.session_id = s.id AND m.tenant_id = s.tenant_id),
                        (SELECT max(m.id) FROM memory_messages m WHERE m.session_id = s.id)
                 FROM memory_sessions s WHERE s.tenant_id = ?1 AND s.user_id = ?2
                 ORDER BY s.updated_at DESC, s.id DESC LIMIT ?3 OFFSET ?4",
            )
            .and_then(|mut st| {
                st.query_map(params![tenant, user, limit, offset], |r| {
                    Ok(ListedSession {
                        session_key: r.get(0)?,
                        row: session_row(r, 1)?,
                        messages: r.get(8)?,
                        newest: r.get(9)?,
                    })
                })?
                .collect()
            })
            .map_err(sqlite_err)
    }

    fn session_ids_of_user(&self, tenant: &str, user: &str) -> Result<Vec<i64>> {
        self.ids(
            "SELECT id FROM memory_sessions WHERE tenant_id = ?1 AND user_id = ?2",
            params![tenant, user],
        )
    }

    fn idle_sessions(&self, cutoff: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        self.0
            .prepare_cached(
                "SELECT id, tenant_id FROM memory_sessions WHERE updated_at < ?1 LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![cutoff, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(sqlite_err)
    }

    fn sessions_tagged_under_other_key(&self, key_id: u32, limit: u32) -> Result<Vec<i64>> {
        self.ids(
            "SELECT id FROM memory_sessions WHERE mac IS NOT NULL AND key_id != ?1 LIMIT ?2",
            params![key_id, limit],
        )
    }

    fn count_and_newest(&self, session_id: i64) -> Result<(i64, i64)> {
        self.0
            .prepare_cached(
                "SELECT count(*), coalesce(max(id), 0) FROM memory_messages WHERE session_id = ?1",
            )
            .and_then(|mut st| st.query_row([session_id], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(sqlite_err)
    }

    fn previous_id(&self, session_id: i64, id: i64) -> Result<i64> {
        self.0
            .prepare_cached(
                "SELECT coalesce(max(id), 0) FROM memory_messages WHERE session_id = ?1 AND id < ?2",
            )
            .and_then(|mut st| st.query_row([session_id, id], |r| r.get(0)))
            .map_err(sqlite_err)
    }

    fn newest_content(&self, session_id: i64) -> Result<Option<Vec<u8>>> {
        self.0
            .prepare_cached(
                "SELECT content FROM memory_messages WHERE session_id = ?1 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| st.query_row([session_id], |r| r.get(0)).optional())
            .map_err(sqlite_err)
    }

    fn messages(
        &self,
        session_id: i64,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
        visit: &mut dyn FnMut(StoredMessage) -> Result<bool>,
    ) -> Result<()> {
        let mut st = self
            .0
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM memory_messages
                 WHERE session_id = ?1 AND tenant_id = ?2 ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))
            .map_err(sqlite_err)?;
        // A negative LIMIT is no limit in SQLite.
        let limit = limit.map_or(-1, i64::from);
        let mut rows = st
            .query(params![session_id, tenant, limit, offset])
            .map_err(sqlite_err)?;
        while let Some(row) = rows.next().map_err(sqlite_err)? {
            if !visit(stored(row).map_err(sqlite_err)?)? {
                break;
            }
        }
        Ok(())
    }

    fn messages_to_rotate(
        &self,
        after: i64,
        key_id: u32,
        format: u8,
        limit: u32,
    ) -> Result<Vec<StoredMessage>> {
        self.messages_where(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM memory_messages
                 WHERE id > ?1 AND (key_id != ?2 OR substr(content, 1, 1) != ?3)
                 ORDER BY id LIMIT ?4"
            ),
            params![after, key_id, [format].as_slice(), limit],
        )
    }

    fn messages_under_key(&self, key_id: u32, limit: u32) -> Result<Vec<StoredMessage>> {
        self.messages_where(
            &format!("SELECT {MESSAGE_COLUMNS} FROM memory_messages WHERE key_id = ?1 LIMIT ?2"),
            params![key_id, limit],
        )
    }

    fn count_messages_under_key(&self, key_id: u32) -> Result<u64> {
        self.count(
            "SELECT count(*) FROM memory_messages WHERE key_id = ?1",
            key_id,
        )
    }

    fn count_sessions_under_key(&self, key_id: u32) -> Result<u64> {
        self.count(
            "SELECT count(*) FROM memory_sessions WHERE key_id = ?1",
            key_id,
        )
    }

    fn key_usage(&self) -> Result<Vec<(u32, u64)>> {
        self.0
            .prepare_cached(
                "SELECT key_id, count(*) FROM memory_messages GROUP BY key_id ORDER BY key_id",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
                })?
                .collect()
            })
            .map_err(sqlite_err)
    }

    fn key_check(&self, key_id: u32) -> Result<Option<Vec<u8>>> {
        self.0
            .prepare_cached("SELECT check_tag FROM memory_keys WHERE key_id = ?1")
            .and_then(|mut st| st.query_row([key_id], |r| r.get(0)).optional())
            .map_err(sqlite_err)
    }

    fn key_checks(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.0
            .prepare_cached("SELECT key_id, check_tag FROM memory_keys ORDER BY key_id")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)))?
                    .collect()
            })
            .map_err(sqlite_err)
    }
}

impl MemoryWrite for Sql<'_> {
    fn next_session_id(&self) -> Result<i64> {
        Ok(self.sequence("memory_sessions")? + 1)
    }

    fn next_message_id(&self) -> Result<i64> {
        Ok(self.sequence("memory_messages")? + 1)
    }

    fn insert_session(&self, s: &NewSession<'_>) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO memory_sessions (id, tenant_id, user_id, session_key, created_at,
                     updated_at, message_count, last_message_id, mac, key_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.id,
                    s.tenant,
                    s.user,
                    s.session_key,
                    s.created_at,
                    s.seal.message_count,
                    s.seal.last_message_id,
                    s.seal.mac,
                    s.seal.key_id
                ])
            })
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn seal_session(&self, id: i64, updated_at: Option<i64>, seal: &SessionSeal<'_>) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE memory_sessions SET updated_at = coalesce(?1, updated_at),
                     message_count = ?2, last_message_id = ?3, mac = ?4, key_id = ?5
                 WHERE id = ?6",
            )
            .and_then(|mut st| {
                st.execute(params![
                    updated_at,
                    seal.message_count,
                    seal.last_message_id,
                    seal.mac,
                    seal.key_id,
                    id
                ])
            })
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn insert_message(&self, m: &NewMessageRow<'_>) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO memory_messages (id, session_id, tenant_id, role, content, metadata,
                     tokens, created_at, key_id, prev_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    m.id,
                    m.session_id,
                    m.tenant,
                    m.role,
                    m.content,
                    m.metadata,
                    m.tokens,
                    m.created_at,
                    m.key_id,
                    m.prev_id
                ])
            })
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn reseal_message(&self, m: &MessageSeal<'_>) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE memory_messages SET content = ?1, metadata = ?2, key_id = ?3,
                 prev_id = ?4 WHERE id = ?5",
            )
            .and_then(|mut st| {
                st.execute(params![m.content, m.metadata, m.key_id, m.prev_id, m.id])
            })
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn delete_session(&self, session_id: i64, tenant: &str) -> Result<u64> {
        let messages = self
            .0
            .prepare_cached("DELETE FROM memory_messages WHERE session_id = ?1 AND tenant_id = ?2")
            .and_then(|mut st| st.execute(params![session_id, tenant]))
            .map_err(sqlite_err)?;
        self.0
            .prepare_cached("DELETE FROM memory_sessions WHERE id = ?1 AND tenant_id = ?2")
            .and_then(|mut st| st.execute(params![session_id, tenant]))
            .map_err(sqlite_err)?;
        Ok(messages as u64)
    }

    fn insert_key_check(&self, key_id: u32, check: &[u8]) -> Result<()> {
        self.0
            .prepare_cached("INSERT INTO memory_keys (key_id, check_tag) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key_id, check]))
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn delete_key_check(&self, key_id: u32) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM memory_keys WHERE key_id = ?1")
            .and_then(|mut st| st.execute([key_id]))
            .map_err(sqlite_err)?;
        Ok(())
    }
}
