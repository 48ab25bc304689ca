//! SQLite done right: one pooled database file shared safely by threads and processes.
//!
//! Invariants, in the order [`Store::open`] establishes them:
//! - WAL is set once, on a dedicated connection, before the pool exists (changing the journal
//!   mode needs an exclusive lock; doing it per pooled connection would race).
//! - The schema is migrated on that same connection, inside `BEGIN IMMEDIATE`, so several
//!   processes opening a new file at once serialise on the write lock instead of failing.
//! - Every pooled connection gets `busy_timeout`, `foreign_keys=ON`, `secure_delete=ON` (deleted
//!   content is overwritten with zeros, not left in free pages) and the chosen `synchronous`.
//! - Every write runs in `BEGIN IMMEDIATE` ([`Store::write`]): the write lock is taken up front,
//!   so a transaction never fails half-way with `SQLITE_BUSY` on a read-to-write upgrade. When
//!   another process holds the lock longer than `busy_timeout`, the whole transaction is retried
//!   with backoff until `busy_deadline`; only then does the caller see [`StoreError::Busy`].
//! - A connection never crosses `fork()`: every checkout compares the process id with the one that
//!   built the pool and, in a child, builds a fresh pool. The inherited pool is leaked on purpose:
//!   closing inherited SQLite connections in the child could release or disturb the parent's
//!   locks and WAL state (sqlite.org/howtocorrupt.html §2.6).

mod migrations;
#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStore};

pub(crate) use migrations::Schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result, StoreError};

/// `PRAGMA synchronous` for the pooled connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `NORMAL`: with WAL, a commit survives a process crash; a power loss may drop the last
    /// commits but never corrupts the database. SQLite's recommended setting for WAL.
    #[default]
    Normal,
    /// `FULL`: WAL is fsynced at every commit, so a commit also survives power loss.
    Full,
}

impl Synchronous {
    /// Parses `"normal"` or `"full"` (any case), the name used in configuration and by the
    /// Python door; anything else is an [`Error::InvalidArgument`] naming the value.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err(Error::InvalidArgument(format!(
                "synchronous must be \"normal\" or \"full\" (got {name:?})"
            ))),
        }
    }

    /// The lowercase name [`Self::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Full => "full",
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How a [`Store`] opens its database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long SQLite itself waits for a lock held by another connection (`busy_timeout`).
    pub busy_timeout: Duration,
    /// How long a write keeps retrying after `busy_timeout` expired before giving up.
    pub busy_deadline: Duration,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// Most connections in the pool.
    pub pool_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            busy_deadline: Duration::from_secs(30),
            synchronous: Synchronous::Normal,
            pool_size: 8,
        }
    }
}

/// The longest `busy_timeout` or `busy_deadline` accepted: SQLite takes the timeout as a C
/// `int` of milliseconds (2^31 - 1 ms, about 24.8 days).
pub const MAX_BUSY_WAIT: Duration = Duration::from_millis(i32::MAX as u64);

/// The largest connection pool accepted: r2d2 preallocates a slot per connection, so
/// `u32::MAX` would ask for hundreds of gigabytes (and abort the process).
pub const MAX_POOL_SIZE: u32 = 1024;

impl StoreOptions {
    /// Checks every option's range, naming the offending value and the limit.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "pool_size must be between 1 and {MAX_POOL_SIZE} (got {})",
                self.pool_size
            )));
        }
        for (name, value) in [
            ("busy_timeout", self.busy_timeout),
            ("busy_deadline", self.busy_deadline),
        ] {
            if value > MAX_BUSY_WAIT {
                return Err(Error::InvalidArgument(format!(
                    "{name} of {} ms exceeds the maximum of {} ms",
                    value.as_millis(),
                    MAX_BUSY_WAIT.as_millis()
                )));
            }
        }
        // The pool's checkout timeout is the deadline and must be positive.
        if self.busy_deadline < Duration::from_millis(1) {
            return Err(Error::InvalidArgument(format!(
                "busy_deadline must be at least 1 ms (got {:?})",
                self.busy_deadline
            )));
        }
        Ok(())
    }
}

type Manager = SqliteConnectionManager;

/// An OpenTelemetry database client span: `db.system.name = "sqlite"`, the operation (`SELECT`
/// for a read, `TRANSACTION` for a `BEGIN IMMEDIATE ... COMMIT` write that may run several
/// statements) and, when the caller names it, the table the operation is about
/// (`db.collection.name`), never the SQL text or its values. Its parent is the keel operation
/// (`memory.append`, `auth.verify`, `audit.append`, ...).
macro_rules! db_span {
    ($op:literal, $table:expr) => {
        tracing::info_span!(
            "db.sqlite",
            otel.name = $op,
            otel.kind = "client",
            db.system.name = "sqlite",
            db.operation.name = $op,
            db.collection.name = $table,
        )
    };
}

/// The pool and the process that built it.
struct PoolState {
    pid: u32,
    pool: Pool<Manager>,
}

/// A pooled SQLite database with keel's schema. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    /// Process-unique: clones share it, every `open` gets a new one.
    id: u64,
    path: PathBuf,
    options: StoreOptions,
    state: RwLock<Arc<PoolState>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A connection checked out of the pool; returns to it when dropped. Crate-private: SQL lives in
/// the SQLite backends (`memory::backend`, `auth::backend`, `crypto::audit::backend`), and no
/// rusqlite type is part of the public API.
pub(crate) type Conn = PooledConnection<Manager>;

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and builds the
    /// connection pool. Each backend on the store migrates its own tables when first used
    /// ([`Store::schema_versions`]).
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        options.validate()?;
        let _span = tracing::debug_span!(
            "store.open",
            db.system.name = "sqlite",
            db.operation.name = "open"
        )
        .entered();
        let state = build_pool(&path, &options)?;
        Ok(Self {
            inner: Arc::new(StoreInner {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                path,
                options,
                state: RwLock::new(Arc::new(state)),
            }),
        })
    }

    /// Identifies this store (its pool) within the process: clones share the id, each
    /// [`Store::open`] gets a new one. Lets a caller check that two primitives share one pool.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The database's URL, `sqlite://` and the canonical path of its file, so that two paths to
    /// one file compare equal: the `location` the SQLite backends report, by which the API-key
    /// registry knows its audit log shares its database (and its transactions).
    pub fn location(&self) -> String {
        let path = self.path();
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        format!("sqlite://{}", canon.display())
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Checks a connection out of the pool, first rebuilding the pool if this process is a
    /// fork of the one that built it.
    pub(crate) fn conn(&self) -> Result<Conn> {
        let pid = std::process::id();
        let state = {
            let guard = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
            Arc::clone(&guard)
        };
        let state = if state.pid == pid {
            state
        } else {
            self.rebuild_after_fork(pid)?
        };
        let waited = Instant::now();
        let conn = state.pool.get();
        crate::telemetry::metrics::db_pool_wait(crate::telemetry::metrics::Backend::Sqlite, waited);
        conn.map_err(|e| StoreError::Pool(e.to_string()).into())
    }

    fn rebuild_after_fork(&self, pid: u32) -> Result<Arc<PoolState>> {
        let mut guard = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        if guard.pid != pid {
            tracing::debug!(
                db.system.name = "sqlite",
                "fork detected: building a new pool"
            );
            let fresh = Arc::new(build_pool(&self.inner.path, &self.inner.options)?);
            let inherited = std::mem::replace(&mut *guard, fresh);
            // Never close the parent's connections from the child (see the module docs).
            std::mem::forget(inherited);
        }
        Ok(Arc::clone(&guard))
    }

    /// Brings each component's tables to its latest schema version, in one `BEGIN IMMEDIATE`
    /// transaction (see `store/migrations.rs`). Idempotent; a backend calls it once, before its
    /// first statement.
    pub(crate) fn ensure_schemas(&self, schemas: &[&'static Schema]) -> Result<()> {
        let _span = tracing::debug_span!(
            "store.migrate",
            db.system.name = "sqlite",
            db.operation.name = "migrate"
        )
        .entered();
        self.write(|tx| {
            for schema in schemas {
                migrations::ensure(tx, schema)?;
            }
            Ok(())
        })
    }

    /// [`Store::ensure_schemas`] inside a transaction the caller already holds (`tx` must be a
    /// write transaction): for a caller that bounds its wait for the write lock itself.
    pub(crate) fn ensure_schemas_in(tx: &Connection, schemas: &[&'static Schema]) -> Result<()> {
        for schema in schemas {
            migrations::ensure(tx, schema)?;
        }
        Ok(())
    }

    /// The schema version of each component whose tables this database holds (`keel_schema`):
    /// `[("api_keys", 3), ("audit", 2), ("memory", 2)]` for a file shared by every SQLite
    /// backend, in name order. Empty before any backend used the file.
    pub fn schema_versions(&self) -> Result<Vec<(String, i64)>> {
        self.read(|conn| {
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
                     AND name = 'keel_schema')",
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite_err)?;
            if !exists {
                return Ok(Vec::new());
            }
            let mut st = conn
                .prepare("SELECT component, version FROM keel_schema ORDER BY component")
                .map_err(sqlite_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sqlite_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sqlite_err)
        })
    }

    /// Runs `f` on a pooled connection (reads; for writes use [`Store::write`]), outside any
    /// component's tables (schema, maintenance): its span names no table.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.read_in(None, f)
    }

    /// [`Store::read`] for an operation about `table` (its span's `db.collection.name`).
    pub(crate) fn read_table<T>(
        &self,
        table: &'static str,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.read_in(Some(table), f)
    }

    fn read_in<T>(
        &self,
        table: Option<&'static str>,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let _span = db_span!("SELECT", table).entered();
        let conn = self.conn()?;
        f(&conn)
    }

    /// [`Store::write`] for an operation about `table` (its span's `db.collection.name`; the
    /// transaction may also touch the component's other tables, e.g. an append rewrites its
    /// session row).
    pub(crate) fn write_table<T>(
        &self,
        table: &'static str,
        f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_in(Some(table), f)
    }

    /// Runs `f` inside `BEGIN IMMEDIATE ... COMMIT`. When the database stays locked beyond
    /// `busy_timeout`, the transaction is rolled back and `f` runs again, with backoff, until
    /// `busy_deadline`; so `f` must have no effect outside the transaction.
    pub(crate) fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_in(None, f)
    }

    fn write_in<T>(
        &self,
        table: Option<&'static str>,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let _span = db_span!("TRANSACTION", table).entered();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        let mut conn = self.conn()?;
        loop {
            match run_immediate(&mut conn, &mut f) {
                Err(Error::Store(StoreError::Busy { .. })) => {
                    let retried = started.elapsed() < self.inner.options.busy_deadline;
                    crate::telemetry::metrics::db_busy(
                        crate::telemetry::metrics::Backend::Sqlite,
                        retried,
                    );
                    if !retried {
                        return Err(StoreError::Busy {
                            waited_ms: started.elapsed().as_millis() as u64,
                        }
                        .into());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Runs a WAL checkpoint that truncates the -wal file to zero bytes, so frames holding
    /// deleted rows do not linger. Best effort: readers in other connections may keep part of the
    /// WAL alive until they finish, and a checkpoint that cannot get its locks in time is skipped
    /// (the next one, or SQLite's automatic checkpoints, will overwrite those frames).
    pub fn checkpoint_truncate(&self) -> Result<()> {
        let _span = tracing::debug_span!(
            "store.checkpoint",
            db.system.name = "sqlite",
            db.operation.name = "wal_checkpoint"
        )
        .entered();
        let done = self.read(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sqlite_err)
        });
        match done {
            Ok(0) => Ok(()),
            Ok(_) | Err(Error::Store(StoreError::Busy { .. })) => {
                tracing::debug!(
                    db.system.name = "sqlite",
                    "wal checkpoint deferred: database busy"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn run_immediate<T>(
    conn: &mut Connection,
    f: &mut impl FnMut(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    let value = f(&tx)?;
    tx.commit().map_err(sqlite_err)?;
    Ok(value)
}

/// Opens one connection with every per-connection setting applied.
fn configure(conn: &mut Connection, options: &StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA synchronous = {};",
        options.synchronous.pragma()
    ))?;
    // Writes go through `Store::write`; this makes any other transaction (e.g. the migration
    // crate's) immediate too.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(())
}

fn flags() -> OpenFlags {
    // NO_MUTEX: a pooled connection is used by one thread at a time; r2d2 hands it over.
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI
}

fn build_pool(path: &Path, options: &StoreOptions) -> Result<PoolState> {
    // The dedicated connection: WAL once (each backend migrates its own tables on first use).
    let mut setup = Connection::open_with_flags(path, flags())
        .map_err(|e| StoreError::Open(sqlite_message(&e)))?;
    configure(&mut setup, options).map_err(|e| StoreError::Open(sqlite_message(&e)))?;
    let mode: String = setup
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| StoreError::Open(sqlite_message(&e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(
            StoreError::Open(format!("could not enable WAL (journal_mode is {mode})")).into(),
        );
    }
    drop(setup);

    let opts = options.clone();
    let manager = SqliteConnectionManager::file(path)
        .with_flags(flags())
        .with_init(move |conn| configure(conn, &opts));
    let pool = Pool::builder()
        .max_size(options.pool_size)
        // Connections open on demand: an idle worker process holds one, not `pool_size`.
        .min_idle(Some(0))
        // The init closure already proved each connection works; skip a query per checkout.
        .test_on_check_out(false)
        .connection_timeout(options.busy_deadline)
        .build(manager)
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    Ok(PoolState {
        pid: std::process::id(),
        pool,
    })
}

fn sqlite_message(e: &rusqlite::Error) -> String {
    e.to_string()
}

/// Converts a rusqlite error; `SQLITE_BUSY`/`SQLITE_LOCKED` become [`StoreError::Busy`] so that
/// [`Store::write`] can retry them.
pub(crate) fn sqlite_err(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Busy { waited_ms: 0 }.into()
        }
        rusqlite::Error::SqliteFailure(f, msg) => StoreError::Sqlite {
            code: f.extended_code,
            message: msg.clone().unwrap_or_else(|| f.to_string()),
        }
        .into(),
        other => StoreError::Sqlite {
            code: -1,
            message: other.to_string(),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
/// Test helpers shared by the store, crypto and memory unit tests.
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("keel-test-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
