//! The storage seam of the audit log.
//!
//! [`AuditLog`](super::AuditLog) is the domain: it validates, encrypts, tags actors, computes
//! the hash chain and verifies it. An [`AuditBackend`] keeps the opaque rows (sequence, time, key
//! id, actor tag, ciphertext, link) and the head row, and owns their schema.
//!
//! Invariants a backend must keep:
//! - [`AuditBackend::write`] runs its closure in one transaction that holds the write lock from
//!   the start, so that reading the last link and appending after it cannot interleave with
//!   another writer (the chain never forks).
//! - [`AuditBackend::try_write`] does the same but gives up (returning `false`, having written
//!   nothing) when the lock cannot be had within `wait`.
//! - [`AuditBackend::read`] runs its closure on one consistent snapshot (the chain and the head
//!   must agree, or a concurrent append would look like tampering).
//! - Two backends with the same [`AuditBackend::location`] share one database: an API-key
//!   backend at that location writes audit rows ([`AuditWrite`]) inside its own transactions,
//!   so that an operation and its audit entry commit together.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Error, Result, StoreError};
use crate::store::{sqlite_err, Schema, Store};

/// The audit tables' schema: its own versioned sequence in `keel_schema` (see
/// [`crate::store::Schema`]). Append-only: a released step is never edited. Entries are AES-SIV
/// ciphertexts chained by HMAC; `actor_tag` is a keyed hash of the actor for equality queries;
/// `audit_head` holds the HMAC of the latest link so that truncation is detected too.
pub(crate) static SCHEMA: Schema = Schema {
    component: "audit",
    steps: &[
        // 1: the log and its head.
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
        // 2: key derivation version of links, heads and actor tags (as the API keys' step 3).
        "ALTER TABLE audit_log ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE audit_head ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;",
    ],
    // The shared sequence of keel before per-component schemas: step 3 created the tables,
    // step 6 added the derivation version.
    legacy: |v| match v {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    },
};

const SCHEMAS: &[&Schema] = &[&SCHEMA];

/// The table audit operations are about (their database spans' `db.collection.name`).
pub(crate) const TABLE: &str = "audit_log";

/// A new audit row.
#[derive(Debug, Clone, Copy)]
pub struct AuditRow<'a> {
    /// Position in the log (1, 2, ...).
    pub seq: i64,
    /// Ms since the Unix epoch.
    pub at: i64,
    /// Keyring key id of the ciphertext, actor tag and link.
    pub key_id: u32,
    /// Keyed hash of the actor.
    pub actor_tag: &'a [u8],
    /// The entry's ciphertext.
    pub entry: &'a [u8],
    /// The chain link.
    pub link: &'a [u8],
    /// Derivation version of the link and actor-tag keys (`crypto::Kdf`).
    pub kdf: i64,
}

/// A stored audit row, as verification reads it.
#[derive(Debug, Clone)]
pub struct StoredAuditRow {
    /// Position in the log.
    pub seq: i64,
    /// Ms since the Unix epoch.
    pub at: i64,
    /// Keyring key id.
    pub key_id: u32,
    /// Keyed hash of the actor.
    pub actor_tag: Vec<u8>,
    /// The entry's ciphertext.
    pub entry: Vec<u8>,
    /// The chain link.
    pub link: Vec<u8>,
    /// Derivation version of the link and actor-tag keys, as stored.
    pub kdf: i64,
}

/// The head row: the last sequence number and a MAC over it and the last link.
#[derive(Debug, Clone)]
pub struct AuditHead {
    /// The last sequence number.
    pub seq: i64,
    /// Keyring key id of the MAC.
    pub key_id: u32,
    /// The MAC.
    pub mac: Vec<u8>,
    /// Derivation version of the MAC's key, as stored.
    pub kdf: i64,
}

/// Which entries a query reads.
#[derive(Debug, Clone, Copy)]
pub struct AuditFilter<'a> {
    /// From this time (ms since the epoch, inclusive).
    pub from_ms: i64,
    /// Until this time (ms since the epoch, exclusive).
    pub until_ms: i64,
    /// Only rows with one of these actor tags (None: every actor).
    pub actor_tags: Option<&'a [Vec<u8>]>,
    /// At most this many rows, in sequence order.
    pub limit: u32,
}

/// Audit writes, inside a write transaction (of an audit backend, or of an API-key backend on
/// the same database).
pub trait AuditWrite {
    /// The last row's (sequence number, link), if any.
    fn last_link(&self) -> Result<Option<(i64, Vec<u8>)>>;
    /// Appends a row.
    fn insert_entry(&self, row: &AuditRow<'_>) -> Result<()>;
    /// Replaces the head row.
    fn set_head(&self, seq: i64, key_id: u32, mac: &[u8], kdf: i64) -> Result<()>;
}

/// Audit reads, on one snapshot.
pub trait AuditRead {
    /// (seq, at, ciphertext) of the rows matching `filter`, in sequence order.
    fn entries(&self, filter: &AuditFilter<'_>) -> Result<Vec<(i64, i64, Vec<u8>)>>;
    /// Every row, in sequence order.
    fn chain(&self) -> Result<Vec<StoredAuditRow>>;
    /// The head row, if any.
    fn head(&self) -> Result<Option<AuditHead>>;
}

/// A storage backend of the audit log. `Send + Sync`.
pub trait AuditBackend: Send + Sync + 'static {
    /// Runs `f` on one consistent snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn AuditRead) -> Result<()>) -> Result<()>;
    /// Runs `f` in one write transaction (it may run again after a transient conflict).
    fn write(&self, f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>) -> Result<()>;
    /// As [`AuditBackend::write`], once, waiting at most `wait` for the write lock: `false`
    /// (nothing written) when it could not be had.
    fn try_write(
        &self,
        wait: Duration,
        f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>,
    ) -> Result<bool>;
    /// The database, as a URL without credentials; equal locations are one database.
    fn location(&self) -> String;
    /// The identity of the connection pool, for backends that have one ([`Store::id`]): equal
    /// ids are one pool.
    fn store_id(&self) -> Option<u64> {
        None
    }
}

/// The audit log in a SQLite [`Store`] (tables `audit_log` and `audit_head`, created by the
/// store's migrations).
#[derive(Debug, Clone)]
pub struct SqliteAudit {
    store: Store,
    schema_ready: std::sync::Arc<std::sync::OnceLock<()>>,
}

impl SqliteAudit {
    /// The audit log of an open store.
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
}

impl AuditBackend for SqliteAudit {
    fn read(&self, f: &mut dyn FnMut(&dyn AuditRead) -> Result<()>) -> Result<()> {
        self.ready()?;
        self.store.read_table(TABLE, |conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)
                .map_err(sqlite_err)?;
            f(&SqlAudit(&tx))?;
            tx.commit().map_err(sqlite_err)
        })
    }

    fn write(&self, f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>) -> Result<()> {
        self.ready()?;
        self.store.write_table(TABLE, |tx| f(&SqlAudit(tx)))
    }

    fn try_write(
        &self,
        wait: Duration,
        f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>,
    ) -> Result<bool> {
        // Not `ready()`: a first use here must not wait longer than `wait` for the write lock,
        // so the migration (if any) runs in this bounded transaction.
        let migrate = self.schema_ready.get().is_none();
        let mut conn = self.store.conn()?;
        conn.busy_timeout(wait).map_err(sqlite_err)?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_err)?;
            if migrate {
                Store::ensure_schemas_in(&tx, SCHEMAS)?;
            }
            f(&SqlAudit(&tx))?;
            tx.commit().map_err(sqlite_err)
        })();
        if migrate && result.is_ok() {
            let _ = self.schema_ready.set(());
        }
        let restored = conn
            .busy_timeout(self.store.options().busy_timeout)
            .map_err(sqlite_err);
        match result {
            Err(Error::Store(StoreError::Busy { .. })) => Ok(false),
            other => {
                restored?;
                other.map(|()| true)
            }
        }
    }

    fn location(&self) -> String {
        self.store.location()
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

/// Audit statements on a SQLite connection inside a transaction.
struct SqlAudit<'a>(&'a Connection);

/// The SQLite audit backend's writes on another SQLite backend's write transaction (`tx`, on
/// the same database file: same [`crate::store::Store::location`]): the seam through which the
/// SQLite API-key backend records an admin operation and its audit entry in one transaction.
/// Crate-internal because it takes a rusqlite connection, which no public API exposes.
pub(crate) fn sqlite_writer(tx: &Connection) -> impl AuditWrite + '_ {
    SqlAudit(tx)
}

impl AuditWrite for SqlAudit<'_> {
    fn last_link(&self) -> Result<Option<(i64, Vec<u8>)>> {
        self.0
            .prepare_cached("SELECT seq, link FROM audit_log ORDER BY seq DESC LIMIT 1")
            .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(sqlite_err)
    }

    fn insert_entry(&self, row: &AuditRow<'_>) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO audit_log (seq, at, key_id, actor_tag, entry, link, kdf)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    row.seq,
                    row.at,
                    row.key_id,
                    row.actor_tag,
                    row.entry,
                    row.link,
                    row.kdf
                ])
            })
            .map_err(sqlite_err)?;
        Ok(())
    }

    fn set_head(&self, seq: i64, key_id: u32, mac: &[u8], kdf: i64) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO audit_head (id, seq, key_id, mac, kdf) VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, key_id = excluded.key_id,
                 mac = excluded.mac, kdf = excluded.kdf",
            )
            .and_then(|mut st| st.execute(params![seq, key_id, mac, kdf]))
            .map_err(sqlite_err)?;
        Ok(())
    }
}

impl AuditRead for SqlAudit<'_> {
    fn entries(&self, filter: &AuditFilter<'_>) -> Result<Vec<(i64, i64, Vec<u8>)>> {
        let mut sql =
            String::from("SELECT seq, at, entry FROM audit_log WHERE at >= ?1 AND at < ?2");
        if let Some(tags) = filter.actor_tags {
            sql.push_str(" AND actor_tag IN (");
            sql.push_str(&vec!["?"; tags.len()].join(", "));
            sql.push(')');
        }
        sql.push_str(" ORDER BY seq LIMIT ");
        sql.push_str(&filter.limit.to_string());
        let mut args: Vec<rusqlite::types::Value> =
            vec![filter.from_ms.into(), filter.until_ms.into()];
        for t in filter.actor_tags.into_iter().flatten() {
            args.push(t.clone().into());
        }
        self.0
            .prepare(&sql)
            .and_then(|mut st| {
                st.query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(sqlite_err)
    }

    fn chain(&self) -> Result<Vec<StoredAuditRow>> {
        self.0
            .prepare(
                "SELECT seq, at, key_id, actor_tag, entry, link, kdf FROM audit_log ORDER BY seq",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(StoredAuditRow {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        key_id: r.get(2)?,
                        actor_tag: r.get(3)?,
                        entry: r.get(4)?,
                        link: r.get(5)?,
                        kdf: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(sqlite_err)
    }

    fn head(&self) -> Result<Option<AuditHead>> {
        self.0
            .query_row(
                "SELECT seq, key_id, mac, kdf FROM audit_head WHERE id = 1",
                [],
                |r| {
                    Ok(AuditHead {
                        seq: r.get(0)?,
                        key_id: r.get(1)?,
                        mac: r.get(2)?,
                        kdf: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sqlite_err)
    }
}
