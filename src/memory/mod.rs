//! Conversation memory: encrypted messages in sessions owned by (tenant, user), on SQLite.
//!
//! Invariants:
//! - Every query is scoped by tenant (and by user for session operations): the SQL always
//!   carries `tenant_id = ?`, and each ciphertext's associated data binds it to its tenant,
//!   session id and message id, so even a row copied by hand into another tenant or session
//!   fails to decrypt.
//! - `content` and `metadata` are only ever written encrypted (AES-SIV, randomized, under the
//!   keyring's primary key). Ids, role, token counts and timestamps are in clear, for indexing.
//! - Deletes are hard: `secure_delete` zeroes freed pages, and a `wal_checkpoint(TRUNCATE)`
//!   follows so the -wal file does not keep the deleted frames.
//! - Writes go through `Store::write` (`BEGIN IMMEDIATE`, retried on `SQLITE_BUSY`), so many
//!   processes may append to one file at once.
//! - Spans carry counts and ids of rows, never content, metadata, tenant, user or session ids.
//!
//! docs/memory.md explains the decisions.
//!
//! ```
//! use keel::{Keyring, MemoryOptions, MemoryStore, NewMessage, SessionRef};
//!
//! # fn main() -> keel::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("keel-doc-memory-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let keys = Keyring::generate()?; // in production: Keyring::from_env("KEEL_KEYRING")
//! let mem = MemoryStore::open(dir.join("memory.db"), keys, MemoryOptions::default())?;
//! let at = SessionRef::new("acme", "alice", "session-1");
//! mem.append(&at, &NewMessage::new("user", "Hello!").with_metadata(r#"{"channel":"voice"}"#))?;
//! mem.append(&at, &NewMessage::new("assistant", "Hi Alice, how can I help?"))?;
//! let newest_first = mem.history(&at, 50, 0)?;
//! assert_eq!(newest_first[0].role, "assistant");
//! let prompt = mem.window(&at, 3000)?; // oldest first, within 3000 tokens
//! assert_eq!(prompt.len(), 2);
//! mem.delete_session(&at)?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

mod model;
mod token;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::clock::Clock;
use crate::crypto::{self, field, Ad, Keyring};
use crate::error::{CryptoError, Error, MemoryError, Result};
use crate::store::{sqlite_err, Store, StoreOptions};

pub use model::{Message, NewMessage, SessionInfo, SessionRef};
pub use token::{CharEstimate, TokenCounter};

const MESSAGES: &str = "memory_messages";
const MAX_ID_LEN: usize = 256;
const MAX_ROLE_LEN: usize = 64;

/// Wall-clock time (`SystemTime`) as a [`Clock`] whose origin is the Unix epoch; the default
/// clock of [`MemoryStore`]. Tests inject a `ManualClock` instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Settings of a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// How the SQLite file is opened.
    pub store: StoreOptions,
    /// Largest accepted message content, in bytes (default 1 MiB).
    pub max_content_bytes: usize,
    /// Largest accepted metadata document, in bytes (default 64 KiB).
    pub max_metadata_bytes: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            max_content_bytes: 1 << 20,
            max_metadata_bytes: 64 << 10,
        }
    }
}

/// Encrypted conversation memory. `Send + Sync`; share it (e.g. in an `Arc`) across threads.
pub struct MemoryStore {
    store: Store,
    keyring: RwLock<Arc<Keyring>>,
    counter: Arc<dyn TokenCounter>,
    clock: Arc<dyn Clock>,
    options: MemoryOptions,
    /// Rotation resumes after this message id (rows are re-encrypted in id order). Only a hint:
    /// a pass that finds nothing after it starts over from 0 before reporting completion.
    rotate_cursor: AtomicI64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("store", &self.store)
            .field("keyring", &self.keyring())
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// A span named after the operation, with OpenTelemetry db attributes and counts (never content
/// or ids of tenants, users or sessions).
macro_rules! span {
    ($name:literal, $sql:literal) => {
        tracing::debug_span!(
            $name,
            db.system.name = "sqlite",
            db.operation.name = $sql,
            keel.memory.messages = tracing::field::Empty,
            keel.memory.sessions = tracing::field::Empty,
        )
    };
}

fn check_id(name: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "{name} must be 1 to {MAX_ID_LEN} bytes (got {})",
            value.len()
        )));
    }
    Ok(())
}

fn check_ref(at: &SessionRef<'_>) -> Result<()> {
    check_id("tenant", at.tenant)?;
    check_id("user", at.user)?;
    check_id("session", at.session)
}

fn ad<'a>(tenant: &'a str, column: &'a str, row: &'a [i64; 2]) -> Ad<'a> {
    Ad {
        table: MESSAGES,
        column,
        tenant,
        row,
    }
}

/// A message checked and counted, ready to be encrypted and inserted.
struct Prepared<'a> {
    msg: &'a NewMessage,
    tokens: u32,
}

impl MemoryStore {
    /// Opens (creating if needed) the memory database at `path`, with the given keyring.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        keyring: impl Into<Arc<Keyring>>,
        options: MemoryOptions,
    ) -> Result<Self> {
        let _span = span!("memory.open", "open").entered();
        let store = Store::open(path, options.store.clone())?;
        Ok(Self {
            store,
            keyring: RwLock::new(keyring.into()),
            counter: Arc::new(CharEstimate),
            clock: Arc::new(SystemClock),
            options,
            rotate_cursor: AtomicI64::new(0),
        })
    }

    /// Replaces the token counter used when a message carries no count.
    pub fn with_token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = counter;
        self
    }

    /// Replaces the clock (its `now()` is read as time since the Unix epoch).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying store (for maintenance and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current keyring.
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs a new keyring, e.g. one with a new primary key ([`Keyring::with_key`]). New
    /// messages use its primary at once; [`MemoryStore::rotate`] re-encrypts the old ones.
    pub fn set_keyring(&self, keyring: impl Into<Arc<Keyring>>) {
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = keyring.into();
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis()).unwrap_or(i64::MAX)
    }

    fn prepare<'a>(&self, msg: &'a NewMessage) -> Result<Prepared<'a>> {
        if msg.role.is_empty() || msg.role.len() > MAX_ROLE_LEN {
            return Err(Error::InvalidArgument(format!(
                "role must be 1 to {MAX_ROLE_LEN} bytes (got {})",
                msg.role.len()
            )));
        }
        let max = self.options.max_content_bytes;
        if msg.content.len() > max {
            return Err(MemoryError::ContentTooLarge {
                size: msg.content.len(),
                max,
            }
            .into());
        }
        if let Some(meta) = &msg.metadata {
            let max = self.options.max_metadata_bytes;
            if meta.len() > max {
                return Err(MemoryError::InvalidMetadata(format!(
                    "{} bytes; the limit is {max}",
                    meta.len()
                ))
                .into());
            }
            // Only the position goes into the message, never the text.
            serde_json::from_str::<serde_json::Value>(meta).map_err(|e| {
                MemoryError::InvalidMetadata(format!(
                    "not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        }
        let tokens = msg
            .tokens
            .unwrap_or_else(|| self.counter.count(&msg.content));
        Ok(Prepared { msg, tokens })
    }

    /// Appends one message, creating the session on first use. Returns the message id.
    pub fn append(&self, at: &SessionRef<'_>, msg: &NewMessage) -> Result<i64> {
        self.append_many(at, std::slice::from_ref(msg))
            .map(|ids| ids[0])
    }

    /// Appends messages in order, atomically (all or none), creating the session on first use.
    /// Returns their ids. Appending to a session id that another user of the tenant owns fails
    /// with `SessionNotFound`.
    pub fn append_many(&self, at: &SessionRef<'_>, msgs: &[NewMessage]) -> Result<Vec<i64>> {
        let span = span!("memory.append", "INSERT");
        span.record("keel.memory.messages", msgs.len());
        let _guard = span.enter();
        check_ref(at)?;
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = msgs
            .iter()
            .map(|m| self.prepare(m))
            .collect::<Result<Vec<_>>>()?;
        let now = self.now_ms();
        // The keyring is read inside the write transaction: `retire_key` swaps it while holding
        // the same database write lock, so an append can never commit rows under a key that was
        // retired after the append started.
        self.store.write(|tx| {
            let keyring = self.keyring();
            insert_messages(tx, &keyring, at, &prepared, now)
        })
    }

    fn session_id(conn: &Connection, at: &SessionRef<'_>) -> Result<i64> {
        conn.prepare_cached(
            "SELECT id FROM memory_sessions WHERE tenant_id = ?1 AND session_key = ?2
             AND user_id = ?3",
        )
        .and_then(|mut st| {
            st.query_row(params![at.tenant, at.session, at.user], |r| r.get(0))
                .optional()
        })
        .map_err(sqlite_err)?
        .ok_or_else(|| MemoryError::SessionNotFound.into())
    }

    /// The session's messages, newest first, skipping `offset` and returning at most `limit`.
    pub fn history(&self, at: &SessionRef<'_>, limit: u32, offset: u32) -> Result<Vec<Message>> {
        let span = span!("memory.history", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let keyring = self.keyring();
        let out = self.store.read(|conn| {
            let sid = Self::session_id(conn, at)?;
            let mut st = conn
                .prepare_cached(
                    "SELECT id, role, content, metadata, tokens, created_at FROM memory_messages
                     WHERE session_id = ?1 AND tenant_id = ?2 ORDER BY id DESC LIMIT ?3 OFFSET ?4",
                )
                .map_err(sqlite_err)?;
            let mut rows = st
                .query(params![sid, at.tenant, limit, offset])
                .map_err(sqlite_err)?;
            let mut out = Vec::with_capacity(limit.min(1024) as usize);
            while let Some(row) = rows.next().map_err(sqlite_err)? {
                out.push(decode_row(&keyring, at.tenant, sid, row)?);
            }
            Ok(out)
        })?;
        span.record("keel.memory.messages", out.len());
        Ok(out)
    }

    /// The most recent messages whose token counts add up to at most `budget`, oldest first
    /// (ready to be sent to a model). Stops at the first message that does not fit, so the
    /// window is always a contiguous suffix of the conversation.
    pub fn window(&self, at: &SessionRef<'_>, budget: u64) -> Result<Vec<Message>> {
        let span = span!("memory.window", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let keyring = self.keyring();
        let mut out = self.store.read(|conn| {
            let sid = Self::session_id(conn, at)?;
            let mut st = conn
                .prepare_cached(
                    "SELECT id, role, content, metadata, tokens, created_at FROM memory_messages
                     WHERE session_id = ?1 AND tenant_id = ?2 ORDER BY id DESC",
                )
                .map_err(sqlite_err)?;
            let mut rows = st.query(params![sid, at.tenant]).map_err(sqlite_err)?;
            let mut used = 0u64;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sqlite_err)? {
                let tokens: u32 = row.get(4).map_err(sqlite_err)?;
                used += u64::from(tokens);
                if used > budget {
                    break;
                }
                out.push(decode_row(&keyring, at.tenant, sid, row)?);
            }
            Ok(out)
        })?;
        out.reverse();
        span.record("keel.memory.messages", out.len());
        Ok(out)
    }

    /// The user's sessions in the tenant, most recently updated first.
    pub fn sessions(
        &self,
        tenant: &str,
        user: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<SessionInfo>> {
        let span = span!("memory.sessions", "SELECT");
        let _guard = span.enter();
        check_id("tenant", tenant)?;
        check_id("user", user)?;
        let out = self.store.read(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT s.session_key, s.created_at, s.updated_at,
                            (SELECT count(*) FROM memory_messages m
                             WHERE m.session_id = s.id AND m.tenant_id = s.tenant_id)
                     FROM memory_sessions s WHERE s.tenant_id = ?1 AND s.user_id = ?2
                     ORDER BY s.updated_at DESC, s.id DESC LIMIT ?3 OFFSET ?4",
                )
                .map_err(sqlite_err)?;
            let rows = st
                .query_map(params![tenant, user, limit, offset], |r| {
                    Ok(SessionInfo {
                        session: r.get(0)?,
                        created_at_ms: r.get(1)?,
                        updated_at_ms: r.get(2)?,
                        message_count: r.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(sqlite_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite_err)
        })?;
        span.record("keel.memory.sessions", out.len());
        Ok(out)
    }

    /// The whole session as one JSON document (messages oldest first; metadata embedded as JSON):
    /// `{"tenant", "user", "session", "created_at_ms", "updated_at_ms", "messages": [{"id",
    /// "role", "content", "metadata", "tokens", "created_at_ms"}]}`.
    pub fn export(&self, at: &SessionRef<'_>) -> Result<String> {
        let span = span!("memory.export", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let info = self
            .store
            .read(|conn| {
                conn.query_row(
                    "SELECT created_at, updated_at FROM memory_sessions
                     WHERE tenant_id = ?1 AND session_key = ?2 AND user_id = ?3",
                    params![at.tenant, at.session, at.user],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(sqlite_err)
            })?
            .ok_or(MemoryError::SessionNotFound)?;
        let mut messages = self.history(at, u32::MAX, 0)?;
        messages.reverse();
        span.record("keel.memory.messages", messages.len());
        let messages: Vec<serde_json::Value> = messages
            .into_iter()
            .map(|m| {
                let metadata = match &m.metadata {
                    // Validated on append; a stored document is always JSON.
                    Some(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
                    None => serde_json::Value::Null,
                };
                serde_json::json!({
                    "id": m.id,
                    "role": m.role,
                    "content": m.content,
                    "metadata": metadata,
                    "tokens": m.tokens,
                    "created_at_ms": m.created_at_ms,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "tenant": at.tenant,
            "user": at.user,
            "session": at.session,
            "created_at_ms": info.0,
            "updated_at_ms": info.1,
            "messages": messages,
        });
        Ok(doc.to_string())
    }

    /// Hard-deletes a session and its messages (secure_delete, then a WAL checkpoint).
    pub fn delete_session(&self, at: &SessionRef<'_>) -> Result<()> {
        let span = span!("memory.delete_session", "DELETE");
        let _guard = span.enter();
        check_ref(at)?;
        let deleted = self.store.write(|tx| {
            let sid = Self::session_id(tx, at)?;
            delete_sessions(tx, at.tenant, &[sid])
        })?;
        span.record("keel.memory.messages", deleted);
        self.store.checkpoint_truncate()
    }

    /// Hard-deletes every session of a user in a tenant. Returns how many sessions were deleted.
    pub fn delete_user(&self, tenant: &str, user: &str) -> Result<u64> {
        let span = span!("memory.delete_user", "DELETE");
        let _guard = span.enter();
        check_id("tenant", tenant)?;
        check_id("user", user)?;
        let sessions = self.store.write(|tx| {
            let ids = ids_of(
                tx,
                "SELECT id FROM memory_sessions WHERE tenant_id = ?1 AND user_id = ?2",
                params![tenant, user],
            )?;
            delete_sessions(tx, tenant, &ids)?;
            Ok(ids.len() as u64)
        })?;
        span.record("keel.memory.sessions", sessions);
        self.store.checkpoint_truncate()?;
        Ok(sessions)
    }

    /// Retention: hard-deletes every session (of every tenant) whose last append is older than
    /// `idle`. Works in batches of 500 sessions per transaction so writers are never blocked
    /// long. Returns how many sessions were deleted.
    pub fn purge_idle(&self, idle: Duration) -> Result<u64> {
        let span = span!("memory.purge_idle", "DELETE");
        let _guard = span.enter();
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let cutoff = self.now_ms().saturating_sub(idle_ms);
        let mut total = 0u64;
        loop {
            let n = self.store.write(|tx| {
                let rows: Vec<(i64, String)> = {
                    let mut st = tx
                        .prepare_cached(
                            "SELECT id, tenant_id FROM memory_sessions
                             WHERE updated_at < ?1 LIMIT 500",
                        )
                        .map_err(sqlite_err)?;
                    let rows = st
                        .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(sqlite_err)?;
                    rows.collect::<rusqlite::Result<_>>().map_err(sqlite_err)?
                };
                for (sid, tenant) in &rows {
                    delete_sessions(tx, tenant, &[*sid])?;
                }
                Ok(rows.len() as u64)
            })?;
            total += n;
            if n < 500 {
                break;
            }
        }
        span.record("keel.memory.sessions", total);
        if total > 0 {
            self.store.checkpoint_truncate()?;
        }
        Ok(total)
    }

    /// Key rotation, one batch: re-encrypts up to `batch` messages not under the primary key,
    /// in id order. Returns how many it re-encrypted; 0 means rotation is complete (checked by a
    /// pass over the whole table). Each batch commits on its own, so an interrupted rotation
    /// resumes where it stopped, in this process or another.
    pub fn rotate(&self, batch: u32) -> Result<u64> {
        let span = span!("memory.rotate", "UPDATE");
        let _guard = span.enter();
        if batch == 0 {
            return Err(Error::InvalidArgument("batch must be at least 1".into()));
        }
        let keyring = self.keyring();
        let after = self.rotate_cursor.load(Ordering::Relaxed);
        let (mut n, mut last) = self.rotate_after(&keyring, after, batch)?;
        if n == 0 && after > 0 {
            (n, last) = self.rotate_after(&keyring, 0, batch)?;
        }
        self.rotate_cursor.store(last, Ordering::Relaxed);
        span.record("keel.memory.messages", n);
        Ok(n)
    }

    /// One rotation batch over ids greater than `after`; returns (rows, last id seen).
    fn rotate_after(&self, keyring: &Keyring, after: i64, batch: u32) -> Result<(u64, i64)> {
        let primary = i64::from(keyring.primary_id());
        self.store.write(|tx| {
            let mut rows = Vec::new();
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id, session_id, tenant_id, content, metadata FROM memory_messages
                         WHERE id > ?1 AND key_id != ?2 ORDER BY id LIMIT ?3",
                    )
                    .map_err(sqlite_err)?;
                let mut q = st
                    .query(params![after, primary, batch])
                    .map_err(sqlite_err)?;
                while let Some(r) = q.next().map_err(sqlite_err)? {
                    let id: i64 = r.get(0).map_err(sqlite_err)?;
                    let sid: i64 = r.get(1).map_err(sqlite_err)?;
                    let tenant: String = r.get(2).map_err(sqlite_err)?;
                    let content: Vec<u8> = r.get(3).map_err(sqlite_err)?;
                    let meta: Option<Vec<u8>> = r.get(4).map_err(sqlite_err)?;
                    rows.push((id, sid, tenant, content, meta));
                }
            }
            let mut up = tx
                .prepare_cached(
                    "UPDATE memory_messages SET content = ?1, metadata = ?2, key_id = ?3
                     WHERE id = ?4 AND tenant_id = ?5",
                )
                .map_err(sqlite_err)?;
            for (id, sid, tenant, content, meta) in &rows {
                let row = [*sid, *id];
                let c_ad = ad(tenant, "content", &row);
                let m_ad = ad(tenant, "metadata", &row);
                let content =
                    crypto::encrypt(keyring, &crypto::decrypt(keyring, content, &c_ad)?, &c_ad)?;
                let meta = match meta {
                    Some(m) => Some(crypto::encrypt(
                        keyring,
                        &crypto::decrypt(keyring, m, &m_ad)?,
                        &m_ad,
                    )?),
                    None => None,
                };
                up.execute(params![content, meta, primary, id, tenant])
                    .map_err(sqlite_err)?;
            }
            let last = rows.last().map_or(after, |r| r.0);
            Ok((rows.len() as u64, last))
        })
    }

    /// How many messages each key id encrypts, ascending by key id.
    pub fn key_usage(&self) -> Result<Vec<(u32, u64)>> {
        let _span = span!("memory.key_usage", "SELECT").entered();
        self.store.read(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT key_id, count(*) FROM memory_messages GROUP BY key_id ORDER BY key_id",
                )
                .map_err(sqlite_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
                })
                .map_err(sqlite_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite_err)
        })
    }

    /// Removes `key_id` from the keyring, the last step of a rotation. Fails with
    /// `CryptoError::KeyInUse` while any message is still encrypted under it.
    pub fn retire_key(&self, key_id: u32) -> Result<()> {
        let _span = span!("memory.retire_key", "SELECT").entered();
        // Counted and swapped under the database write lock, which every append holds while it
        // reads the keyring and inserts: no append can slip rows under `key_id` in between.
        self.store.write(|tx| {
            let rows: i64 = tx
                .query_row(
                    "SELECT count(*) FROM memory_messages WHERE key_id = ?1",
                    params![key_id],
                    |r| r.get(0),
                )
                .map_err(sqlite_err)?;
            if rows > 0 {
                return Err(CryptoError::KeyInUse {
                    key_id,
                    rows: rows as u64,
                }
                .into());
            }
            let mut guard = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            let next = guard.without_key(key_id)?;
            *guard = Arc::new(next);
            Ok(())
        })
    }
}

fn insert_messages(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    at: &SessionRef<'_>,
    msgs: &[Prepared<'_>],
    now: i64,
) -> Result<Vec<i64>> {
    let (sid, owner): (i64, String) = tx
        .prepare_cached(
            "INSERT INTO memory_sessions (tenant_id, user_id, session_key, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (tenant_id, session_key) DO UPDATE SET updated_at = excluded.updated_at
             RETURNING id, user_id",
        )
        .and_then(|mut st| {
            st.query_row(params![at.tenant, at.user, at.session, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(sqlite_err)?;
    if owner != at.user {
        // Another user's session: do not reveal that it exists. The rollback undoes the touch.
        return Err(MemoryError::SessionNotFound.into());
    }
    // The ids are needed before the insert, for the associated data. The write lock is held
    // (BEGIN IMMEDIATE), so nobody else can take them; AUTOINCREMENT keeps them unique forever.
    let last: i64 = tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'memory_messages'")
        .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
        .map_err(sqlite_err)?
        .unwrap_or(0);
    let key_id = i64::from(keyring.primary_id());
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO memory_messages
                (id, session_id, tenant_id, role, content, metadata, tokens, created_at, key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sqlite_err)?;
    let mut ids = Vec::with_capacity(msgs.len());
    let nonces = field::nonces(2 * msgs.len())?;
    for (i, p) in msgs.iter().enumerate() {
        let id = last + 1 + i as i64;
        let row = [sid, id];
        let content = field::encrypt_with_nonce(
            keyring,
            p.msg.content.as_bytes(),
            &ad(at.tenant, "content", &row),
            &nonces[2 * i],
        )?;
        let meta = match &p.msg.metadata {
            Some(m) => Some(field::encrypt_with_nonce(
                keyring,
                m.as_bytes(),
                &ad(at.tenant, "metadata", &row),
                &nonces[2 * i + 1],
            )?),
            None => None,
        };
        insert
            .execute(params![
                id, sid, at.tenant, p.msg.role, content, meta, p.tokens, now, key_id
            ])
            .map_err(sqlite_err)?;
        ids.push(id);
    }
    Ok(ids)
}

fn ids_of(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<i64>> {
    let mut st = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let rows = st.query_map(args, |r| r.get(0)).map_err(sqlite_err)?;
    rows.collect::<rusqlite::Result<Vec<i64>>>()
        .map_err(sqlite_err)
}

/// Deletes sessions (of one tenant) and their messages; returns the number of messages.
fn delete_sessions(tx: &Transaction<'_>, tenant: &str, ids: &[i64]) -> Result<u64> {
    let mut messages = 0u64;
    let mut del_msgs = tx
        .prepare_cached("DELETE FROM memory_messages WHERE session_id = ?1 AND tenant_id = ?2")
        .map_err(sqlite_err)?;
    let mut del_session = tx
        .prepare_cached("DELETE FROM memory_sessions WHERE id = ?1 AND tenant_id = ?2")
        .map_err(sqlite_err)?;
    for sid in ids {
        messages += del_msgs.execute(params![sid, tenant]).map_err(sqlite_err)? as u64;
        del_session
            .execute(params![sid, tenant])
            .map_err(sqlite_err)?;
    }
    Ok(messages)
}

fn decode_row(
    keyring: &Keyring,
    tenant: &str,
    sid: i64,
    row: &rusqlite::Row<'_>,
) -> Result<Message> {
    let id: i64 = row.get(0).map_err(sqlite_err)?;
    let coords = [sid, id];
    let content: Vec<u8> = row.get(2).map_err(sqlite_err)?;
    let content = crypto::decrypt(keyring, &content, &ad(tenant, "content", &coords))?;
    let metadata: Option<Vec<u8>> = row.get(3).map_err(sqlite_err)?;
    let metadata = match metadata {
        Some(m) => Some(crypto::decrypt(
            keyring,
            &m,
            &ad(tenant, "metadata", &coords),
        )?),
        None => None,
    };
    Ok(Message {
        id,
        role: row.get(1).map_err(sqlite_err)?,
        // Encrypted from a `String`, authenticated on the way back: always UTF-8.
        content: String::from_utf8(content).map_err(|_| CryptoError::DecryptionFailed)?,
        metadata: metadata
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| CryptoError::DecryptionFailed)?,
        tokens: row.get(4).map_err(sqlite_err)?,
        created_at_ms: row.get(5).map_err(sqlite_err)?,
    })
}

#[cfg(test)]
mod tests;
