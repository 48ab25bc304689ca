//! PostgreSQL done the same way as the SQLite store: one pooled database shared by threads,
//! processes and hosts, with keel's schema applied at open.
//!
//! Invariants:
//! - The schema is versioned (`keel_schema_version`, one row per applied migration) and brought
//!   to the latest version at open, inside one transaction holding a transaction-scoped
//!   advisory lock, so hosts that open a fresh database together serialise instead of racing.
//! - Every write runs in one transaction (`BEGIN` ... `COMMIT`, READ COMMITTED plus row and
//!   advisory locks taken by the backends); a transient conflict (serialization failure,
//!   deadlock, a unique key taken by a concurrent writer) or a connection lost *before* `COMMIT`
//!   rolls the transaction back and runs it again, with backoff, until `busy_deadline`. A
//!   connection lost *during* `COMMIT` is reported as [`StoreError::Unavailable`] and never
//!   retried (it may have committed): an error is never an acknowledgement, and an
//!   acknowledgement is never lost (`synchronous_commit` is the server's, `on` by default).
//! - Reads run in one `REPEATABLE READ READ ONLY` transaction: one snapshot.
//! - While the server is down, a call fails within `connect_timeout` with
//!   [`StoreError::Unavailable`] naming the location (the URL without its password); when it
//!   is back, the next call reconnects: no restart of the application.
//! - Statements are prepared once per connection and cached with it.
//! - A connection never crosses `fork()`: a child builds its own pool (as [`super::Store`]).
//! - No type of the `postgres` crate is public: [`PgStore`] is opaque.

pub mod migrate;
mod migrations;
#[cfg(test)]
pub(crate) mod test_server;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use r2d2::{ManageConnection, Pool, PooledConnection};

use crate::config::redact_url;
use crate::error::{Error, Result, StoreError};
use crate::telemetry::metrics;

/// How a [`PgStore`] connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most pooled connections (per process).
    pub pool_size: u32,
    /// How long a call waits to connect (or for a free pooled connection) before failing with
    /// [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
    /// How long a write keeps retrying transient conflicts before failing as busy.
    pub busy_deadline: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            busy_deadline: Duration::from_secs(30),
        }
    }
}

impl PgOptions {
    /// Checks every option's range, naming the offending value and the limit.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 || self.pool_size > super::MAX_POOL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "pool_size must be between 1 and {} (got {})",
                super::MAX_POOL_SIZE,
                self.pool_size
            )));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("busy_deadline", self.busy_deadline),
        ] {
            if value < Duration::from_millis(1) || value > super::MAX_BUSY_WAIT {
                return Err(Error::InvalidArgument(format!(
                    "{name} must be between 1 ms and {} ms (got {} ms)",
                    super::MAX_BUSY_WAIT.as_millis(),
                    value.as_millis()
                )));
            }
        }
        Ok(())
    }
}

/// A pooled connection and the statements prepared on it.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgConn {
    /// The statement for `sql`, prepared on this connection the first time.
    pub(crate) fn statement(
        &mut self,
        sql: &'static str,
    ) -> std::result::Result<Statement, postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }
}

pub(crate) struct Manager {
    config: postgres::Config,
}

impl ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

struct PoolState {
    pid: u32,
    pool: Pool<Manager>,
}

struct Inner {
    id: u64,
    location: String,
    config: postgres::Config,
    options: PgOptions,
    state: RwLock<Arc<PoolState>>,
}

/// A pooled PostgreSQL database with keel's schema. Cheap to clone; `Send + Sync`. Memory
/// ([`crate::memory::backend::PgMemory`]), API keys ([`crate::auth::backend::PgApiKeys`]) and
/// the audit log ([`crate::crypto::audit::PgAudit`]) are built on one.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Where a transaction failed, to decide whether running it again is safe.
enum Failure {
    /// The connection died before `COMMIT` was sent: the server rolls the transaction back.
    Lost(Error),
    /// The connection died during `COMMIT`: the outcome is unknown.
    AtCommit(Error),
    /// Anything else (rolled back).
    Other(Error),
}

/// A transaction of [`PgStore::transaction`]: statements prepared once per connection, errors
/// converted with the store's location. The backends implement their traits on it.
pub(crate) struct Tx<'a> {
    store: &'a PgStore,
    conn: std::cell::RefCell<&'a mut PgConn>,
    /// A write transaction (reads of rows it may change lock them).
    pub(crate) write: bool,
    /// A reserved id (memory: the next session's), stable until used.
    pub(crate) reserved: std::cell::Cell<Option<i64>>,
}

/// Statement parameters.
pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Tx<'_> {
    /// Every row of `sql`.
    pub(crate) fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let mut conn = self.conn.borrow_mut();
        let st = conn.statement(sql).map_err(|e| self.store.error(e))?;
        conn.client
            .query(&st, params)
            .map_err(|e| self.store.error(e))
    }

    /// The one row of `sql`, if any.
    pub(crate) fn query_opt(&self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let mut conn = self.conn.borrow_mut();
        let st = conn.statement(sql).map_err(|e| self.store.error(e))?;
        conn.client
            .query_opt(&st, params)
            .map_err(|e| self.store.error(e))
    }

    /// The one row of `sql`.
    pub(crate) fn query_one(&self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let mut conn = self.conn.borrow_mut();
        let st = conn.statement(sql).map_err(|e| self.store.error(e))?;
        conn.client
            .query_one(&st, params)
            .map_err(|e| self.store.error(e))
    }

    /// Runs `sql`; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let mut conn = self.conn.borrow_mut();
        let st = conn.statement(sql).map_err(|e| self.store.error(e))?;
        conn.client
            .execute(&st, params)
            .map_err(|e| self.store.error(e))
    }

    /// Runs statements without parameters (simple protocol), e.g. `SET LOCAL`.
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.conn
            .borrow_mut()
            .client
            .batch_execute(sql)
            .map_err(|e| self.store.error(e))
    }
}

/// The transaction kinds [`PgStore::run`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One snapshot, read only.
    Read,
    /// A write transaction, with `prologue` (e.g. an advisory lock) after `BEGIN`.
    Write(&'static str),
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?options`), applies pending
    /// migrations and builds the pool. The password is never part of an error or of
    /// [`PgStore::location`].
    pub fn open(url: &str, options: PgOptions) -> Result<Self> {
        options.validate()?;
        let location = redact_url(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::from(StoreError::Open(format!(
                "{location}: not a PostgreSQL URL ({})",
                scrub_text(&e.to_string(), url)
            )))
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("keel");
        }
        let _span = tracing::debug_span!(
            "store.open",
            db.system.name = "postgresql",
            db.operation.name = "open"
        )
        .entered();
        let state = build_pool(&config, &options, &location)?;
        {
            let mut conn = checkout(&state.pool, &location)?;
            migrations::apply(&mut conn.client).map_err(|e| migration_err(&location, e))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                id: super::NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                location,
                config,
                options,
                state: RwLock::new(Arc::new(state)),
            }),
        })
    }

    /// The database as a URL without its password.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Identifies this store (its pool) within the process, as [`super::Store::id`].
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.inner.options
    }

    /// Checks a connection out of the pool (rebuilding the pool in a forked child).
    pub(crate) fn conn(&self) -> Result<PooledConnection<Manager>> {
        let pid = std::process::id();
        let state = {
            let guard = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
            Arc::clone(&guard)
        };
        let state = if state.pid == pid {
            state
        } else {
            let mut guard = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            if guard.pid != pid {
                let fresh = Arc::new(build_pool(
                    &self.inner.config,
                    &self.inner.options,
                    &self.inner.location,
                )?);
                // The parent's sockets must not be closed (or used) from the child.
                std::mem::forget(std::mem::replace(&mut *guard, fresh));
            }
            Arc::clone(&guard)
        };
        checkout(&state.pool, &self.inner.location)
    }

    /// Runs `f` in one transaction of kind `mode` and commits. Transient conflicts and
    /// connections lost before `COMMIT` run `f` again (see the module docs), so `f` must have no
    /// effect outside the transaction. `table` is the table the operation is about (the span's
    /// `db.collection.name`; `None` for work across tables, e.g. the migration).
    pub(crate) fn run<T>(
        &self,
        mode: Mode,
        table: Option<&'static str>,
        mut f: impl FnMut(&mut PgConn) -> Result<T>,
    ) -> Result<T> {
        // The database client span, as the SQLite store's: the system, the operation kind and
        // the table, never the SQL text or its values; its parent is the keel operation.
        let op = match mode {
            Mode::Read => "SELECT",
            Mode::Write(_) => "TRANSACTION",
        };
        let _span = tracing::info_span!(
            "db.postgresql",
            otel.name = op,
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = op,
            db.collection.name = table,
        )
        .entered();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let mut lost_connections = 0;
        loop {
            let mut conn = self.conn()?;
            let failure = match self.attempt(&mut conn, mode, &mut f) {
                Ok(v) => return Ok(v),
                Err(failure) => failure,
            };
            drop(conn);
            match failure {
                // A connection that died under us (e.g. the server restarted): a fresh one, at
                // once. Twice at most: a server that is down fails fast.
                Failure::Lost(_) if lost_connections < 2 => {
                    lost_connections += 1;
                    continue;
                }
                Failure::Lost(e) | Failure::AtCommit(e) => return Err(e),
                Failure::Other(Error::Store(StoreError::Postgres { code, .. }))
                    if is_transient(&code) =>
                {
                    let give_up = started.elapsed() >= self.inner.options.busy_deadline;
                    metrics::db_busy(metrics::Backend::Postgres, !give_up);
                    if give_up {
                        return Err(StoreError::Busy {
                            waited_ms: started.elapsed().as_millis() as u64,
                        }
                        .into());
                    }
                }
                Failure::Other(e) => return Err(e),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    fn attempt<T>(
        &self,
        conn: &mut PgConn,
        mode: Mode,
        f: &mut impl FnMut(&mut PgConn) -> Result<T>,
    ) -> std::result::Result<T, Failure> {
        let classify = |e: Error| match e {
            e @ Error::Store(StoreError::Unavailable { .. }) => Failure::Lost(e),
            e => Failure::Other(e),
        };
        let begin = match mode {
            Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
            Mode::Write("") => "BEGIN".to_owned(),
            Mode::Write(prologue) => format!("BEGIN; {prologue}"),
        };
        conn.client
            .batch_execute(&begin)
            .map_err(|e| classify(self.error(e)))?;
        match f(conn) {
            Ok(v) => match conn.client.batch_execute("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => Err(match self.error(e) {
                    Error::Store(StoreError::Unavailable { location, reason }) => {
                        Failure::AtCommit(
                            StoreError::Unavailable {
                                location,
                                reason: format!("{reason} (during COMMIT: the outcome is unknown)"),
                            }
                            .into(),
                        )
                    }
                    e => Failure::Other(e),
                }),
            },
            Err(e) => {
                // A dead connection rolls back by itself; the pool drops it (`has_broken`).
                let _ = conn.client.batch_execute("ROLLBACK");
                Err(classify(e))
            }
        }
    }

    /// Runs `f` on a [`Tx`] of kind `mode` about `table` (see [`PgStore::run`]).
    pub(crate) fn transaction<T>(
        &self,
        mode: Mode,
        table: Option<&'static str>,
        mut f: impl FnMut(&Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.run(mode, table, |conn| {
            f(&Tx {
                store: self,
                conn: std::cell::RefCell::new(conn),
                write: mode != Mode::Read,
                reserved: std::cell::Cell::new(None),
            })
        })
    }

    /// Runs `f` outside any transaction (autocommit), once, reconnecting once if the pooled
    /// connection turns out to be dead.
    pub(crate) fn autocommit<T>(
        &self,
        mut f: impl FnMut(&mut PgConn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut conn = self.conn()?;
        match f(&mut conn) {
            Err(e) if is_connection_error(&e) => {
                drop(conn);
                let mut conn = self.conn()?;
                f(&mut conn).map_err(|e| self.error(e))
            }
            other => other.map_err(|e| self.error(e)),
        }
    }

    /// Converts a client error, naming this store's location.
    pub(crate) fn error(&self, e: postgres::Error) -> Error {
        pg_err(&self.inner.location, e)
    }
}

fn checkout(pool: &Pool<Manager>, location: &str) -> Result<PooledConnection<Manager>> {
    let waited = Instant::now();
    let conn = pool.get();
    metrics::db_pool_wait(metrics::Backend::Postgres, waited);
    conn.map_err(|e| {
        StoreError::Unavailable {
            location: location.to_owned(),
            reason: format!("no connection: {e}"),
        }
        .into()
    })
}

fn build_pool(config: &postgres::Config, options: &PgOptions, location: &str) -> Result<PoolState> {
    let pool = Pool::builder()
        .max_size(options.pool_size)
        .min_idle(Some(0))
        // A dead connection shows at its next use; `run` reconnects then (saves a round trip
        // per checkout).
        .test_on_check_out(false)
        .connection_timeout(options.connect_timeout)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager {
            config: config.clone(),
        });
    let _ = location;
    Ok(PoolState {
        pid: std::process::id(),
        pool,
    })
}

/// SQLSTATEs after which the transaction is run again.
fn is_transient(code: &str) -> bool {
    [
        SqlState::T_R_SERIALIZATION_FAILURE.code(),
        SqlState::T_R_DEADLOCK_DETECTED.code(),
        // A key a concurrent transaction inserted first (a new session's): the retry sees it.
        SqlState::UNIQUE_VIOLATION.code(),
    ]
    .contains(&code)
}

fn is_connection_error(e: &postgres::Error) -> bool {
    e.as_db_error().is_none()
        && (e.is_closed()
            || std::error::Error::source(e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()))
        || e.code().is_some_and(|c| {
            c.code().starts_with("08") // connection exception
                || c == &SqlState::ADMIN_SHUTDOWN
                || c == &SqlState::CRASH_SHUTDOWN
                || c == &SqlState::CANNOT_CONNECT_NOW
        })
}

/// Removes `url` (and so its password) from a client message, should one ever quote it.
fn scrub_text(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    if let Some(password) = password_of(url) {
        if !password.is_empty() {
            text = text.replace(password, "***");
        }
    }
    text
}

fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

fn migration_err(location: &str, e: migrations::MigrationError) -> Error {
    match e {
        migrations::MigrationError::TooNew { found, known } => StoreError::Migration(format!(
            "{location}: schema version {found} is newer than this keel knows ({known}); \
             upgrade keel"
        ))
        .into(),
        migrations::MigrationError::Pg(e) => match pg_err(location, e) {
            Error::Store(StoreError::Postgres { code, message }) => {
                StoreError::Migration(format!("{location}: SQLSTATE {code}: {message}")).into()
            }
            other => other,
        },
    }
}

/// Converts a client error: server errors keep their SQLSTATE and primary message (never the
/// detail, which may quote row values); connection errors become [`StoreError::Unavailable`].
pub(crate) fn pg_err(location: &str, e: postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        if is_connection_error(&e) {
            return StoreError::Unavailable {
                location: location.to_owned(),
                reason: db.message().to_owned(),
            }
            .into();
        }
        return StoreError::Postgres {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
        }
        .into();
    }
    if is_connection_error(&e) {
        let reason = match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        };
        return StoreError::Unavailable {
            location: location.to_owned(),
            reason,
        }
        .into();
    }
    StoreError::Postgres {
        code: String::new(),
        message: e.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed_from_client_messages() {
        let url = "postgres://app:s3cr3t-pw@db:5432/keel";
        assert_eq!(password_of(url), Some("s3cr3t-pw"));
        assert!(!scrub_text(&format!("bad {url} s3cr3t-pw"), url).contains("s3cr3t-pw"));
    }

    #[test]
    fn a_bad_url_is_an_open_error_without_the_password() {
        let err = PgStore::open(
            "postgres://app:s3cr3t-pw@db:notaport/keel",
            PgOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Store(StoreError::Open(_))), "{err:?}");
        assert!(!err.to_string().contains("s3cr3t-pw"), "{err}");
    }

    #[test]
    fn an_unreachable_server_is_unavailable_fast_and_names_the_location_only() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://app:s3cr3t-pw@127.0.0.1:{port}/keel");
        let started = Instant::now();
        let err = PgStore::open(
            &url,
            PgOptions {
                connect_timeout: Duration::from_millis(300),
                ..PgOptions::default()
            },
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(err, Error::Store(StoreError::Unavailable { .. })),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(
            text.contains(&format!("postgres://app:***@127.0.0.1:{port}/keel")),
            "{text}"
        );
    }
}
