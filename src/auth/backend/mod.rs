//! The storage seam of the API-key registry.
//!
//! [`ApiKeys`](super::ApiKeys) is the domain: key generation and parsing, hashing under
//! keyring-derived secrets, the policy MAC, metadata encryption, the verified-key cache and the
//! audit records. An [`ApiKeyBackend`] keeps the rows (clear policy columns, the hash, the MAC,
//! the metadata ciphertext) and owns their schema and migrations.
//!
//! "Same transaction": an API-key backend's write transaction is also an audit transaction
//! ([`ApiKeyWrite`] extends [`AuditWrite`]). When the audit log is at the same
//! [`ApiKeyBackend::location`] as the registry, `ApiKeys` writes each operation's audit entry
//! through the operation's own transaction, so neither commits without the other. A backend
//! whose database also holds the audit log implements both on one transaction type (SQLite:
//! the tables `api_keys`, `audit_log` and `audit_head` of one file).
//!
//! Invariants a backend must keep:
//! - [`ApiKeyBackend::write`] runs its closure in one transaction holding the write lock from
//!   the start; it may run it again after a transient conflict.
//! - `hash` is unique; ids are never reused.
//! - [`ApiKeyBackend::touch`] never waits for the write lock: a busy database is an `Err`, and
//!   the domain counts it.

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgApiKeys;
pub use sqlite::SqliteApiKeys;

pub use crate::crypto::audit::AuditWrite;
use crate::error::Result;

/// The table API-key operations are about (their database spans' `db.collection.name`).
pub(crate) const TABLE: &str = "api_keys";

/// The columns of a key's row that decide access (all covered by its policy MAC), and the MAC.
#[derive(Debug, Clone)]
pub struct KeyPolicyRow {
    /// Row id.
    pub id: i64,
    /// Owning tenant.
    pub tenant: String,
    /// Admin label.
    pub name: String,
    /// Environment label.
    pub env: String,
    /// Display prefix.
    pub display: String,
    /// HMAC of the key under the secret of `secret_key_id`.
    pub hash: Vec<u8>,
    /// Keyring key id the hashing secret was derived from.
    pub secret_key_id: u32,
    /// Space-separated scopes.
    pub scopes: String,
    /// Rate-limit units, if any.
    pub rate_limit: Option<i64>,
    /// Rate-limit window (ms), if any.
    pub rate_window_ms: Option<i64>,
    /// Creation, ms since the Unix epoch.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation, if any.
    pub revoked_at: Option<i64>,
    /// The key that replaced it, if any.
    pub replaced_by: Option<i64>,
    /// The stored policy MAC (None: never sealed).
    pub policy_mac: Option<Vec<u8>>,
    /// Derivation version of the secret and policy keys (`crypto::Kdf`), as stored.
    pub kdf: i64,
}

/// A new key row (its MAC and metadata are written next, in the same transaction).
#[derive(Debug, Clone, Copy)]
pub struct NewKeyRow<'a> {
    /// Owning tenant.
    pub tenant: &'a str,
    /// Admin label.
    pub name: &'a str,
    /// Environment label.
    pub env: &'a str,
    /// Display prefix.
    pub display: &'a str,
    /// The key's hash.
    pub hash: &'a [u8],
    /// Keyring key id of the hashing secret.
    pub secret_key_id: u32,
    /// Space-separated scopes.
    pub scopes: &'a str,
    /// Rate-limit units.
    pub rate_limit: Option<i64>,
    /// Rate-limit window (ms).
    pub rate_window_ms: Option<i64>,
    /// Creation, ms since the Unix epoch.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: Option<i64>,
    /// Derivation version of the secret and policy keys (`crypto::Kdf`).
    pub kdf: i64,
}

/// A key's description as stored (the domain decrypts the metadata and splits the scopes).
#[derive(Debug, Clone)]
pub struct KeyInfoRow {
    /// Row id.
    pub id: i64,
    /// Owning tenant.
    pub tenant: String,
    /// Admin label.
    pub name: String,
    /// Environment label.
    pub env: String,
    /// Display prefix.
    pub display: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// The metadata ciphertext.
    pub metadata: Option<Vec<u8>>,
    /// Rate-limit units, if any.
    pub rate_limit: Option<i64>,
    /// Rate-limit window (ms), if any.
    pub rate_window_ms: Option<i64>,
    /// Creation, ms since the Unix epoch.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation, if any.
    pub revoked_at: Option<i64>,
    /// Last verification from the database, if any.
    pub last_used_at: Option<i64>,
    /// The key that replaced it, if any.
    pub replaced_by: Option<i64>,
}

/// Reads.
pub trait ApiKeyRead {
    /// The key whose hash is `hash`.
    fn by_hash(&self, hash: &[u8]) -> Result<Option<KeyPolicyRow>>;
    /// Key `id` of `tenant`.
    fn policy(&self, tenant: &str, id: i64) -> Result<Option<KeyPolicyRow>>;
    /// The description of key `id` of `tenant`.
    fn info(&self, tenant: &str, id: i64) -> Result<Option<KeyInfoRow>>;
    /// Every key of `tenant`, oldest first.
    fn infos(&self, tenant: &str) -> Result<Vec<KeyInfoRow>>;
    /// The metadata ciphertext of key `id`.
    fn metadata(&self, id: i64) -> Result<Option<Vec<u8>>>;
    /// The upgrade marker: the highest row id that existed before policy MACs (None: no rows
    /// left to seal).
    fn upgrade_marker(&self) -> Result<Option<i64>>;
    /// Rows up to `max_id` without a policy MAC.
    fn unsealed(&self, max_id: i64) -> Result<Vec<KeyPolicyRow>>;
    /// Whether any row's secret was derived with derivation version `kdf`.
    fn has_kdf(&self, kdf: i64) -> Result<bool>;
}

/// Writes, inside the transaction of [`ApiKeyBackend::write`]; the same transaction takes
/// audit rows.
pub trait ApiKeyWrite: ApiKeyRead + AuditWrite {
    /// Inserts a key; returns its id.
    fn insert_key(&self, row: &NewKeyRow<'_>) -> Result<i64>;
    /// Sets the metadata ciphertext of key `id`.
    fn set_metadata(&self, id: i64, ciphertext: &[u8]) -> Result<()>;
    /// Sets the policy MAC of key `id`.
    fn set_policy_mac(&self, id: i64, mac: &[u8]) -> Result<()>;
    /// Marks key `id` revoked at `at`.
    fn set_revoked(&self, id: i64, at: i64) -> Result<()>;
    /// Links key `id` to its replacement and sets its expiry.
    fn set_replaced(&self, id: i64, replaced_by: i64, expires_at: Option<i64>) -> Result<()>;
    /// Drops the upgrade marker (every old row is sealed).
    fn drop_upgrade_marker(&self) -> Result<()>;
}

/// A storage backend of API keys. `Send + Sync`.
pub trait ApiKeyBackend: Send + Sync + 'static {
    /// Runs `f` with read access (single statements; no snapshot across them is promised).
    fn read(&self, f: &mut dyn FnMut(&dyn ApiKeyRead) -> Result<()>) -> Result<()>;
    /// Runs `f` in one write transaction (see the module docs).
    fn write(&self, f: &mut dyn FnMut(&dyn ApiKeyWrite) -> Result<()>) -> Result<()>;
    /// Records that key `id` was verified at `at`, without waiting for the write lock (an
    /// `Err` when the database is busy).
    fn touch(&self, id: i64, at: i64) -> Result<()>;
    /// The database, as a URL without credentials; an audit log at the same location shares
    /// this backend's transactions.
    fn location(&self) -> String;
    /// The identity of the connection pool, for backends that have one
    /// ([`crate::store::Store::id`]): equal ids are one pool.
    fn store_id(&self) -> Option<u64> {
        None
    }
}

/// A closure returning a value, through the object-safe [`ApiKeyBackend::read`].
pub(crate) fn read<T>(
    backend: &dyn ApiKeyBackend,
    mut f: impl FnMut(&dyn ApiKeyRead) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    backend.read(&mut |r| {
        out = Some(f(r)?);
        Ok(())
    })?;
    out.ok_or_else(not_run)
}

/// A closure returning a value, through the object-safe [`ApiKeyBackend::write`] (the value of
/// the run that committed).
pub(crate) fn write<T>(
    backend: &dyn ApiKeyBackend,
    mut f: impl FnMut(&dyn ApiKeyWrite) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    backend.write(&mut |w| {
        out = Some(f(w)?);
        Ok(())
    })?;
    out.ok_or_else(not_run)
}

fn not_run() -> crate::error::Error {
    crate::error::StoreError::Pool(
        "the API-key backend returned without running the transaction".into(),
    )
    .into()
}
