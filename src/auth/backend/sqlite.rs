//! The SQLite API-key backend: the `api_keys` and `api_keys_upgrade` tables of a [`Store`]
//! (schema [`SCHEMA`], its own versioned sequence), whose transactions also write the audit
//! tables of the same file (so it brings the audit schema up too).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    ApiKeyBackend, ApiKeyRead, ApiKeyWrite, AuditWrite, KeyInfoRow, KeyPolicyRow, NewKeyRow, TABLE,
};
use crate::crypto::audit::{sqlite_writer, AuditRow};
use crate::error::Result;
use crate::store::{sqlite_err, Schema, Store};

/// The API-key tables' schema: its own versioned sequence in `keel_schema` (see
/// [`crate::store::Schema`]). Append-only: a released step is never edited. Only an HMAC of
/// each key is stored, with the keyring key id its secret was derived from; metadata is an
/// AES-SIV ciphertext bound to the row.
pub(crate) static SCHEMA: Schema = Schema {
    component: "api_keys",
    steps: &[
        // 1: the registry.
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
        // 2: the policy MAC (src/auth/keys.rs): `policy_mac` authenticates every column that
        // decides access under a keyring-derived key. The step cannot compute MACs (it has no
        // keyring): it records the highest existing row id in `api_keys_upgrade`, and the first
        // `ApiKeys` to open the database seals those rows once and drops the marker (trust on
        // upgrade); after that a row without a MAC is refused as tampered.
        "ALTER TABLE api_keys ADD COLUMN policy_mac BLOB;
    CREATE TABLE api_keys_upgrade (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        max_id  INTEGER NOT NULL
    );
    INSERT INTO api_keys_upgrade (id, max_id) SELECT 1, id FROM api_keys ORDER BY id DESC LIMIT 1;",
        // 3: key derivation version (src/crypto/keyring.rs, `Kdf`): version 1 (HMAC of the
        // keyring key and a label) for every row before this step, HKDF-SHA256 (version 2) for
        // new rows. A constant default rewrites nothing.
        "ALTER TABLE api_keys ADD COLUMN kdf INTEGER NOT NULL DEFAULT 1;",
    ],
    // The shared sequence of keel before per-component schemas: step 2 created the table,
    // step 4 added the policy MAC, step 6 the derivation version.
    legacy: |v| match v {
        0 | 1 => 0,
        2 | 3 => 1,
        4 | 5 => 2,
        _ => 3,
    },
};

/// This backend's tables, and the audit log's, which its transactions also write.
const SCHEMAS: &[&Schema] = &[&SCHEMA, &crate::crypto::audit::SQLITE_SCHEMA];

/// API keys in a SQLite [`Store`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteApiKeys {
    store: Store,
    schema_ready: std::sync::Arc<std::sync::OnceLock<()>>,
}

impl SqliteApiKeys {
    /// The registry's rows in an open store.
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

impl ApiKeyBackend for SqliteApiKeys {
    fn read(&self, f: &mut dyn FnMut(&dyn ApiKeyRead) -> Result<()>) -> Result<()> {
        self.ready()?;
        self.store.read_table(TABLE, |conn| f(&Sql(conn)))
    }

    fn write(&self, f: &mut dyn FnMut(&dyn ApiKeyWrite) -> Result<()>) -> Result<()> {
        self.ready()?;
        self.store.write_table(TABLE, |tx| f(&Sql(tx)))
    }

    fn touch(&self, id: i64, at: i64) -> Result<()> {
        // One try with a zero busy timeout: a verification never waits for the write lock.
        self.ready()?;
        let conn = self.store.conn()?;
        conn.busy_timeout(Duration::ZERO).map_err(sqlite_err)?;
        let result = conn
            .prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![at, id]))
            .map_err(sqlite_err);
        conn.busy_timeout(self.store.options().busy_timeout)
            .map_err(sqlite_err)?;
        result.map(drop)
    }

    fn location(&self) -> String {
        self.store.location()
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

struct Sql<'a>(&'a Connection);

const POLICY_COLUMNS: &str = "id, tenant_id, name, env, display, hash, secret_key_id, scopes,
    rate_limit, rate_window_ms, created_at, expires_at, revoked_at, replaced_by, policy_mac, kdf";

fn policy_row(r: &Row<'_>) -> rusqlite::Result<KeyPolicyRow> {
    Ok(KeyPolicyRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        env: r.get(3)?,
        display: r.get(4)?,
        hash: r.get(5)?,
        secret_key_id: r.get(6)?,
        scopes: r.get(7)?,
        rate_limit: r.get(8)?,
        rate_window_ms: r.get(9)?,
        created_at: r.get(10)?,
        expires_at: r.get(11)?,
        revoked_at: r.get(12)?,
        replaced_by: r.get(13)?,
        policy_mac: r.get(14)?,
        kdf: r.get(15)?,
    })
}

const SELECT_INFO: &str = "SELECT id, tenant_id, name, env, display, scopes, metadata, rate_limit,
    rate_window_ms, created_at, expires_at, revoked_at, last_used_at, replaced_by FROM api_keys";

fn info_row(r: &Row<'_>) -> rusqlite::Result<KeyInfoRow> {
    Ok(KeyInfoRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        env: r.get(3)?,
        display: r.get(4)?,
        scopes: r.get(5)?,
        metadata: r.get(6)?,
        rate_limit: r.get(7)?,
        rate_window_ms: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        revoked_at: r.get(11)?,
        last_used_at: r.get(12)?,
        replaced_by: r.get(13)?,
    })
}

impl Sql<'_> {
    fn exec(&self, sql: &str, args: impl rusqlite::Params) -> Result<()> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut st| st.execute(args))
            .map_err(sqlite_err)
            .map(drop)
    }
}

impl ApiKeyRead for Sql<'_> {
    fn by_hash(&self, hash: &[u8]) -> Result<Option<KeyPolicyRow>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM api_keys WHERE hash = ?1"
            ))
            .and_then(|mut st| st.query_row([hash], policy_row).optional())
            .map_err(sqlite_err)
    }

    fn policy(&self, tenant: &str, id: i64) -> Result<Option<KeyPolicyRow>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 AND id = ?2"
            ))
            .and_then(|mut st| st.query_row(params![tenant, id], policy_row).optional())
            .map_err(sqlite_err)
    }

    fn info(&self, tenant: &str, id: i64) -> Result<Option<KeyInfoRow>> {
        self.0
            .prepare_cached(&format!("{SELECT_INFO} WHERE tenant_id = ?1 AND id = ?2"))
            .and_then(|mut st| st.query_row(params![tenant, id], info_row).optional())
            .map_err(sqlite_err)
    }

    fn infos(&self, tenant: &str) -> Result<Vec<KeyInfoRow>> {
        self.0
            .prepare_cached(&format!("{SELECT_INFO} WHERE tenant_id = ?1 ORDER BY id"))
            .and_then(|mut st| st.query_map([tenant], info_row)?.collect())
            .map_err(sqlite_err)
    }

    fn metadata(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.0
            .prepare_cached("SELECT metadata FROM api_keys WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)))
            .map_err(sqlite_err)
    }

    fn upgrade_marker(&self) -> Result<Option<i64>> {
        self.0
            .prepare_cached("SELECT max_id FROM api_keys_upgrade WHERE id = 1")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .map_err(sqlite_err)
    }

    fn unsealed(&self, max_id: i64) -> Result<Vec<KeyPolicyRow>> {
        self.0
            .prepare(&format!(
                "SELECT {POLICY_COLUMNS} FROM api_keys WHERE policy_mac IS NULL AND id <= ?1"
            ))
            .and_then(|mut st| st.query_map([max_id], policy_row)?.collect())
            .map_err(sqlite_err)
    }

    fn has_kdf(&self, kdf: i64) -> Result<bool> {
        self.0
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE kdf = ?1)")
            .and_then(|mut st| st.query_row([kdf], |r| r.get(0)))
            .map_err(sqlite_err)
    }
}

impl AuditWrite for Sql<'_> {
    fn last_link(&self) -> Result<Option<(i64, Vec<u8>)>> {
        sqlite_writer(self.0).last_link()
    }

    fn insert_entry(&self, row: &AuditRow<'_>) -> Result<()> {
        sqlite_writer(self.0).insert_entry(row)
    }

    fn set_head(&self, seq: i64, key_id: u32, mac: &[u8], kdf: i64) -> Result<()> {
        sqlite_writer(self.0).set_head(seq, key_id, mac, kdf)
    }
}

impl ApiKeyWrite for Sql<'_> {
    fn insert_key(&self, k: &NewKeyRow<'_>) -> Result<i64> {
        self.exec(
            "INSERT INTO api_keys (tenant_id, name, env, display, hash, secret_key_id, scopes,
                rate_limit, rate_window_ms, created_at, expires_at, kdf)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                k.tenant,
                k.name,
                k.env,
                k.display,
                k.hash,
                k.secret_key_id,
                k.scopes,
                k.rate_limit,
                k.rate_window_ms,
                k.created_at,
                k.expires_at,
                k.kdf,
            ],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    fn set_metadata(&self, id: i64, ciphertext: &[u8]) -> Result<()> {
        self.exec(
            "UPDATE api_keys SET metadata = ?1 WHERE id = ?2",
            params![ciphertext, id],
        )
    }

    fn set_policy_mac(&self, id: i64, mac: &[u8]) -> Result<()> {
        self.exec(
            "UPDATE api_keys SET policy_mac = ?1 WHERE id = ?2",
            params![mac, id],
        )
    }

    fn set_revoked(&self, id: i64, at: i64) -> Result<()> {
        self.exec(
            "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2",
            params![at, id],
        )
    }

    fn set_replaced(&self, id: i64, replaced_by: i64, expires_at: Option<i64>) -> Result<()> {
        self.exec(
            "UPDATE api_keys SET replaced_by = ?1, expires_at = ?2 WHERE id = ?3",
            params![replaced_by, expires_at, id],
        )
    }

    fn drop_upgrade_marker(&self) -> Result<()> {
        self.exec("DELETE FROM api_keys_upgrade", [])
    }
}
