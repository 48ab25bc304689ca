//! The storage seam of conversation memory: what a backend stores, and nothing more.
//!
//! [`MemoryStore`](super::MemoryStore) is the domain: it validates, counts tokens, encrypts,
//! binds every ciphertext to its place, tags sessions and checks all of it on the way back. A
//! [`MemoryBackend`] only keeps opaque rows: sessions, messages (clear columns plus ciphertext
//! blobs it never looks into), the integrity columns, and one key check value per key id. It
//! owns its schema and migrations; no type of its storage engine appears here.
//!
//! Invariants a backend must keep (the shared test suite in `memory/tests.rs` checks them):
//! - [`MemoryBackend::write`] runs its closure in one serialisable transaction that takes the
//!   write lock up front (SQLite: the database's; PostgreSQL: the session row's, taken by
//!   [`MemoryRead::session`] inside a write): everything it writes commits together or not at
//!   all, and the ids [`MemoryWrite::reserve_message_ids`] / [`MemoryWrite::next_session_id`]
//!   return cannot be taken by anyone else. The domain needs a message's id *before* the insert (it is
//!   part of the ciphertext's associated data). A backend may run the closure again after a
//!   transient conflict, so the closure has no effect outside the transaction.
//! - Ids are never reused, even after a delete: a ciphertext bound to an id can never become
//!   valid on a later row.
//! - [`MemoryBackend::read`] runs its closure on one consistent snapshot (the session row and its
//!   messages must agree, or a concurrent append would look like tampering), without taking the
//!   write lock.
//! - Every message query is scoped by `session_id` and `tenant`, as the domain asks.
//! - Deletes are hard; [`MemoryBackend::scrub`] then removes what the engine keeps of deleted
//!   rows outside its tables (SQLite: the WAL).
//!
//! To add a backend: implement the three traits over its client, run the suite in
//! `memory/tests.rs` against it (one `backend_suite!` line), and let the URL parser of the
//! engine build it for its scheme.

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgMemory;
pub use sqlite::SqliteMemory;

use crate::error::{Error, Result, StoreError};

/// A backend that returned `Ok` without running the closure it was given.
pub(crate) fn not_run() -> Error {
    StoreError::Pool("the memory backend returned without running the transaction".into()).into()
}

/// A session row as the domain reads it for an append or a read.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Backend id of the session, never reused.
    pub id: i64,
    /// The owner (`user_id`).
    pub user: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// Recorded message count (None on a session written before integrity tags).
    pub message_count: Option<i64>,
    /// Recorded newest message id (None on a legacy session).
    pub last_message_id: Option<i64>,
    /// The session's integrity tag (None on a legacy session).
    pub mac: Option<Vec<u8>>,
}

/// A session row with its place, as rotation reads it by id.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The tenant.
    pub tenant: String,
    /// The caller's session id (`session_key`).
    pub session_key: String,
    /// The rest of the row.
    pub row: SessionRow,
}

/// A session as listed for a user, with the counts the domain checks its tag against.
#[derive(Debug, Clone)]
pub struct ListedSession {
    /// The caller's session id.
    pub session_key: String,
    /// The rest of the row (its `user` is the user listed).
    pub row: SessionRow,
    /// How many messages of the tenant the session holds.
    pub messages: i64,
    /// The newest message id, if any.
    pub newest: Option<i64>,
}

/// A new session row.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    /// The id from [`MemoryWrite::next_session_id`].
    pub id: i64,
    /// The tenant.
    pub tenant: &'a str,
    /// The owner.
    pub user: &'a str,
    /// The caller's session id.
    pub session_key: &'a str,
    /// Creation time (also its first `updated_at`), ms since the Unix epoch.
    pub created_at: i64,
    /// The integrity columns.
    pub seal: SessionSeal<'a>,
}

/// The integrity columns of a session, rewritten by every append and by rotation.
#[derive(Debug, Clone, Copy)]
pub struct SessionSeal<'a> {
    /// Message count.
    pub message_count: i64,
    /// Newest message id.
    pub last_message_id: i64,
    /// The tag over the session's values.
    pub mac: &'a [u8],
    /// The key id of the tag.
    pub key_id: u32,
}

/// A message row as stored, not yet authenticated by the domain.
pub struct StoredMessage {
    /// Message id.
    pub id: i64,
    /// Session id.
    pub session_id: i64,
    /// Tenant (clear, for scoping).
    pub tenant: String,
    /// Role (clear).
    pub role: String,
    /// Content ciphertext.
    pub content: Vec<u8>,
    /// Metadata ciphertext.
    pub metadata: Option<Vec<u8>>,
    /// Token count (clear).
    pub tokens: u32,
    /// Ms since the Unix epoch (clear).
    pub created_at: i64,
    /// The previous message of the session (None on a legacy row).
    pub prev_id: Option<i64>,
}

/// A new message row: clear columns and the ciphertexts, borrowed (nothing is copied on the way
/// to the backend).
#[derive(Debug, Clone, Copy)]
pub struct NewMessageRow<'a> {
    /// The id from [`MemoryWrite::next_message_id`] (plus its place in the batch).
    pub id: i64,
    /// Session id.
    pub session_id: i64,
    /// Tenant.
    pub tenant: &'a str,
    /// Role.
    pub role: &'a str,
    /// Content ciphertext.
    pub content: &'a [u8],
    /// Metadata ciphertext.
    pub metadata: Option<&'a [u8]>,
    /// Token count.
    pub tokens: u32,
    /// Ms since the Unix epoch.
    pub created_at: i64,
    /// Key id of the ciphertexts.
    pub key_id: u32,
    /// The previous message of the session (0 for the first).
    pub prev_id: i64,
}

/// New ciphertexts and links of an existing message (rotation).
#[derive(Debug, Clone, Copy)]
pub struct MessageSeal<'a> {
    /// Message id.
    pub id: i64,
    /// Content ciphertext.
    pub content: &'a [u8],
    /// Metadata ciphertext.
    pub metadata: Option<&'a [u8]>,
    /// Key id of the ciphertexts.
    pub key_id: u32,
    /// The previous message of the session.
    pub prev_id: i64,
}

/// Reads, inside a snapshot or a write transaction.
pub trait MemoryRead {
    /// The session `session_key` of `tenant`, whoever owns it.
    fn session(&self, tenant: &str, session_key: &str) -> Result<Option<SessionRow>>;
    /// A session by id, with its place.
    fn session_by_id(&self, id: i64) -> Result<Option<SessionRecord>>;
    /// The user's sessions, most recently updated first (ties: higher id first).
    fn sessions_of_user(
        &self,
        tenant: &str,
        user: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<ListedSession>>;
    /// Ids of every session of the user.
    fn session_ids_of_user(&self, tenant: &str, user: &str) -> Result<Vec<i64>>;
    /// Up to `limit` (id, tenant) of sessions (of any tenant) last updated before `cutoff`.
    fn idle_sessions(&self, cutoff: i64, limit: u32) -> Result<Vec<(i64, String)>>;
    /// Up to `limit` ids of tagged sessions whose tag is not under `key_id`.
    fn sessions_tagged_under_other_key(&self, key_id: u32, limit: u32) -> Result<Vec<i64>>;
    /// (number of messages, newest message id or 0) of a session.
    fn count_and_newest(&self, session_id: i64) -> Result<(i64, i64)>;
    /// The id of the message before `id` in its session, or 0.
    fn previous_id(&self, session_id: i64, id: i64) -> Result<i64>;
    /// The content ciphertext of the session's newest message.
    fn newest_content(&self, session_id: i64) -> Result<Option<Vec<u8>>>;
    /// The session's messages of `tenant`, newest first, skipping `offset`, at most `limit`
    /// (None: all), handed to `visit` one by one until it returns `false`.
    fn messages(
        &self,
        session_id: i64,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
        visit: &mut dyn FnMut(StoredMessage) -> Result<bool>,
    ) -> Result<()>;
    /// Up to `limit` messages with id above `after`, in id order, whose key id is not `key_id`
    /// or whose content's first byte (its format) is not `format`.
    fn messages_to_rotate(
        &self,
        after: i64,
        key_id: u32,
        format: u8,
        limit: u32,
    ) -> Result<Vec<StoredMessage>>;
    /// Up to `limit` messages under `key_id`.
    fn messages_under_key(&self, key_id: u32, limit: u32) -> Result<Vec<StoredMessage>>;
    /// How many messages are under `key_id`.
    fn count_messages_under_key(&self, key_id: u32) -> Result<u64>;
    /// How many sessions are tagged under `key_id`.
    fn count_sessions_under_key(&self, key_id: u32) -> Result<u64>;
    /// How many messages each key id encrypts, ascending by key id.
    fn key_usage(&self) -> Result<Vec<(u32, u64)>>;
    /// The check value recorded for `key_id`.
    fn key_check(&self, key_id: u32) -> Result<Option<Vec<u8>>>;
    /// Every recorded check value, ascending by key id.
    fn key_checks(&self) -> Result<Vec<(u32, Vec<u8>)>>;
}

/// Writes, inside the transaction of [`MemoryBackend::write`].
pub trait MemoryWrite: MemoryRead {
    /// The id the next new session will take (stable until this transaction inserts one).
    fn next_session_id(&self) -> Result<i64>;
    /// The id the next new message will take (stable until this transaction inserts one; a
    /// batch takes consecutive ids from it).
    fn next_message_id(&self) -> Result<i64>;
    /// Ids for the `n` messages of a batch, ascending, each never handed out before and greater
    /// than every id of the session being appended to. The default takes `n` consecutive ids
    /// from [`MemoryWrite::next_message_id`] (a backend holding a database-wide write lock);
    /// a backend whose writers run concurrently (PostgreSQL) draws them from a sequence.
    fn reserve_message_ids(&self, n: usize) -> Result<Vec<i64>> {
        let first = self.next_message_id()?;
        Ok((0..n as i64).map(|i| first + i).collect())
    }
    /// Inserts a session.
    fn insert_session(&self, session: &NewSession<'_>) -> Result<()>;
    /// Rewrites a session's integrity columns, and its `updated_at` when given.
    fn seal_session(&self, id: i64, updated_at: Option<i64>, seal: &SessionSeal<'_>) -> Result<()>;
    /// Inserts a message.
    fn insert_message(&self, message: &NewMessageRow<'_>) -> Result<()>;
    /// Replaces a message's ciphertexts, key id and link.
    fn reseal_message(&self, message: &MessageSeal<'_>) -> Result<()>;
    /// Deletes a session of `tenant` and its messages; returns how many messages.
    fn delete_session(&self, session_id: i64, tenant: &str) -> Result<u64>;
    /// Records the check value of `key_id`.
    fn insert_key_check(&self, key_id: u32, check: &[u8]) -> Result<()>;
    /// Forgets the check value of `key_id`.
    fn delete_key_check(&self, key_id: u32) -> Result<()>;
}

/// The table a memory operation is about: the database span's `db.collection.name` (an
/// operation may also touch the others, e.g. an append rewrites its session row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryTable {
    /// `memory_sessions`: listing, deleting and purging conversations.
    Sessions,
    /// `memory_messages`: appends, history, windows, exports, key rotation.
    Messages,
    /// `memory_keys`: the keyring's check values.
    Keys,
}

impl MemoryTable {
    /// The table's name in both backends' schemas.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "memory_sessions",
            Self::Messages => "memory_messages",
            Self::Keys => "memory_keys",
        }
    }
}

/// A storage backend of conversation memory. `Send + Sync`: one is shared by every thread.
pub trait MemoryBackend: Send + Sync + 'static {
    /// Runs `f` on one consistent snapshot, without the write lock, for an operation about
    /// `table` (named on the database span).
    fn read(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryRead) -> Result<()>,
    ) -> Result<()>;
    /// Runs `f` in one write transaction (see the module docs) for an operation about `table`;
    /// commits when it returns `Ok`.
    fn write(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryWrite) -> Result<()>,
    ) -> Result<()>;
    /// After hard deletes: removes what the engine keeps of deleted rows outside its tables.
    fn scrub(&self) -> Result<()>;
    /// Where the data lives, for `Debug` output (a path or a URL without credentials).
    fn location(&self) -> String;
    /// How many write transactions of one store may usefully run at once: group commit
    /// (`memory/group.rs`) runs at most this many batches concurrently. 1 for a backend whose
    /// writers take one database-wide lock (SQLite); a server with row locks (PostgreSQL) runs
    /// several, on several connections.
    fn write_concurrency(&self) -> usize {
        1
    }
    /// The identity of the connection pool, for backends that have one (equal ids are one
    /// pool, e.g. an engine's memory, API keys and audit log).
    fn store_id(&self) -> Option<u64> {
        None
    }
}

/// A backend chosen at run time (by [`crate::Engine`] from its database URL): memory over it is
/// `MemoryStore<AnyMemory>`.
pub type AnyMemory = std::sync::Arc<dyn MemoryBackend>;

impl<B: MemoryBackend + ?Sized> MemoryBackend for std::sync::Arc<B> {
    fn read(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryRead) -> Result<()>,
    ) -> Result<()> {
        (**self).read(table, f)
    }

    fn write(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryWrite) -> Result<()>,
    ) -> Result<()> {
        (**self).write(table, f)
    }

    fn scrub(&self) -> Result<()> {
        (**self).scrub()
    }

    fn location(&self) -> String {
        (**self).location()
    }

    fn write_concurrency(&self) -> usize {
        (**self).write_concurrency()
    }

    fn store_id(&self) -> Option<u64> {
        (**self).store_id()
    }
}

/// Runs a closure returning a value through the object-safe [`MemoryBackend::read`].
pub(crate) fn read<B: MemoryBackend + ?Sized, T>(
    backend: &B,
    table: MemoryTable,
    mut f: impl FnMut(&dyn MemoryRead) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    backend.read(table, &mut |r| {
        out = Some(f(r)?);
        Ok(())
    })?;
    out.ok_or_else(not_run)
}

/// Runs a closure returning a value through the object-safe [`MemoryBackend::write`]. The
/// closure may run more than once (a retried transaction); the value of the committed run is
/// returned.
pub(crate) fn write<B: MemoryBackend + ?Sized, T>(
    backend: &B,
    table: MemoryTable,
    mut f: impl FnMut(&dyn MemoryWrite) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    backend.write(table, &mut |w| {
        out = Some(f(w)?);
        Ok(())
    })?;
    out.ok_or_else(not_run)
}
