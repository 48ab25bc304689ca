//! Moving a SQLite deployment to PostgreSQL: memory, API keys and the audit log, in one
//! PostgreSQL transaction.
//!
//! Rows are copied as they are: ciphertexts, tags, MACs, links and ids (a ciphertext is bound to
//! its table, column, tenant and row ids, all kept, so it stays valid without being decrypted).
//! The sequences continue after the highest id SQLite ever handed out (`sqlite_sequence`, which
//! also counts deleted rows), so no id is ever reused. The target must be empty. After the
//! commit, everything is read back through the domain with the keyring: every session's tag,
//! messages and links ([`crate::MemoryStore::history`]), the audit chain
//! ([`crate::crypto::AuditLog::verify`]) and the registry's upgrade of legacy rows. A keyring
//! that differs from the one the SQLite data was written with fails there, naming the key.

use std::path::Path;
use std::sync::Arc;

use postgres::types::ToSql;
use rusqlite::types::Value;

use super::{PgOptions, PgStore};
use crate::auth::backend::ApiKeyBackend;
use crate::crypto::Keyring;
use crate::error::{Error, Result, StoreError};
use crate::store::{sqlite_err, Store, StoreOptions};

/// What [`copy_from_sqlite`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Memory sessions.
    pub sessions: u64,
    /// Memory messages.
    pub messages: u64,
    /// API keys.
    pub api_keys: u64,
    /// Audit entries (their chain verified on PostgreSQL).
    pub audit_entries: u64,
}

/// (table, columns, the PostgreSQL type of each column: `i` BIGINT, `t` TEXT, `b` BYTEA).
const TABLES: &[(&str, &str, &str)] = &[
    (
        "memory_sessions",
        "id, tenant_id, user_id, session_key, created_at, updated_at, message_count, \
         last_message_id, mac, key_id",
        "itttiiiibi",
    ),
    (
        "memory_messages",
        "id, session_id, tenant_id, role, content, metadata, tokens, created_at, key_id, prev_id",
        "iittbbiiii",
    ),
    ("memory_keys", "key_id, check_tag", "ib"),
    (
        "api_keys",
        "id, tenant_id, name, env, display, hash, secret_key_id, scopes, metadata, rate_limit, \
         rate_window_ms, created_at, expires_at, revoked_at, last_used_at, replaced_by, \
         policy_mac, kdf",
        "ittttbitbiiiiiiibi",
    ),
    ("api_keys_upgrade", "id, max_id", "ii"),
    (
        "audit_log",
        "seq, at, key_id, actor_tag, entry, link, kdf",
        "iiibbbi",
    ),
    ("audit_head", "id, seq, key_id, mac, kdf", "iiibi"),
];

/// A SQLite value as a PostgreSQL parameter of the column's type.
enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Param {
    fn new(kind: u8, v: Value) -> Result<Self> {
        let bad = || {
            Error::from(StoreError::Migration(
                "a SQLite value does not have its column's type".into(),
            ))
        };
        Ok(match (kind, v) {
            (b'i', Value::Null) => Self::Int(None),
            (b'i', Value::Integer(n)) => Self::Int(Some(n)),
            (b't', Value::Null) => Self::Text(None),
            (b't', Value::Text(s)) => Self::Text(Some(s)),
            (b'b', Value::Null) => Self::Bytes(None),
            (b'b', Value::Blob(b)) => Self::Bytes(Some(b)),
            _ => return Err(bad()),
        })
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Int(v) => v,
            Self::Text(v) => v,
            Self::Bytes(v) => v,
        }
    }
}

/// Copies the SQLite database at `sqlite` into the (empty) PostgreSQL database at `postgres`,
/// then checks it with `keyring` (see the module docs).
pub fn copy_from_sqlite(
    sqlite: &Path,
    postgres: &str,
    keyring: Arc<Keyring>,
) -> Result<MigrationReport> {
    if !sqlite.exists() {
        return Err(StoreError::Open(format!("{}: no such file", sqlite.display())).into());
    }
    // Opening the store runs no migrations: each SQLite backend brings its own tables to the
    // latest version (creating them when the file never held them, e.g. a memory-only file)
    // before the rows are read. The keyring must be the one the data was written with: the
    // memory backend checks it before anything is copied.
    let source = Store::open(sqlite, StoreOptions::default())?;
    crate::memory::MemoryStore::with_backend(
        crate::memory::SqliteMemory::new(source.clone()),
        Arc::clone(&keyring),
        crate::memory::MemoryOptions::default(),
    )?;
    crate::auth::backend::SqliteApiKeys::new(source.clone()).read(&mut |_| Ok(()))?;
    let target = PgStore::open(postgres, PgOptions::default())?;
    let mut rows: Vec<(usize, Vec<Vec<Value>>)> = Vec::new();
    let mut sequences = (0i64, 0i64, 0i64);
    source.read(|conn| {
        for (t, (table, columns, kinds)) in TABLES.iter().enumerate() {
            let mut st = conn
                .prepare(&format!("SELECT {columns} FROM {table}"))
                .map_err(sqlite_err)?;
            let n = kinds.len();
            let all = st
                .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                .map_err(sqlite_err)?
                .collect::<rusqlite::Result<Vec<Vec<Value>>>>()
                .map_err(sqlite_err)?;
            rows.push((t, all));
        }
        let seq = |name: &str| -> Result<i64> {
            conn.query_row(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(sqlite_err)
        };
        sequences = (
            seq("memory_sessions")?,
            seq("memory_messages")?,
            seq("api_keys")?,
        );
        Ok(())
    })?;
    let count = |table: &str| -> u64 {
        let t = TABLES.iter().position(|(n, _, _)| *n == table).unwrap_or(0);
        rows[t].1.len() as u64
    };
    let report = MigrationReport {
        sessions: count("memory_sessions"),
        messages: count("memory_messages"),
        api_keys: count("api_keys"),
        audit_entries: count("audit_log"),
    };
    target.run(super::Mode::Write(""), None, |conn| {
        let err = |e| super::pg_err(target.location(), e);
        let occupied: bool = conn
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM memory_sessions) OR EXISTS (SELECT 1 FROM api_keys)
                 OR EXISTS (SELECT 1 FROM audit_log) OR EXISTS (SELECT 1 FROM memory_keys)",
                &[],
            )
            .map_err(err)?
            .get(0);
        if occupied {
            return Err(StoreError::Migration(format!(
                "{}: the target database already holds keel data; migrate into an empty one",
                target.location()
            ))
            .into());
        }
        for (t, all) in &rows {
            let (table, columns, kinds) = TABLES[*t];
            let placeholders: Vec<String> = (1..=kinds.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({columns}) VALUES ({})",
                placeholders.join(", ")
            );
            let st = conn.client.prepare(&sql).map_err(err)?;
            let mut links = Vec::new();
            for row in all {
                let mut row = row.clone();
                if table == "api_keys" {
                    // `replaced_by` points at a newer key: set once every key is in.
                    if let Value::Integer(to) = std::mem::replace(&mut row[15], Value::Null) {
                        links.push((to, row[0].clone()));
                    }
                }
                let params = kinds
                    .bytes()
                    .zip(row)
                    .map(|(k, v)| Param::new(k, v))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::sql).collect();
                conn.client.execute(&st, &refs).map_err(err)?;
            }
            for (to, id) in links {
                let Value::Integer(id) = id else { continue };
                conn.client
                    .execute(
                        "UPDATE api_keys SET replaced_by = $1 WHERE id = $2",
                        &[&to, &id],
                    )
                    .map_err(err)?;
            }
        }
        // Sequences continue after every id SQLite handed out, deleted rows included.
        let (s, m, k) = sequences;
        conn.client
            .execute(
                "SELECT setval('memory_sessions_id_seq', greatest($1::bigint, 1), $1::bigint > 0),
                        setval('memory_messages_id_seq', greatest($2::bigint, 1), $2::bigint > 0),
                        setval(pg_get_serial_sequence('api_keys', 'id'), greatest($3::bigint, 1),
                               $3::bigint > 0)",
                &[&s, &m, &k],
            )
            .map_err(err)?;
        Ok(())
    })?;
    check(&target, keyring, &report)?;
    Ok(report)
}

/// Reads everything back through the domain, with the keyring.
fn check(target: &PgStore, keyring: Arc<Keyring>, report: &MigrationReport) -> Result<()> {
    use crate::memory::{MemoryOptions, MemoryStore, PgMemory, SessionRef};
    let memory = MemoryStore::with_backend(
        PgMemory::new(target.clone()),
        Arc::clone(&keyring),
        MemoryOptions::default(),
    )?;
    let sessions: Vec<(String, String, String)> =
        target.transaction(super::Mode::Read, None, |tx| {
            Ok(tx
                .query(
                    "SELECT tenant_id, user_id, session_key FROM memory_sessions ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })?;
    let mut messages = 0u64;
    for (tenant, user, session) in &sessions {
        messages += memory
            .history(&SessionRef::new(tenant, user, session), u32::MAX, 0)?
            .len() as u64;
    }
    if messages != report.messages {
        return Err(StoreError::Migration(format!(
            "copied {} messages but {messages} read back",
            report.messages
        ))
        .into());
    }
    crate::auth::ApiKeys::with_backend(
        Arc::new(crate::auth::backend::PgApiKeys::new(target.clone())),
        Arc::clone(&keyring),
        crate::auth::ApiKeysOptions::default(),
    )?;
    let audit = crate::crypto::AuditLog::with_backend(
        Arc::new(crate::crypto::audit::PgAudit::new(target.clone())),
        keyring,
        Arc::new(crate::clock::SystemWallClock),
    );
    audit.verify()?;
    Ok(())
}
