//! Conversation memory: encrypted messages in sessions owned by (tenant, user).
//!
//! This module is the domain: validation, token counting, encryption, integrity. Storage is a
//! [`backend::MemoryBackend`] (SQLite by default, [`backend::SqliteMemory`]); the domain holds
//! no SQL (docs/architecture.md).
//!
//! Invariants:
//! - Every query is scoped by tenant (and by user for session operations): the SQL always
//!   carries `tenant_id = ?`, and each ciphertext's associated data binds it to its tenant,
//!   session id and message id, so even a row copied by hand into another tenant or session
//!   fails to decrypt.
//! - `content` and `metadata` are only ever written encrypted (AES-SIV, randomized, under the
//!   keyring's primary key). Ids, role, token counts and timestamps are in clear, for indexing,
//!   but authenticated: each message's ciphertext binds its role, tokens, time and the id of the
//!   previous message of its session, and each session row carries a keyed tag over its owner,
//!   times, message count and newest message id (`integrity.rs`). An edited clear column, a
//!   moved row, or a deleted message makes the read fail with `MemoryError::Tampered`; nothing
//!   tampered is ever returned as good. Rows written before this existed are read as legacy rows
//!   (content authenticated, clear columns not) until `rotate` upgrades them.
//! - The keyring is checked when the store opens: a key that differs from the key of the same
//!   id this database was written with is refused (`CryptoError::KeyMismatch`).
//! - Deletes are hard: `secure_delete` zeroes freed pages, and a `wal_checkpoint(TRUNCATE)`
//!   follows so the -wal file does not keep the deleted frames.
//! - Writes run in one backend transaction holding the write lock (SQLite: `Store::write`,
//!   `BEGIN IMMEDIATE`, retried on `SQLITE_BUSY`), so many processes may append to one file at
//!   once.
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

pub mod backend;
mod group;
mod integrity;
pub mod llm;
mod model;
mod token;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::{SystemWallClock, WallClock};
use crate::crypto::{field, Keyring};
use crate::error::{CryptoError, Error, MemoryError, Result};
use crate::store::{Store, StoreOptions};
use crate::telemetry::metrics;
#[cfg(feature = "postgres")]
pub use backend::PgMemory;
pub use backend::{AnyMemory, MemoryTable, SqliteMemory};
use backend::{
    MemoryBackend, MemoryRead, MemoryWrite, MessageSeal, NewMessageRow, NewSession, SessionSeal,
};
use integrity::{message_ad, message_context, tampered, RawRow, SessionState};

pub use llm::{format_passages, messages_to_json, passages_from_json, ContextPassage, LlmMessage};
pub use model::{Message, NewMessage, SessionInfo, SessionRef};

pub use group::{CommitStats, MAX_BATCH as MAX_COMMIT_BATCH};
pub use token::{CharEstimate, TokenCounter};

const MESSAGES: &str = "memory_messages";
const MAX_ID_LEN: usize = 256;
const MAX_ROLE_LEN: usize = 64;

/// Messages one history page holds when the caller does not say (the Python door's default).
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Sessions one listing page holds when the caller does not say (the Python door's default).
pub const DEFAULT_SESSIONS_LIMIT: u32 = 100;
/// Messages one rotation batch re-encrypts when the caller does not say (the Python door's
/// default).
pub const DEFAULT_ROTATE_BATCH: u32 = 1000;

/// The system wall clock, under its former name.
#[deprecated(note = "use keel::clock::SystemWallClock (a WallClock)")]
pub type SystemClock = crate::clock::SystemWallClock;

/// Settings of a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// How the SQLite file is opened (by [`MemoryStore::open`]; other backends ignore it).
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

/// The settings of [`MemoryOptions`] a front door may give, each `None` for the core's default
/// (the C door's zero fields and the Python door's `None` arguments both arrive as `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySettings {
    /// [`StoreOptions::busy_timeout`].
    pub busy_timeout: Option<std::time::Duration>,
    /// [`StoreOptions::pool_size`].
    pub pool_size: Option<u32>,
    /// [`StoreOptions::synchronous`].
    pub synchronous: Option<crate::store::Synchronous>,
    /// [`MemoryOptions::max_content_bytes`].
    pub max_content_bytes: Option<usize>,
    /// [`MemoryOptions::max_metadata_bytes`].
    pub max_metadata_bytes: Option<usize>,
}

impl From<MemorySettings> for MemoryOptions {
    fn from(s: MemorySettings) -> Self {
        let d = Self::default();
        Self {
            store: StoreOptions {
                busy_timeout: s.busy_timeout.unwrap_or(d.store.busy_timeout),
                pool_size: s.pool_size.unwrap_or(d.store.pool_size),
                synchronous: s.synchronous.unwrap_or(d.store.synchronous),
                ..d.store
            },
            max_content_bytes: s.max_content_bytes.unwrap_or(d.max_content_bytes),
            max_metadata_bytes: s.max_metadata_bytes.unwrap_or(d.max_metadata_bytes),
        }
    }
}

/// Encrypted conversation memory over a storage [`MemoryBackend`] (SQLite by default).
/// `Send + Sync`; share it (e.g. in an `Arc`) across threads.
pub struct MemoryStore<B: MemoryBackend = SqliteMemory> {
    backend: B,
    keyring: RwLock<Arc<Keyring>>,
    counter: Arc<dyn TokenCounter>,
    clock: Arc<dyn WallClock>,
    options: MemoryOptions,
    /// Rotation resumes after this message id (rows are re-encrypted in id order). Only a hint:
    /// a pass that finds nothing after it starts over from 0 before reporting completion.
    rotate_cursor: AtomicI64,
    /// Bumped (under the keyring's write lock) by every `set_keyring`.
    keyring_generation: AtomicU64,
    /// The keyring generation whose primary was last checked against (or given) its check value
    /// in `memory_keys`, so that appends check a new keyring's primary once, not every time.
    checked_generation: AtomicU64,
    /// Concurrent appends wait here to share a write transaction (`group.rs`).
    group: group::GroupCommit,
}

impl<B: MemoryBackend> std::fmt::Debug for MemoryStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("backend", &self.backend.location())
            .field("keyring", &self.keyring())
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// A span named after the operation, with counts (never content or ids of tenants, users or
/// sessions). `$sql` is the statement kind it mostly runs (`keel.memory.statement`); the
/// database's own client spans (`db.system.name`, ...) are its children, opened by the backend.
macro_rules! span {
    ($name:literal, $sql:literal) => {
        tracing::info_span!(
            $name,
            keel.memory.statement = $sql,
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

/// A message checked and counted, ready to be encrypted and inserted: the message and its
/// token count.
type Prepared<'a> = (&'a NewMessage, u32);

impl MemoryStore<SqliteMemory> {
    /// Opens (creating if needed) the SQLite memory database at `path`, with the given keyring.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        keyring: impl Into<Arc<Keyring>>,
        options: MemoryOptions,
    ) -> Result<Self> {
        let _span = span!("memory.open", "open").entered();
        let backend = SqliteMemory::open(path, options.store.clone())?;
        Self::with_backend(backend, keyring, options)
    }

    /// Memory on an already open [`Store`] (sharing its connection pool, e.g. with the API keys
    /// and the audit log of an `Engine`); runs the memory schema's migrations.
    pub fn on_store(
        store: Store,
        keyring: impl Into<Arc<Keyring>>,
        options: MemoryOptions,
    ) -> Result<Self> {
        Self::with_backend(SqliteMemory::new(store), keyring, options)
    }

    /// The underlying store (for maintenance and tests).
    pub fn store(&self) -> &Store {
        self.backend.store()
    }
}

impl<B: MemoryBackend> MemoryStore<B> {
    /// Memory over any backend; the keyring is checked against the check values the backend
    /// holds (a differing key of a known id is `CryptoError::KeyMismatch`).
    pub fn with_backend(
        backend: B,
        keyring: impl Into<Arc<Keyring>>,
        options: MemoryOptions,
    ) -> Result<Self> {
        let keyring = keyring.into();
        integrity::check_keyring(&backend, &keyring)?;
        Ok(Self {
            backend,
            keyring_generation: AtomicU64::new(1),
            checked_generation: AtomicU64::new(1),
            keyring: RwLock::new(keyring),
            counter: Arc::new(CharEstimate),
            clock: Arc::new(SystemWallClock),
            options,
            rotate_cursor: AtomicI64::new(0),
            group: Default::default(),
        })
    }

    /// The same store with its backend behind [`AnyMemory`], the type an [`crate::Engine`]
    /// hands out, so that memories opened alone and built by an engine are one type.
    pub fn into_any(self) -> MemoryStore<AnyMemory> {
        MemoryStore {
            backend: Arc::new(self.backend),
            keyring: self.keyring,
            counter: self.counter,
            clock: self.clock,
            options: self.options,
            rotate_cursor: self.rotate_cursor,
            keyring_generation: self.keyring_generation,
            checked_generation: self.checked_generation,
            group: self.group,
        }
    }

    /// Replaces the token counter used when a message carries no count.
    pub fn with_token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = counter;
        self
    }

    /// Replaces the wall clock that timestamps messages and sessions (default
    /// [`SystemWallClock`]); a monotonic [`Clock`](crate::Clock) is refused at compile time.
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The storage backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The current keyring.
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs a new keyring, e.g. one with a new primary key ([`Keyring::with_key`]). New
    /// messages use its primary at once; [`MemoryStore::rotate`] re-encrypts the old ones.
    /// Its keys are checked against the database's check values lazily: the next append (or
    /// rotation batch) verifies its primary, and a read that fails names a mismatched key
    /// (`CryptoError::KeyMismatch`).
    pub fn set_keyring(&self, keyring: impl Into<Arc<Keyring>>) {
        let mut guard = self.keyring.write().unwrap_or_else(|e| e.into_inner());
        *guard = keyring.into();
        self.keyring_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The keyring and its generation, read together.
    fn keyring_now(&self) -> (Arc<Keyring>, u64) {
        let guard = self.keyring.read().unwrap_or_else(|e| e.into_inner());
        (
            Arc::clone(&guard),
            self.keyring_generation.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` on one snapshot: the session row and its messages must agree, or a concurrent
    /// append would look like tampering.
    fn snapshot<T>(
        &self,
        table: MemoryTable,
        f: impl FnMut(&dyn MemoryRead) -> Result<T>,
    ) -> Result<T> {
        backend::read(&self.backend, table, f)
    }

    /// Runs `f` in one write transaction (it may run again after a busy retry).
    fn transaction<T>(
        &self,
        table: MemoryTable,
        f: impl FnMut(&dyn MemoryWrite) -> Result<T>,
    ) -> Result<T> {
        backend::write(&self.backend, table, f)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
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
        Ok((msg, tokens))
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
        metrics::start(metrics::Op::MemoryAppend).finish(self.append_many_measured(at, msgs))
    }

    fn append_many_measured(&self, at: &SessionRef<'_>, msgs: &[NewMessage]) -> Result<Vec<i64>> {
        let span = span!("memory.append", "INSERT");
        span.record("keel.memory.messages", msgs.len() as i64);
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
        let append = group::Append {
            at: *at,
            msgs: &prepared,
            now,
        };
        let outcome = self
            .group
            .submit(append, self.backend.write_concurrency(), |batch| {
                self.commit_batch(batch)
            })?;
        let bytes = prepared.iter().map(|p| p.0.content.len()).sum();
        metrics::messages_stored(prepared.len(), bytes, outcome.new_session);
        Ok(outcome.ids)
    }

    /// How many write transactions committed appends, and how many appends they held, since
    /// the store was opened (by this process). Concurrent appends share transactions (group
    /// commit, docs/memory.md): under load `transactions` grows slower than `appends`.
    pub fn commit_stats(&self) -> CommitStats {
        self.group.stats()
    }

    /// Commits a batch of appends in as few transactions as it can, and returns each append's
    /// own result, in order.
    ///
    /// The appends run in one transaction, grouped by session (stable: appends to one session
    /// keep their order; PostgreSQL sessions are then locked in one order by every batch, so
    /// two batches cannot deadlock). An append refused for a reason of its own (another user's
    /// session, a tampered session, ...) is refused before it writes anything: it gets its
    /// error and the others go on in the same transaction (what it saw was the committed state
    /// plus the appends before it, what a lone append at that moment would have seen). One that
    /// fails while writing (rare: it may have written part of itself) aborts the transaction,
    /// gets its error, and the batch runs again without it. A failure of the
    /// transaction itself (the database busy past its deadline, unreachable, ...) is every
    /// append's error: none of them is acknowledged.
    fn commit_batch(&self, batch: &[group::Append<'_>]) -> Vec<Result<group::Outcome>> {
        let mut results: Vec<Option<Result<group::Outcome>>> = batch.iter().map(|_| None).collect();
        let mut live: Vec<usize> = (0..batch.len()).collect();
        live.sort_by(|&a, &b| {
            (batch[a].at.tenant, batch[a].at.session)
                .cmp(&(batch[b].at.tenant, batch[b].at.session))
        });
        while !live.is_empty() {
            // The keyring is read inside the write transaction: `retire_key` swaps it while
            // holding the same database write lock, so an append can never commit rows under a
            // key that was retired after the append started.
            let mut generation = 0;
            let mut failed = None;
            let committed = self.transaction(MemoryTable::Messages, |tx| {
                failed = None;
                let keyring;
                (keyring, generation) = self.keyring_now();
                // A keyring installed by `set_keyring`: its primary is checked against (or
                // given) its check value with its first append, so nothing is written under a
                // wrong key.
                if self.checked_generation.load(Ordering::Relaxed) != generation {
                    integrity::ensure_check(tx, &keyring, keyring.primary_id(), false)?;
                }
                let mut out = Vec::with_capacity(live.len());
                for (pos, &i) in live.iter().enumerate() {
                    let a = &batch[i];
                    // Refused before writing anything (another user's session, tampered, ...):
                    // its own error, and the batch goes on.
                    let target = match append_target(tx, &keyring, &a.at, a.now) {
                        Ok(target) => target,
                        Err(e @ Error::Store(_)) => return Err(e),
                        Err(e) => {
                            out.push(Err(e));
                            continue;
                        }
                    };
                    match insert_messages(tx, &keyring, &a.at, a.msgs, a.now, target) {
                        Ok(ids) => out.push(Ok(group::Outcome {
                            ids,
                            new_session: target.4,
                        })),
                        Err(e) => {
                            if !matches!(e, Error::Store(_)) {
                                failed = Some(pos);
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(out)
            });
            match (committed, failed) {
                (Ok(outcomes), _) => {
                    self.checked_generation.store(generation, Ordering::Relaxed);
                    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
                    if stored > 0 {
                        self.group.committed(stored);
                    }
                    for (&i, outcome) in live.iter().zip(outcomes) {
                        results[i] = Some(outcome);
                    }
                    live.clear();
                }
                (Err(e), Some(pos)) => {
                    let i = live.remove(pos);
                    results[i] = Some(Err(e));
                }
                (Err(e), None) if live.len() == 1 => {
                    results[live[0]] = Some(Err(e));
                    live.clear();
                }
                (Err(Error::Store(e)), None) => {
                    // The transaction failed (or its commit's fate is unknown: never run again
                    // here, the rows may be in): every append of it gets the error.
                    for i in live.drain(..) {
                        results[i] = Some(Err(e.clone().into()));
                    }
                }
                (Err(_), None) => {
                    // Before any append ran (the keyring check): nothing was written.
                    for i in live.drain(..) {
                        results[i] = self.commit_batch(std::slice::from_ref(&batch[i])).pop();
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(backend::not_run())))
            .collect()
    }

    /// The session, its tag checked (or, for a legacy session, its newest message checked to be
    /// legacy too).
    fn head(conn: &dyn MemoryRead, keyring: &Keyring, at: &SessionRef<'_>) -> Result<Head> {
        let row = conn
            .session(at.tenant, at.session)?
            .filter(|row| row.user == at.user)
            .ok_or(MemoryError::SessionNotFound)?;
        let backend::SessionRow {
            id,
            created_at,
            updated_at,
            message_count: count,
            last_message_id: last,
            mac,
            ..
        } = row;
        let sealed = match (mac, count, last) {
            (Some(mac), Some(count), Some(last)) => {
                let state = SessionState {
                    tenant: at.tenant,
                    user: at.user,
                    session: at.session,
                    id,
                    created_at,
                    updated_at,
                    message_count: count,
                    last_message_id: last,
                };
                state.verify(conn, keyring, &mac)?;
                Some((count, last))
            }
            (None, _, _) => {
                check_legacy_session(conn, id)?;
                None
            }
            _ => {
                return Err(tampered(
                    None,
                    "its message count or newest message id was removed",
                ))
            }
        };
        Ok(Head {
            id,
            created_at,
            updated_at,
            sealed,
        })
    }

    /// Authenticated rows of the session, newest first: `limit` rows after skipping `offset`,
    /// with the links between them, the session's newest message and its message count checked.
    fn verified_rows(
        conn: &dyn MemoryRead,
        keyring: &Keyring,
        at: &SessionRef<'_>,
        head: &Head,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Message>> {
        if offset > 0 {
            if let Some((count, last)) = head.sealed {
                let (n, newest) = conn.count_and_newest(head.id)?;
                check_count(count, last, n, newest)?;
            }
        }
        // One row more than asked for: the one the last returned row must link to.
        let mut rows = Vec::new();
        conn.messages(
            head.id,
            at.tenant,
            limit.checked_add(1),
            offset,
            &mut |raw| {
                rows.push(raw);
                Ok(true)
            },
        )?;
        let complete = rows.len() as i64 <= i64::from(limit);
        if offset == 0 {
            if let Some((_, last)) = head.sealed {
                check_newest(last, rows.first().map(|r| r.id))?;
            }
        }
        let mut chain = Chain::default();
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        for raw in rows.iter().take(limit as usize) {
            out.push(chain.accept(conn, keyring, at.tenant, raw)?);
        }
        match rows.get(limit as usize) {
            Some(next) => chain.link_to(next.id)?,
            None => chain.link_to(0)?,
        }
        // After the links, which name the message where a gap is: the count catches gaps
        // next to legacy rows, which have no link.
        if let (0, true, Some((count, _))) = (offset, complete, head.sealed) {
            if rows.len() as i64 != count {
                return Err(count_mismatch(count, rows.len() as i64));
            }
        }
        Ok(out)
    }

    /// The session's messages, newest first, skipping `offset` and returning at most `limit`.
    /// Fails with `MemoryError::Tampered` when the session or a message it covers was edited
    /// without the keyring, or a message is missing; nothing is returned then.
    pub fn history(&self, at: &SessionRef<'_>, limit: u32, offset: u32) -> Result<Vec<Message>> {
        metrics::start(metrics::Op::MemoryLoad).finish(self.history_measured(at, limit, offset))
    }

    fn history_measured(
        &self,
        at: &SessionRef<'_>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Message>> {
        let span = span!("memory.history", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let keyring = self.keyring();
        let out = self.snapshot(MemoryTable::Messages, |conn| {
            let head = Self::head(conn, &keyring, at)?;
            Self::verified_rows(conn, &keyring, at, &head, limit, offset)
        })?;
        span.record("keel.memory.messages", out.len() as i64);
        Ok(out)
    }

    /// The most recent messages whose token counts add up to at most `budget`, oldest first
    /// (ready to be sent to a model). Stops at the first message that does not fit, so the
    /// window is always a contiguous suffix of the conversation. That first message that does
    /// not fit is authenticated too (its token count decides the cut); integrity failures are
    /// `MemoryError::Tampered`, as for [`MemoryStore::history`].
    pub fn window(&self, at: &SessionRef<'_>, budget: u64) -> Result<Vec<Message>> {
        metrics::start(metrics::Op::MemoryLoad).finish(self.window_measured(at, budget))
    }

    fn window_measured(&self, at: &SessionRef<'_>, budget: u64) -> Result<Vec<Message>> {
        let span = span!("memory.window", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let keyring = self.keyring();
        let mut out = self.snapshot(MemoryTable::Messages, |conn| {
            let head = Self::head(conn, &keyring, at)?;
            let mut used = 0u64;
            let mut seen = 0i64;
            let mut chain = Chain::default();
            let mut out = Vec::new();
            let mut ended = true;
            conn.messages(head.id, at.tenant, None, 0, &mut |raw| {
                if seen == 0 {
                    if let Some((_, last)) = head.sealed {
                        check_newest(last, Some(raw.id))?;
                    }
                }
                seen += 1;
                // The row that does not fit is authenticated too (its token count decides
                // where the window ends), then left out.
                let msg = chain.accept(conn, &keyring, at.tenant, &raw)?;
                used += u64::from(msg.tokens);
                if used > budget {
                    ended = false;
                    return Ok(false);
                }
                out.push(msg);
                Ok(true)
            })?;
            if ended {
                chain.link_to(0)?;
                match head.sealed {
                    Some((count, _)) if count != seen => return Err(count_mismatch(count, seen)),
                    Some((_, last)) if seen == 0 => check_newest(last, None)?,
                    _ => {}
                }
            }
            Ok(out)
        })?;
        out.reverse();
        span.record("keel.memory.messages", out.len() as i64);
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
        metrics::start(metrics::Op::MemorySessions)
            .finish(self.sessions_measured(tenant, user, limit, offset))
    }

    fn sessions_measured(
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
        let keyring = self.keyring();
        let out = self.snapshot(MemoryTable::Sessions, |conn| {
            let rows = conn.sessions_of_user(tenant, user, limit, offset)?;
            let mut out = Vec::with_capacity(rows.len());
            for listed in rows {
                let row = &listed.row;
                let info = SessionInfo {
                    session: listed.session_key,
                    created_at_ms: row.created_at,
                    updated_at_ms: row.updated_at,
                    message_count: listed.messages as u64,
                };
                match (&row.mac, row.message_count, row.last_message_id) {
                    (Some(mac), Some(count), Some(last)) => {
                        let state = SessionState {
                            tenant,
                            user,
                            session: &info.session,
                            id: row.id,
                            created_at: info.created_at_ms,
                            updated_at: info.updated_at_ms,
                            message_count: count,
                            last_message_id: last,
                        };
                        state.verify(conn, &keyring, mac)?;
                        check_count(count, last, listed.messages, listed.newest.unwrap_or(0))?;
                    }
                    (None, _, _) => check_legacy_session(conn, row.id)?,
                    _ => {
                        return Err(tampered(
                            None,
                            "its message count or newest message id was removed",
                        ))
                    }
                }
                out.push(info);
            }
            Ok(out)
        })?;
        span.record("keel.memory.sessions", out.len() as i64);
        Ok(out)
    }

    /// The whole session as one JSON document (messages oldest first; metadata embedded as JSON):
    /// `{"tenant", "user", "session", "created_at_ms", "updated_at_ms", "messages": [{"id",
    /// "role", "content", "metadata", "tokens", "created_at_ms"}]}`.
    pub fn export(&self, at: &SessionRef<'_>) -> Result<String> {
        metrics::start(metrics::Op::MemoryLoad).finish(self.export_measured(at))
    }

    fn export_measured(&self, at: &SessionRef<'_>) -> Result<String> {
        let span = span!("memory.export", "SELECT");
        let _guard = span.enter();
        check_ref(at)?;
        let keyring = self.keyring();
        let (info, mut messages) = self.snapshot(MemoryTable::Messages, |conn| {
            let head = Self::head(conn, &keyring, at)?;
            let rows = Self::verified_rows(conn, &keyring, at, &head, u32::MAX, 0)?;
            Ok(((head.created_at, head.updated_at), rows))
        })?;
        messages.reverse();
        span.record("keel.memory.messages", messages.len() as i64);
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
        metrics::start(metrics::Op::MemoryDelete).finish(self.delete_session_measured(at))
    }

    fn delete_session_measured(&self, at: &SessionRef<'_>) -> Result<()> {
        let span = span!("memory.delete_session", "DELETE");
        let _guard = span.enter();
        check_ref(at)?;
        // Deleting needs no key and checks nothing: a user's data can always be erased.
        let deleted = self.transaction(MemoryTable::Sessions, |tx| {
            let sid = session_id(tx, at)?;
            tx.delete_session(sid, at.tenant)
        })?;
        span.record("keel.memory.messages", deleted as i64);
        self.backend.scrub()
    }

    /// Hard-deletes every session of a user in a tenant. Returns how many sessions were deleted.
    pub fn delete_user(&self, tenant: &str, user: &str) -> Result<u64> {
        metrics::start(metrics::Op::MemoryDelete).finish(self.delete_user_measured(tenant, user))
    }

    fn delete_user_measured(&self, tenant: &str, user: &str) -> Result<u64> {
        let span = span!("memory.delete_user", "DELETE");
        let _guard = span.enter();
        check_id("tenant", tenant)?;
        check_id("user", user)?;
        let sessions = self.transaction(MemoryTable::Sessions, |tx| {
            let ids = tx.session_ids_of_user(tenant, user)?;
            for &sid in &ids {
                tx.delete_session(sid, tenant)?;
            }
            Ok(ids.len() as u64)
        })?;
        span.record("keel.memory.sessions", sessions as i64);
        self.backend.scrub()?;
        Ok(sessions)
    }

    /// Retention: hard-deletes every session (of every tenant) whose last append is older than
    /// `idle`. Works in batches of 500 sessions per transaction so writers are never blocked
    /// long. Returns how many sessions were deleted.
    pub fn purge_idle(&self, idle: Duration) -> Result<u64> {
        metrics::start(metrics::Op::MemoryDelete).finish(self.purge_idle_measured(idle))
    }

    fn purge_idle_measured(&self, idle: Duration) -> Result<u64> {
        let span = span!("memory.purge_idle", "DELETE");
        let _guard = span.enter();
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let cutoff = self.now_ms().saturating_sub(idle_ms);
        let mut total = 0u64;
        loop {
            let n = self.transaction(MemoryTable::Sessions, |tx| {
                let rows = tx.idle_sessions(cutoff, 500)?;
                for (sid, tenant) in &rows {
                    tx.delete_session(*sid, tenant)?;
                }
                Ok(rows.len() as u64)
            })?;
            total += n;
            if n < 500 {
                break;
            }
        }
        span.record("keel.memory.sessions", total as i64);
        if total > 0 {
            self.backend.scrub()?;
        }
        Ok(total)
    }

    /// Key rotation, one batch: re-encrypts up to `batch` messages not under the primary key or
    /// still in the legacy format (written before clear columns were authenticated), in id
    /// order, and tags their sessions again with their newest message. Returns how many it
    /// re-encrypted; 0 means rotation is complete (checked by a pass over the whole table). Each
    /// batch commits on its own, so an interrupted rotation resumes where it stopped, in this
    /// process or another. A row that fails its integrity check stops it with
    /// `MemoryError::Tampered`: nothing tampered is re-encrypted as good.
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
        span.record("keel.memory.messages", n as i64);
        Ok(n)
    }

    /// One rotation batch over ids greater than `after`; returns (rows, last id seen). A row is
    /// rotated when it is under another key than the primary or of the legacy format; a session
    /// is sealed again (under the primary) with its newest message.
    fn rotate_after(&self, keyring: &Keyring, after: i64, batch: u32) -> Result<(u64, i64)> {
        let primary = keyring.primary_id();
        self.transaction(MemoryTable::Messages, |tx| {
            let rows = tx.messages_to_rotate(after, primary, field::FORMAT_BOUND, batch)?;
            integrity::ensure_check(tx, keyring, primary, false)?;
            let nonces = field::nonces(2 * rows.len())?;
            for (i, raw) in rows.iter().enumerate() {
                let opened = raw.open_checked(tx, keyring, &raw.tenant)?;
                let prev = match (opened.bound, raw.prev_id) {
                    (true, Some(prev)) => prev,
                    _ => tx.previous_id(raw.session_id, raw.id)?,
                };
                let ctx = message_context(
                    &raw.role,
                    raw.tokens,
                    raw.created_at,
                    prev,
                    raw.metadata.is_some(),
                );
                let coords = [raw.session_id, raw.id];
                let content = field::encrypt_bound_with_nonce(
                    keyring,
                    &opened.content,
                    &message_ad(&raw.tenant, "content", &coords),
                    &ctx,
                    &nonces[2 * i],
                )?;
                let meta = match &opened.metadata {
                    Some(m) => Some(field::encrypt_bound_with_nonce(
                        keyring,
                        m,
                        &message_ad(&raw.tenant, "metadata", &coords),
                        &ctx,
                        &nonces[2 * i + 1],
                    )?),
                    None => None,
                };
                tx.reseal_message(&MessageSeal {
                    id: raw.id,
                    content: &content,
                    metadata: meta.as_deref(),
                    key_id: primary,
                    prev_id: prev,
                })?;
                if tx.count_and_newest(raw.session_id)?.1 == raw.id {
                    reseal(tx, keyring, raw.session_id)?;
                }
            }
            let mut n = rows.len() as u64;
            if n < u64::from(batch) {
                // Sessions tagged under an old key whose messages need nothing (not expected:
                // a session is tagged with the key of its newest message; kept for safety).
                let stale = tx.sessions_tagged_under_other_key(primary, batch - n as u32)?;
                for sid in &stale {
                    reseal(tx, keyring, *sid)?;
                }
                n += stale.len() as u64;
            }
            let last = rows.last().map_or(after, |r| r.id);
            Ok((n, last))
        })
    }

    /// How many messages each key id encrypts, ascending by key id.
    pub fn key_usage(&self) -> Result<Vec<(u32, u64)>> {
        let _span = span!("memory.key_usage", "SELECT").entered();
        self.snapshot(MemoryTable::Messages, |conn| conn.key_usage())
    }

    /// Removes `key_id` from the keyring, the last step of a rotation, and its check value from
    /// the database. Fails with `CryptoError::InvalidKeyring` when `key_id` is not in the
    /// keyring or is its primary, and with `CryptoError::KeyInUse` while any message or session
    /// is still sealed under it.
    pub fn retire_key(&self, key_id: u32) -> Result<()> {
        let _span = span!("memory.retire_key", "SELECT").entered();
        // Counted and swapped under the database write lock, which every append holds while it
        // reads the keyring and inserts: no append can slip rows under `key_id` in between.
        // An unknown id or the primary is a keyring mistake, named before any scan.
        self.keyring().without_key(key_id)?;
        self.transaction(MemoryTable::Keys, |tx| {
            let rows = integrity::key_in_use(tx, key_id)?;
            if rows > 0 {
                return Err(CryptoError::KeyInUse { key_id, rows }.into());
            }
            let mut guard = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            let next = guard.without_key(key_id)?;
            tx.delete_key_check(key_id)?;
            *guard = Arc::new(next);
            Ok(())
        })
    }
}

/// A session as reads see it, after its tag was checked.
struct Head {
    id: i64,
    created_at: i64,
    updated_at: i64,
    /// (message count, newest message id) of a tagged session; None for a legacy session.
    sealed: Option<(i64, i64)>,
}

fn session_id(conn: &dyn MemoryRead, at: &SessionRef<'_>) -> Result<i64> {
    conn.session(at.tenant, at.session)?
        .filter(|row| row.user == at.user)
        .map(|row| row.id)
        .ok_or_else(|| MemoryError::SessionNotFound.into())
}

/// A session without a tag is legacy only while its newest message is legacy too: every
/// append and every rotation of a newest message tags its session.
fn check_legacy_session(conn: &dyn MemoryRead, sid: i64) -> Result<()> {
    let newest = conn.newest_content(sid)?;
    match newest {
        None => Err(tampered(None, "it has no messages")),
        Some(ct) if field::format_of(&ct).ok() != Some(field::FORMAT_RANDOMIZED) => {
            Err(tampered(None, "its integrity record was removed"))
        }
        Some(_) => Ok(()),
    }
}

fn count_mismatch(expected: i64, found: i64) -> Error {
    tampered(
        None,
        format!("it should hold {expected} messages but holds {found} (messages were deleted)"),
    )
}

/// The newest row read must be the session's recorded newest message.
fn check_newest(last: i64, first: Option<i64>) -> Result<()> {
    match first {
        Some(id) if id == last => Ok(()),
        Some(id) if id < last => Err(tampered(
            Some(last),
            "the session's newest message is missing (deleted or truncated)",
        )),
        Some(id) => Err(tampered(
            Some(id),
            format!("it is newer than the session's recorded newest message {last}"),
        )),
        None => Err(tampered(
            Some(last),
            "the session's newest message is missing (deleted or truncated)",
        )),
    }
}

fn check_count(count: i64, last: i64, found: i64, newest: i64) -> Result<()> {
    check_newest(last, (newest != 0).then_some(newest))?;
    if found != count {
        return Err(count_mismatch(count, found));
    }
    Ok(())
}

/// Follows the `prev_id` links of consecutive rows read newest first.
#[derive(Default)]
struct Chain {
    /// The last accepted row and, if it is bound, the id it says comes before it.
    pending: Option<(i64, Option<i64>)>,
}

impl Chain {
    /// Authenticates `raw`, checks that the previous row read links to it, and decodes it.
    fn accept(
        &mut self,
        conn: &dyn MemoryRead,
        keyring: &Keyring,
        tenant: &str,
        raw: &RawRow,
    ) -> Result<Message> {
        let opened = raw.open_checked(conn, keyring, tenant)?;
        self.link_to(raw.id)?;
        self.pending = Some((raw.id, opened.bound.then_some(raw.prev_id.unwrap_or(-1))));
        Ok(Message {
            id: raw.id,
            role: raw.role.clone(),
            // Encrypted from a `String`, authenticated on the way back: always UTF-8.
            content: String::from_utf8(opened.content)
                .map_err(|_| CryptoError::DecryptionFailed)?,
            metadata: opened
                .metadata
                .map(String::from_utf8)
                .transpose()
                .map_err(|_| CryptoError::DecryptionFailed)?,
            tokens: raw.tokens,
            created_at_ms: raw.created_at,
        })
    }

    /// The row read after the pending one has id `older` (0: there is none, the session ends).
    fn link_to(&mut self, older: i64) -> Result<()> {
        match self.pending.take() {
            Some((id, Some(prev))) if prev != older => Err(tampered(
                Some(id),
                if prev > older {
                    format!("the message before it (id {prev}) is missing")
                } else {
                    format!("message {older} is not the one before it")
                },
            )),
            _ => Ok(()),
        }
    }
}

/// Tags a session again under the primary key, with its newest message (after its tag, if it
/// has one, was checked). Used by rotation.
fn reseal(tx: &dyn MemoryWrite, keyring: &Keyring, sid: i64) -> Result<()> {
    let record = tx
        .session_by_id(sid)?
        .ok_or_else(|| tampered(None, "its session row was removed"))?;
    let (tenant, session) = (&record.tenant, &record.session_key);
    let backend::SessionRow {
        user,
        created_at,
        updated_at,
        message_count: count,
        last_message_id: last,
        mac,
        ..
    } = record.row;
    let mut state = SessionState {
        tenant,
        user: &user,
        session,
        id: sid,
        created_at,
        updated_at,
        message_count: count.unwrap_or(0),
        last_message_id: last.unwrap_or(0),
    };
    let (n, newest) = tx.count_and_newest(sid)?;
    match (mac, count, last) {
        (Some(mac), Some(_), Some(_)) => {
            state.verify(tx, keyring, &mac)?;
            check_count(state.message_count, state.last_message_id, n, newest)?;
        }
        (None, _, _) => {
            // Legacy: what the rows say now becomes the record.
            state.message_count = n;
            state.last_message_id = newest;
        }
        _ => {
            return Err(tampered(
                None,
                "its message count or newest message id was removed",
            ))
        }
    }
    let tag = state.tag(keyring)?;
    tx.seal_session(
        sid,
        None,
        &SessionSeal {
            message_count: state.message_count,
            last_message_id: state.last_message_id,
            mac: &tag,
            key_id: keyring.primary_id(),
        },
    )
}

/// Where an append goes, as its read-only first phase found it: (session id, created_at,
/// message count, newest message id, new session?).
type Target = (i64, i64, i64, i64, bool);

/// The first phase of an append, which writes nothing: finds the session (or the id a new one
/// takes) and checks it may be extended. An error here leaves the transaction as it was, so a
/// batch goes on without this append.
fn append_target(
    tx: &dyn MemoryWrite,
    keyring: &Keyring,
    at: &SessionRef<'_>,
    now: i64,
) -> Result<Target> {
    let existing = tx.session(at.tenant, at.session)?.map(|r| {
        (
            r.id,
            r.user,
            r.created_at,
            r.updated_at,
            r.message_count,
            r.last_message_id,
            r.mac,
        )
    });
    // (session id, created_at, message count, newest message id, new session?)
    let (sid, created_at, count, prev, new) = match existing {
        // Another user's session: do not reveal that it exists.
        Some((_, owner, ..)) if owner != at.user => return Err(MemoryError::SessionNotFound.into()),
        Some((sid, _, created, updated, Some(count), Some(last), Some(mac))) => {
            // Checked before it is extended: an append must never re-tag a tampered session.
            let state = SessionState {
                tenant: at.tenant,
                user: at.user,
                session: at.session,
                id: sid,
                created_at: created,
                updated_at: updated,
                message_count: count,
                last_message_id: last,
            };
            state.verify(tx, keyring, &mac)?;
            (sid, created, count, last, false)
        }
        Some((sid, _, created, _, _, _, None)) => {
            // A legacy session: tagged from now on.
            check_legacy_session(tx, sid)?;
            let (count, newest) = tx.count_and_newest(sid)?;
            (sid, created, count, newest, false)
        }
        Some(_) => {
            return Err(tampered(
                None,
                "its message count or newest message id was removed",
            ))
        }
        None => {
            // The backend holds the write lock: nobody else can take this id.
            (tx.next_session_id()?, now, 0, 0, true)
        }
    };
    Ok((sid, created_at, count, prev, new))
}

/// The second phase of an append: reserves the ids, tags the session and inserts the messages.
/// An error here may leave part of the append written: the transaction must not commit.
fn insert_messages(
    tx: &dyn MemoryWrite,
    keyring: &Keyring,
    at: &SessionRef<'_>,
    msgs: &[Prepared<'_>],
    now: i64,
    (sid, created_at, count, prev, new): Target,
) -> Result<Vec<i64>> {
    // The ids are needed before the insert, for the associated data. The backend reserves
    // them (nobody else can take them) and never reuses an id.
    let reserved = tx.reserve_message_ids(msgs.len())?;
    let newest = *reserved
        .last()
        .ok_or_else(|| Error::InvalidArgument("no messages to append".into()))?;
    let n = msgs.len() as i64;
    let state = SessionState {
        tenant: at.tenant,
        user: at.user,
        session: at.session,
        id: sid,
        created_at,
        updated_at: now,
        message_count: count + n,
        last_message_id: newest,
    };
    let tag = state.tag(keyring)?;
    let key_id = keyring.primary_id();
    let seal = SessionSeal {
        message_count: state.message_count,
        last_message_id: state.last_message_id,
        mac: &tag,
        key_id,
    };
    if new {
        tx.insert_session(&NewSession {
            id: sid,
            tenant: at.tenant,
            user: at.user,
            session_key: at.session,
            created_at: now,
            seal,
        })?;
    } else {
        tx.seal_session(sid, Some(now), &seal)?;
    }
    let mut ids = Vec::with_capacity(msgs.len());
    let nonces = field::nonces(2 * msgs.len())?;
    let mut prev = prev;
    for (i, (&(msg, tokens), &id)) in msgs.iter().zip(&reserved).enumerate() {
        let row = [sid, id];
        let ctx = message_context(&msg.role, tokens, now, prev, msg.metadata.is_some());
        let content = field::encrypt_bound_with_nonce(
            keyring,
            msg.content.as_bytes(),
            &message_ad(at.tenant, "content", &row),
            &ctx,
            &nonces[2 * i],
        )?;
        let meta = match &msg.metadata {
            Some(m) => Some(field::encrypt_bound_with_nonce(
                keyring,
                m.as_bytes(),
                &message_ad(at.tenant, "metadata", &row),
                &ctx,
                &nonces[2 * i + 1],
            )?),
            None => None,
        };
        tx.insert_message(&NewMessageRow {
            id,
            session_id: sid,
            tenant: at.tenant,
            role: &msg.role,
            content: &content,
            metadata: meta.as_deref(),
            tokens,
            created_at: now,
            key_id,
            prev_id: prev,
        })?;
        ids.push(id);
        prev = id;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
