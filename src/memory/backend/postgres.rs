//! The PostgreSQL memory backend: the `memory_*` tables of a [`PgStore`].
//!
//! Concurrency (the invariants of `backend/mod.rs`, without SQLite's database-wide lock):
//! - A write transaction first takes the shared advisory lock [`KEYS_LOCK`]; inside it,
//!   [`MemoryRead::session`] and [`MemoryRead::session_by_id`] lock the session row (`FOR
//!   UPDATE`). Appends to one session therefore serialise (its count, newest id and tag are
//!   read and rewritten by one writer at a time), while appends to different sessions run in
//!   parallel and share the server's group commit.
//! - Message ids come from a sequence ([`MemoryWrite::reserve_message_ids`]) *after* the
//!   session row is locked, so they grow in append order within a session, and are never
//!   handed out twice. A new session's id is drawn once per transaction and kept.
//! - Two transactions creating the same new session: the second fails on the unique key and is
//!   run again by the store, and then finds the session.
//! - Counting the rows under a key (`retire_key`) in a write takes [`KEYS_LOCK`] exclusively,
//!   waiting for every write in flight: no append can commit rows under a key between the count
//!   and the keyring swap (what SQLite's write lock gives).
//! - Reads run in one `REPEATABLE READ` snapshot.
//!
//! Deletes are hard (`DELETE`); PostgreSQL keeps dead row versions (ciphertexts only) until
//! vacuum reclaims them, which autovacuum does; [`MemoryBackend::scrub`] runs nothing.

use super::{
    ListedSession, MemoryBackend, MemoryRead, MemoryTable, MemoryWrite, MessageSeal, NewMessageRow,
    NewSession, SessionRecord, SessionRow, SessionSeal, StoredMessage,
};
use crate::error::Result;
use crate::store::postgres::{Mode, Tx};
use crate::store::{PgOptions, PgStore};

/// Advisory-lock key every memory write holds shared, and a key count holds exclusively.
const KEYS_LOCK: i64 = 0x6b65_656c_0000_0002;
const WRITE: Mode = Mode::Write("SELECT pg_advisory_xact_lock_shared(7738703049236938754)");
const _: () = assert!(KEYS_LOCK == 7_738_703_049_236_938_754);

/// Conversation memory in a PostgreSQL database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgMemory {
    store: PgStore,
}

impl PgMemory {
    /// Connects to `url`, migrating the schema if needed.
    pub fn open(url: &str, options: PgOptions) -> Result<Self> {
        Ok(Self::new(PgStore::open(url, options)?))
    }

    /// Memory in an open store (shared with API keys and the audit log).
    pub fn new(store: PgStore) -> Self {
        Self { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &PgStore {
        &self.store
    }
}

impl MemoryBackend for PgMemory {
    fn read(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryRead) -> Result<()>,
    ) -> Result<()> {
        self.store
            .transaction(Mode::Read, Some(table.as_str()), |tx| f(tx))
    }

    fn write(
        &self,
        table: MemoryTable,
        f: &mut dyn FnMut(&dyn MemoryWrite) -> Result<()>,
    ) -> Result<()> {
        self.store
            .transaction(WRITE, Some(table.as_str()), |tx| f(tx))
    }

    fn scrub(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        self.store.location().to_owned()
    }

    fn write_concurrency(&self) -> usize {
        // Appends to different sessions lock different rows: one batch per pooled connection.
        self.store.options().pool_size as usize
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

fn key(id: u32) -> i64 {
    i64::from(id)
}

fn stored(r: &postgres::Row) -> StoredMessage {
    StoredMessage {
        id: r.get(0),
        session_id: r.get(1),
        tenant: r.get(2),
        role: r.get(3),
        content: r.get(4),
        metadata: r.get(5),
        tokens: r.get::<_, i64>(6) as u32,
        created_at: r.get(7),
        prev_id: r.get(8),
    }
}

/// (id, user, created, updated, count, last, mac) from columns `at..at+7`.
fn session_row(r: &postgres::Row, at: usize) -> SessionRow {
    SessionRow {
        id: r.get(at),
        user: r.get(at + 1),
        created_at: r.get(at + 2),
        updated_at: r.get(at + 3),
        message_count: r.get(at + 4),
        last_message_id: r.get(at + 5),
        mac: r.get(at + 6),
    }
}

macro_rules! message_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, session_id, tenant_id, role, content, metadata, tokens, created_at, \
             prev_id FROM memory_messages ",
            $tail
        )
    };
}

const SESSION: &str = "SELECT id, user_id, created_at, updated_at, message_count, last_message_id,
    mac FROM memory_sessions WHERE tenant_id = $1 AND session_key = $2";
const SESSION_LOCKED: &str = "SELECT id, user_id, created_at, updated_at, message_count,
    last_message_id, mac FROM memory_sessions WHERE tenant_id = $1 AND session_key = $2
    FOR UPDATE";
const SESSION_BY_ID: &str = "SELECT tenant_id, session_key, id, user_id, created_at, updated_at,
    message_count, last_message_id, mac FROM memory_sessions WHERE id = $1";
const SESSION_BY_ID_LOCKED: &str = "SELECT tenant_id, session_key, id, user_id, created_at,
    updated_at, message_count, last_message_id, mac FROM memory_sessions WHERE id = $1
    FOR UPDATE";

impl Tx<'_> {
    fn count(&self, sql: &'static str, key_id: u32) -> Result<u64> {
        if self.write {
            self.batch("SELECT pg_advisory_xact_lock(7738703049236938754)")?;
        }
        Ok(self.query_one(sql, &[&key(key_id)])?.get::<_, i64>(0) as u64)
    }
}

impl MemoryRead for Tx<'_> {
    fn session(&self, tenant: &str, session_key: &str) -> Result<Option<SessionRow>> {
        let sql = if self.write { SESSION_LOCKED } else { SESSION };
        Ok(self
            .query_opt(sql, &[&tenant, &session_key])?
            .map(|r| session_row(&r, 0)))
    }

    fn session_by_id(&self, id: i64) -> Result<Option<SessionRecord>> {
        let sql = if self.write {
            SESSION_BY_ID_LOCKED
        } else {
            SESSION_BY_ID
        };
        Ok(self.query_opt(sql, &[&id])?.map(|r| SessionRecord {
            tenant: r.get(0),
            session_key: r.get(1),
            row: session_row(&r, 2),
        }))
    }

    fn sessions_of_user(
        &self,
        tenant: &str,
        user: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<ListedSession>> {
        let rows = self.query(
            "SELECT s.session_key, s.id, s.user_id, s.created_at, s.updated_at,
                    s.message_count, s.last_message_id, s.mac,
                    (SELECT count(*) FROM memory_messages m
                     WHERE m.session_id = s.id AND m.tenant_id = s.tenant_id),
                    (SELECT max(m.id) FROM memory_messages m WHERE m.session_id = s.id)
             FROM memory_sessions s WHERE s.tenant_id = $1 AND s.user_id = $2
             ORDER BY s.updated_at DESC, s.id DESC LIMIT $3 OFFSET $4",
            &[&tenant, &user, &i64::from(limit), &i64::from(offset)],
        )?;
        Ok(rows
            .iter()
            .map(|r| ListedSession {
                session_key: r.get(0),
                row: session_row(r, 1),
                messages: r.get(8),
                newest: r.get(9),
            })
            .collect())
    }

    fn session_ids_of_user(&self, tenant: &str, user: &str) -> Result<Vec<i64>> {
        let rows = self.query(
            "SELECT id FROM memory_sessions WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant, &user],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn idle_sessions(&self, cutoff: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        let rows = self.query(
            "SELECT id, tenant_id FROM memory_sessions WHERE updated_at < $1 LIMIT $2",
            &[&cutoff, &i64::from(limit)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn sessions_tagged_under_other_key(&self, key_id: u32, limit: u32) -> Result<Vec<i64>> {
        let rows = self.query(
            "SELECT id FROM memory_sessions WHERE mac IS NOT NULL AND key_id != $1 LIMIT $2",
            &[&key(key_id), &i64::from(limit)],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn count_and_newest(&self, session_id: i64) -> Result<(i64, i64)> {
        let r = self.query_one(
            "SELECT count(*), coalesce(max(id), 0) FROM memory_messages WHERE session_id = $1",
            &[&session_id],
        )?;
        Ok((r.get(0), r.get(1)))
    }

    fn previous_id(&self, session_id: i64, id: i64) -> Result<i64> {
        Ok(self
            .query_one(
                "SELECT coalesce(max(id), 0) FROM memory_messages
                 WHERE session_id = $1 AND id < $2",
                &[&session_id, &id],
            )?
            .get(0))
    }

    fn newest_content(&self, session_id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "SELECT content FROM memory_messages WHERE session_id = $1
                 ORDER BY id DESC LIMIT 1",
                &[&session_id],
            )?
            .map(|r| r.get(0)))
    }

    fn messages(
        &self,
        session_id: i64,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
        visit: &mut dyn FnMut(StoredMessage) -> Result<bool>,
    ) -> Result<()> {
        // A NULL LIMIT is no limit in PostgreSQL.
        let limit = limit.map(i64::from);
        let rows = self.query(
            message_select!(
                "WHERE session_id = $1 AND tenant_id = $2 ORDER BY id DESC LIMIT $3 OFFSET $4"
            ),
            &[&session_id, &tenant, &limit, &i64::from(offset)],
        )?;
        for r in &rows {
            if !visit(stored(r))? {
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
        let rows = self.query(
            message_select!(
                "WHERE id > $1 AND (key_id != $2 OR substring(content FROM 1 FOR 1) != $3)
                 ORDER BY id LIMIT $4"
            ),
            &[
                &after,
                &key(key_id),
                &[format].as_slice(),
                &i64::from(limit),
            ],
        )?;
        Ok(rows.iter().map(stored).collect())
    }

    fn messages_under_key(&self, key_id: u32, limit: u32) -> Result<Vec<StoredMessage>> {
        let rows = self.query(
            message_select!("WHERE key_id = $1 LIMIT $2"),
            &[&key(key_id), &i64::from(limit)],
        )?;
        Ok(rows.iter().map(stored).collect())
    }

    fn count_messages_under_key(&self, key_id: u32) -> Result<u64> {
        self.count(
            "SELECT count(*) FROM memory_messages WHERE key_id = $1",
            key_id,
        )
    }

    fn count_sessions_under_key(&self, key_id: u32) -> Result<u64> {
        self.count(
            "SELECT count(*) FROM memory_sessions WHERE key_id = $1",
            key_id,
        )
    }

    fn key_usage(&self) -> Result<Vec<(u32, u64)>> {
        let rows = self.query(
            "SELECT key_id, count(*) FROM memory_messages GROUP BY key_id ORDER BY key_id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn key_check(&self, key_id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "SELECT check_tag FROM memory_keys WHERE key_id = $1",
                &[&key(key_id)],
            )?
            .map(|r| r.get(0)))
    }

    fn key_checks(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let rows = self.query(
            "SELECT key_id, check_tag FROM memory_keys ORDER BY key_id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)))
            .collect())
    }
}

impl MemoryWrite for Tx<'_> {
    fn next_session_id(&self) -> Result<i64> {
        if let Some(id) = self.reserved.get() {
            return Ok(id);
        }
        let id: i64 = self
            .query_one("SELECT nextval('memory_sessions_id_seq')", &[])?
            .get(0);
        self.reserved.set(Some(id));
        Ok(id)
    }

    fn next_message_id(&self) -> Result<i64> {
        // Only for the trait's default `reserve_message_ids`, which this backend overrides.
        Ok(self
            .query_one("SELECT last_value + 1 FROM memory_messages_id_seq", &[])?
            .get(0))
    }

    fn reserve_message_ids(&self, n: usize) -> Result<Vec<i64>> {
        // One session's values grow: sorted anyway, to state the invariant.
        let rows = self.query(
            "SELECT nextval('memory_messages_id_seq') FROM generate_series(1, $1::bigint)",
            &[&(n as i64)],
        )?;
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn insert_session(&self, s: &NewSession<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO memory_sessions (id, tenant_id, user_id, session_key, created_at,
                 updated_at, message_count, last_message_id, mac, key_id)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
            &[
                &s.id,
                &s.tenant,
                &s.user,
                &s.session_key,
                &s.created_at,
                &s.seal.message_count,
                &s.seal.last_message_id,
                &s.seal.mac,
                &key(s.seal.key_id),
            ],
        )?;
        self.reserved.set(None);
        Ok(())
    }

    fn seal_session(&self, id: i64, updated_at: Option<i64>, seal: &SessionSeal<'_>) -> Result<()> {
        self.execute(
            "UPDATE memory_sessions SET updated_at = coalesce($1, updated_at),
                 message_count = $2, last_message_id = $3, mac = $4, key_id = $5
             WHERE id = $6",
            &[
                &updated_at,
                &seal.message_count,
                &seal.last_message_id,
                &seal.mac,
                &key(seal.key_id),
                &id,
            ],
        )?;
        Ok(())
    }

    fn insert_message(&self, m: &NewMessageRow<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO memory_messages (id, session_id, tenant_id, role, content, metadata,
                 tokens, created_at, key_id, prev_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &m.id,
                &m.session_id,
                &m.tenant,
                &m.role,
                &m.content,
                &m.metadata,
                &i64::from(m.tokens),
                &m.created_at,
                &key(m.key_id),
                &m.prev_id,
            ],
        )?;
        Ok(())
    }

    fn reseal_message(&self, m: &MessageSeal<'_>) -> Result<()> {
        self.execute(
            "UPDATE memory_messages SET content = $1, metadata = $2, key_id = $3, prev_id = $4
             WHERE id = $5",
            &[&m.content, &m.metadata, &key(m.key_id), &m.prev_id, &m.id],
        )?;
        Ok(())
    }

    fn delete_session(&self, session_id: i64, tenant: &str) -> Result<u64> {
        let messages = self.execute(
            "DELETE FROM memory_messages WHERE session_id = $1 AND tenant_id = $2",
            &[&session_id, &tenant],
        )?;
        self.execute(
            "DELETE FROM memory_sessions WHERE id = $1 AND tenant_id = $2",
            &[&session_id, &tenant],
        )?;
        Ok(messages)
    }

    fn insert_key_check(&self, key_id: u32, check: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO memory_keys (key_id, check_tag) VALUES ($1, $2)",
            &[&key(key_id), &check],
        )?;
        Ok(())
    }

    fn delete_key_check(&self, key_id: u32) -> Result<()> {
        self.execute("DELETE FROM memory_keys WHERE key_id = $1", &[&key(key_id)])?;
        Ok(())
    }
}
