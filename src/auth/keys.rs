//! API keys: create, verify, list, get, revoke, rotate, over an
//! [`ApiKeyBackend`](super::backend::ApiKeyBackend) (SQLite by default; no SQL here).
//!
//! Verification: offline format + checksum check, then the key's environment against the
//! registry's `accepted_envs`, then HMAC-SHA256 of the presented key under a secret derived from
//! the keyring, looked up by that hash and compared in constant time, then the row's policy MAC.
//! Verified keys are cached (by hash, never by plaintext) for at most `cache_ttl`:
//! - in this process, `revoke` and `rotate` drop the cached entry at once;
//! - in other processes sharing the database, a revoked key keeps verifying for at most
//!   `cache_ttl` (default 1 s) — the documented bound; with a Redis broadcast
//!   ([`ApiKeys::broadcast_invalidations`], `[redis] invalidate_api_keys`), each revoke and rotate
//!   is also published and every subscribed process drops the entry within a pub/sub delivery
//!   (milliseconds, measured in tests/python/test_redis.py); while a process's subscription is
//!   down the `cache_ttl` bound applies, and on resubscribing it clears its whole cache
//!   (invalidations published meanwhile are lost);
//! - expiry is checked on every verification, cached or not;
//! - `last_used_at` is written when a key is verified from the database, so its precision is
//!   `cache_ttl`. The write is best effort: it never waits for the database's write lock (a
//!   zero busy timeout on that one statement); when another connection holds the lock the write
//!   is skipped and counted ([`ApiKeys::last_used_skipped`]).
//!
//! The hashing secret is `Keyring::derive(key id, "keel/api-key-hash/v1")`: never stored, and
//! pinned per key by the keyring key id and derivation version (`secret_key_id`, `kdf`), so
//! rotating the keyring's primary key does not invalidate existing API keys (as long as the old
//! key id stays in the keyring), and keys made before HKDF derivation (version 1, see
//! `crypto::keyring`) keep verifying: while such rows exist, a presented key is also looked up
//! under its version-1 hashes.
//!
//! Policy MAC: every column that decides access (id, tenant, name, env, display, hash, secret key
//! id, scopes, rate limit, creation, expiry, revocation, replaced_by) is covered by
//! HMAC-SHA256(k, ...) with k = `Keyring::derive(key id, "keel/api-key-policy/v1")` (with the
//! row's derivation version), stored in
//! `policy_mac` and checked on every verification from the database (a cached verification was
//! checked when it was cached). A row edited without the keyring is refused with
//! [`AuthError::Tampered`]. Revocation and rotation rewrite the MAC in the same transaction as
//! the change. Rows written before the column existed are sealed once, when an `ApiKeys` first
//! opens the upgraded database (trust on upgrade: migration 4 records the highest row id of the
//! time, and only rows up to it without a MAC are sealed, once).
//!
//! Audit: with an audit log on the same database file, each admin operation (create, revoke,
//! rotate) and its audit entry commit in one transaction: neither exists without the other.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::backend::{
    self, ApiKeyBackend, ApiKeyWrite, KeyInfoRow, KeyPolicyRow as Policy, NewKeyRow, SqliteApiKeys,
};
use super::key::{self, KeyHasher};
use crate::cache::{Cache, CacheConfig};
use crate::clock::{Clock, SystemWallClock, WallClock};
use crate::crypto::field::{self, Ad};
use crate::crypto::{AuditLog, Kdf, Keyring, NewAuditEntry};
use crate::error::{AuthError, Error, Result};
use crate::store::Store;
use crate::telemetry::metrics;

const TABLE: &str = "api_keys";
const SECRET_LABEL: &[u8] = b"keel/api-key-hash/v1";
const POLICY_LABEL: &[u8] = b"keel/api-key-policy/v1";
/// How long recording a refused verification may wait for the database's write lock before it
/// is skipped (and counted): a refusal must not hold up its caller for the store's busy deadline.
pub const REFUSAL_AUDIT_WAIT: Duration = Duration::from_millis(100);
const MAX_NAME_LEN: usize = 256;
const MAX_SCOPE_LEN: usize = 128;
const MAX_METADATA_LEN: usize = 64 * 1024;
/// Refused verifications recorded in the audit log per minute and process; beyond that they are
/// counted (and logged as a warning with the count) instead of written.
pub(super) const FAILURE_AUDITS_PER_MINUTE: u64 = 120;

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// The tenant owning the key.
    pub tenant: String,
    /// A label for admins ("mobile app", "partner X"). Stored in clear; no secrets here.
    pub name: String,
    /// Environment label in the key (`live`, `test`...).
    pub env: String,
    /// Scopes granted (e.g. `chat:write`).
    pub scopes: Vec<String>,
    /// When the key stops working; `None` for never.
    pub expires_at: Option<SystemTime>,
    /// Optional JSON metadata (encrypted at rest).
    pub metadata: Option<String>,
    /// Optional per-key rate limit: (units, window).
    pub rate_limit: Option<(u64, Duration)>,
}

/// A key's public description (never its hash or plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Row id.
    pub id: i64,
    /// Owning tenant.
    pub tenant: String,
    /// Admin label.
    pub name: String,
    /// Environment label.
    pub env: String,
    /// `keel_<env>_` plus a few random characters.
    pub display: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Decrypted metadata JSON, if any.
    pub metadata: Option<String>,
    /// Per-key rate limit, if any.
    pub rate_limit: Option<(u64, Duration)>,
    /// Creation time (ms since the epoch).
    pub created_at_ms: i64,
    /// Expiry (ms since the epoch), if any; a rotated key's grace end.
    pub expires_at_ms: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<i64>,
    /// Last verification from the database (precision: the cache TTL).
    pub last_used_at_ms: Option<i64>,
    /// The key that replaced this one by rotation, if any.
    pub replaced_by: Option<i64>,
}

impl KeyInfo {
    /// The key's id under the name every door uses for it ([`Identity::key_id`], the
    /// `key_id` argument of `get`, `revoke`, `rotate`; C `out_key_id`, Python
    /// `ApiKeyInfo.key_id`): the same value as the field [`KeyInfo::id`].
    pub fn key_id(&self) -> i64 {
        self.id
    }
}

/// Who a verified key belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Row id of the key.
    pub key_id: i64,
    /// Owning tenant.
    pub tenant: String,
    /// Admin label.
    pub name: String,
    /// Environment label.
    pub env: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Per-key rate limit, if any.
    pub rate_limit: Option<(u64, Duration)>,
    expires_at_ms: Option<i64>,
}

impl Identity {
    /// Whether the key has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `Ok` if the key has `scope`, else [`AuthError::MissingScope`].
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope {
                scope: scope.to_owned(),
            }
            .into())
        }
    }
}

/// Default [`ApiKeysOptions::cache_ttl`], used by every front door: how late, at most, another
/// process notices a revocation.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// Default [`ApiKeysOptions::cache_entries`], used by every front door.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;

/// How long a rotated key keeps working when the caller does not say (the Python door's
/// default `grace`).
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(3600);

/// The key environment of a key whose creator does not name one, and the one environment an
/// [`ApiKeys`] accepts by default ([`ApiKeysOptions::accepted_envs`]).
pub const DEFAULT_ENV: &str = "live";

/// The audit actor of an admin operation whose caller does not name one (the Python door's
/// default `actor`).
pub const DEFAULT_ACTOR: &str = "admin";

/// A list given as one text (a C argument, an environment variable): the words separated by
/// ASCII whitespace, empty words dropped. `"read  write"` is `["read", "write"]`, `""` is `[]`.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split_ascii_whitespace().map(str::to_owned).collect()
}

/// Settings of [`ApiKeys`].
#[derive(Debug, Clone)]
pub struct ApiKeysOptions {
    /// How long a verified key is trusted without asking the database (the bound on how late
    /// another process notices a revocation). Default [`DEFAULT_CACHE_TTL`] (1 s).
    pub cache_ttl: Duration,
    /// Most verified keys cached. Default [`DEFAULT_CACHE_ENTRIES`] (10 000).
    pub cache_entries: u64,
    /// The key environments (`keel_<env>_...`) this registry accepts; a key of any other
    /// environment is refused with [`AuthError::WrongEnvironment`] before any lookup. Default
    /// `["live"]`: a production app refuses `keel_test_...` keys. Keys of any environment can
    /// still be created (an admin tool may issue keys for another deployment).
    pub accepted_envs: Vec<String>,
}

impl Default for ApiKeysOptions {
    fn default() -> Self {
        Self {
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            accepted_envs: vec![DEFAULT_ENV.to_owned()],
        }
    }
}

impl ApiKeysOptions {
    /// Options with the core's default for each setting left `None`, checked by
    /// [`Self::validate`]: the one place every front door turns its arguments into options.
    pub fn new(
        cache_ttl: Option<Duration>,
        cache_entries: Option<u64>,
        accepted_envs: Option<Vec<String>>,
    ) -> Result<Self> {
        let defaults = Self::default();
        let options = Self {
            cache_ttl: cache_ttl.unwrap_or(defaults.cache_ttl),
            cache_entries: cache_entries.unwrap_or(defaults.cache_entries),
            accepted_envs: accepted_envs.unwrap_or(defaults.accepted_envs),
        };
        options.validate()?;
        Ok(options)
    }

    /// Refuses a zero `cache_ttl` or `cache_entries` and an empty or malformed
    /// `accepted_envs`, with an [`Error::InvalidArgument`] naming the setting and the value.
    pub fn validate(&self) -> Result<()> {
        if self.cache_ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "cache_ttl must be greater than zero (got 0)".into(),
            ));
        }
        if self.cache_entries == 0 {
            return Err(Error::InvalidArgument(
                "cache_entries must be at least 1 (got 0)".into(),
            ));
        }
        if self.accepted_envs.is_empty() {
            return Err(Error::InvalidArgument(
                "accepted_envs must name at least one key environment (e.g. \"live\")".into(),
            ));
        }
        for env in &self.accepted_envs {
            if key::check_env(env).is_err() {
                return Err(Error::InvalidArgument(format!(
                    "accepted_envs: {env:?} is not 1-16 lowercase ASCII letters or digits"
                )));
            }
        }
        Ok(())
    }
}

/// The name of the verified-key cache in the metrics (`keel_cache_hits_total{cache="api_keys"}`).
pub const API_KEYS_CACHE: &str = "api_keys";

/// The API-key registry over an [`ApiKeyBackend`] (SQLite by default). `Send + Sync`.
pub struct ApiKeys {
    backend: Arc<dyn ApiKeyBackend>,
    keyring: Arc<Keyring>,
    hashers: RwLock<HashMap<(Kdf, u32), KeyHasher>>,
    cache: Arc<Cache<[u8; 32], Arc<Identity>>>,
    clock: Arc<dyn WallClock>,
    audit: Option<Arc<AuditLog>>,
    /// Whether `audit` is on this registry's database file, so that its entries are written in
    /// the transaction of the operation they record.
    audit_atomic: bool,
    accepted_envs: Vec<String>,
    policy_keys: RwLock<HashMap<(Kdf, u32), Hmac<Sha256>>>,
    /// Whether rows hashed with derivation version 1 existed at open (none are made since): then
    /// verification also tries version-1 hashes.
    legacy_rows: bool,
    /// `last_used_at` writes skipped because the database was busy (or failed).
    last_used_skipped: std::sync::atomic::AtomicU64,
    /// Refused-verification audit entries skipped because the database was busy (or failed).
    refusal_audits_skipped: std::sync::atomic::AtomicU64,
    /// Bumped by every revoke and rotate: a verification that read the database before such a
    /// change must not put its (now stale) result in the cache.
    generation: std::sync::atomic::AtomicU64,
    /// Bounds the audit writes caused by refused verifications (anyone can mint well-formed
    /// unknown keys; each refusal must not become a database write).
    failure_audits: crate::ratelimit::RateLimiter,
    suppressed_failure_audits: std::sync::atomic::AtomicU64,
    /// Where revocations are published for the other hosts (set once).
    #[cfg(feature = "redis")]
    broadcast: std::sync::OnceLock<Arc<crate::redis::Redis>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_text(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} must be 1-{max} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<String> {
    for s in scopes {
        if s.is_empty()
            || s.len() > MAX_SCOPE_LEN
            || s.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Error::InvalidArgument(
                "a scope must be 1-128 bytes without spaces or control characters".into(),
            ));
        }
    }
    Ok(scopes.join(" "))
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ApiKeys {
    /// Opens the registry on `store` (whose migrations created the table), using `keyring` for
    /// the hashing secret and metadata encryption, and the system wall clock.
    pub fn new(store: Store, keyring: Arc<Keyring>, options: ApiKeysOptions) -> Result<Self> {
        Self::with_backend(Arc::new(SqliteApiKeys::new(store)), keyring, options)
    }

    /// The registry over any backend, on the system wall clock.
    pub fn with_backend(
        backend: Arc<dyn ApiKeyBackend>,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
    ) -> Result<Self> {
        Self::build(backend, keyring, options, Arc::new(SystemWallClock), None)
    }

    /// As [`ApiKeys::new`] with another wall clock (creation, expiry and last-use times).
    pub fn with_clock(
        store: Store,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn WallClock>,
    ) -> Result<Self> {
        Self::with_backend_and_clock(Arc::new(SqliteApiKeys::new(store)), keyring, options, clock)
    }

    /// As [`ApiKeys::with_clock`], with the verified-key cache on the monotonic clock
    /// `cache_clock` too, so that a test can step past `cache_ttl`.
    pub fn with_clocks(
        store: Store,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn WallClock>,
        cache_clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::with_backend_and_clocks(
            Arc::new(SqliteApiKeys::new(store)),
            keyring,
            options,
            clock,
            cache_clock,
        )
    }

    /// As [`ApiKeys::with_backend`] with another wall clock, as [`ApiKeys::with_clock`].
    pub fn with_backend_and_clock(
        backend: Arc<dyn ApiKeyBackend>,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn WallClock>,
    ) -> Result<Self> {
        Self::build(backend, keyring, options, clock, None)
    }

    /// As [`ApiKeys::with_backend`] with both clocks, as [`ApiKeys::with_clocks`].
    pub fn with_backend_and_clocks(
        backend: Arc<dyn ApiKeyBackend>,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn WallClock>,
        cache_clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::build(backend, keyring, options, clock, Some(cache_clock))
    }

    fn build(
        backend: Arc<dyn ApiKeyBackend>,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn WallClock>,
        cache_clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self> {
        options.validate()?;
        let config = CacheConfig::new(options.cache_entries).ttl(options.cache_ttl);
        let cache = match &cache_clock {
            Some(c) => Cache::with_clock(config, Arc::clone(c))?,
            None => Cache::new(config)?,
        };
        let cache = Arc::new(cache);
        metrics::register_cache(API_KEYS_CACHE, &cache)?;
        // The refusal-audit budget runs on the same monotonic clock as the cache (a test's
        // manual clock, else the host's), so a slower database cannot refill it mid-test.
        let audit_policy = crate::ratelimit::Policy::gcra(
            "audit-failures",
            FAILURE_AUDITS_PER_MINUTE,
            Duration::from_secs(60),
        )?;
        let failure_audits = match cache_clock {
            Some(c) => crate::ratelimit::RateLimiter::with_options(
                audit_policy,
                crate::ratelimit::DEFAULT_MAX_KEYS,
                c,
            )?,
            None => crate::ratelimit::RateLimiter::new(audit_policy),
        };
        let mut keys = Self {
            backend,
            keyring,
            hashers: RwLock::new(HashMap::new()),
            cache,
            clock,
            audit: None,
            audit_atomic: false,
            accepted_envs: options.accepted_envs,
            policy_keys: RwLock::new(HashMap::new()),
            legacy_rows: false,
            last_used_skipped: std::sync::atomic::AtomicU64::new(0),
            refusal_audits_skipped: std::sync::atomic::AtomicU64::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
            failure_audits,
            suppressed_failure_audits: std::sync::atomic::AtomicU64::new(0),
            #[cfg(feature = "redis")]
            broadcast: std::sync::OnceLock::new(),
        };
        keys.seal_legacy_rows()?;
        keys.legacy_rows = backend::read(&*keys.backend, |r| r.has_kdf(Kdf::LegacyHmac.stored()))?;
        Ok(keys)
    }

    /// Records admin operations (create, revoke, rotate) and refused verifications of
    /// well-formed keys (unknown, revoked, expired, tampered) in `audit`. When `audit` is on the
    /// same database file, each admin operation and its entry commit in one transaction; on
    /// another file the entry is written after the operation commits (not atomic: prefer
    /// [`ApiKeys::try_with_audit`], which refuses that).
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit_atomic = audit.location() == self.backend.location();
        self.audit = Some(audit);
        self
    }

    /// As [`ApiKeys::with_audit`], but refuses an audit log on another database file (whose
    /// entries could not share the operations' transactions).
    pub fn try_with_audit(self, audit: Arc<AuditLog>) -> Result<Self> {
        if audit.location() != self.backend.location() {
            return Err(Error::InvalidArgument(format!(
                "the audit log must be in the API keys' database {} so that each operation and \
                 its audit entry commit together",
                self.backend.location()
            )));
        }
        Ok(self.with_audit(audit))
    }

    /// The identity of the store (connection pool) the registry's backend uses, when it has
    /// one ([`Store::id`]): an engine's memory, API keys and audit log report the same.
    pub fn store_id(&self) -> Option<u64> {
        self.backend.store_id()
    }

    /// `last_used_at` writes skipped so far because the database was busy (they never wait).
    pub fn last_used_skipped(&self) -> u64 {
        self.last_used_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refused verifications not recorded in the audit log so far because the database stayed
    /// busy longer than [`REFUSAL_AUDIT_WAIT`] (or the write failed); those beyond the
    /// per-minute budget are not counted here.
    pub fn refusal_audits_skipped(&self) -> u64 {
        self.refusal_audits_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn entry(actor: &str, action: &str, target: String, outcome: &str) -> NewAuditEntry {
        NewAuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
            outcome: outcome.to_owned(),
            request_id: None,
        }
    }

    /// Appends `e` inside the operation's transaction when the audit log shares the database.
    fn record_in(&self, tx: &dyn ApiKeyWrite, e: &NewAuditEntry) -> Result<()> {
        match &self.audit {
            Some(audit) if self.audit_atomic => audit.append_in(tx, e).map(drop),
            _ => Ok(()),
        }
    }

    /// Appends `e` after the operation committed, for an audit log on another file.
    fn record_after(&self, e: &NewAuditEntry) -> Result<()> {
        match &self.audit {
            Some(audit) if !self.audit_atomic => audit.append(e).map(drop),
            _ => Ok(()),
        }
    }

    /// Records a refused verification, best effort: waits at most [`REFUSAL_AUDIT_WAIT`] for
    /// the write lock; a skipped or failed record is counted and logged, never an error.
    fn record_refusal(&self, audit: &AuditLog, e: &NewAuditEntry) {
        let skipped = match audit.try_append(e, REFUSAL_AUDIT_WAIT) {
            Ok(Some(_)) => return,
            Ok(None) => "database busy",
            Err(_) => "write failed",
        };
        let n = self
            .refusal_audits_skipped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                keel.auth.skipped_audits = n,
                reason = skipped,
                "refused API-key verification not recorded in the audit log"
            );
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn hasher(&self, kdf: Kdf, key_id: u32) -> Result<KeyHasher> {
        if let Some(h) = self
            .hashers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kdf, key_id))
        {
            return Ok(h.clone());
        }
        let hasher =
            KeyHasher::from_derived(&self.keyring.derive_with(kdf, key_id, SECRET_LABEL)?);
        self.hashers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kdf, key_id), hasher.clone());
        Ok(hasher)
    }

    /// Creates a key on behalf of `actor`; returns its plaintext (show it once, store it
    /// nowhere) and description. With an audit log on the same database, the key and its
    /// `api_key.create` entry commit together.
    pub fn create(&self, actor: &str, new: &NewKey) -> Result<(Zeroizing<String>, KeyInfo)> {
        metrics::start(metrics::Op::AuthAdmin).finish(self.create_measured(actor, new))
    }

    fn create_measured(&self, actor: &str, new: &NewKey) -> Result<(Zeroizing<String>, KeyInfo)> {
        let _span = tracing::info_span!("auth.create_key").entered();
        let prepared = self.prepare(new)?;
        let target = |id: i64| format!("{}/{id}", new.tenant);
        let id = backend::write(&*self.backend, |tx| {
            let id = self.insert_in(tx, new, &prepared)?;
            self.record_in(
                tx,
                &Self::entry(actor, "api_key.create", target(id), "success"),
            )?;
            Ok(id)
        })?;
        self.record_after(&Self::entry(actor, "api_key.create", target(id), "success"))?;
        let info = self.get(&new.tenant, id)?;
        Ok((prepared.plaintext, info))
    }

    /// Checks a new key's fields and makes its plaintext and hash (outside any transaction).
    fn prepare(&self, new: &NewKey) -> Result<Prepared> {
        check_text("tenant", &new.tenant, MAX_NAME_LEN)?;
        check_text("name", &new.name, MAX_NAME_LEN)?;
        let scopes = check_scopes(&new.scopes)?;
        if let Some(m) = &new.metadata {
            if m.len() > MAX_METADATA_LEN || serde_json::from_str::<serde_json::Value>(m).is_err() {
                return Err(Error::InvalidArgument(
                    "metadata must be JSON of at most 64 KiB".into(),
                ));
            }
        }
        if let Some((limit, window)) = new.rate_limit {
            crate::ratelimit::Policy::gcra("key", limit, window)?;
        }
        let plaintext = key::generate(&new.env)?;
        let display = key::parse(&plaintext)?.display;
        let secret_key_id = self.keyring.primary_id();
        let hash = self.hasher(Kdf::CURRENT, secret_key_id)?.hash(&plaintext);
        Ok(Prepared {
            plaintext,
            display,
            hash,
            secret_key_id,
            scopes,
            expires_at: new.expires_at.map(ms),
        })
    }

    /// Inserts a prepared key and seals its policy MAC, inside `tx`; returns its row id.
    fn insert_in(&self, tx: &dyn ApiKeyWrite, new: &NewKey, p: &Prepared) -> Result<i64> {
        let now = self.now_ms();
        let limit = new.rate_limit.map(|(l, _)| l as i64);
        let window = new
            .rate_limit
            .map(|(_, w)| i64::try_from(w.as_millis()).unwrap_or(i64::MAX));
        let id = tx.insert_key(&NewKeyRow {
            tenant: &new.tenant,
            name: &new.name,
            env: &new.env,
            display: &p.display,
            hash: &p.hash,
            secret_key_id: p.secret_key_id,
            scopes: &p.scopes,
            rate_limit: limit,
            rate_window_ms: window,
            created_at: now,
            expires_at: p.expires_at,
            kdf: Kdf::CURRENT.stored(),
        })?;
        if let Some(m) = &new.metadata {
            let ct = field::encrypt(&self.keyring, m.as_bytes(), &ad(&new.tenant, &[id]))?;
            tx.set_metadata(id, &ct)?;
        }
        self.seal(
            tx,
            &Policy {
                id,
                tenant: new.tenant.clone(),
                name: new.name.clone(),
                env: new.env.clone(),
                display: p.display.clone(),
                hash: p.hash.to_vec(),
                secret_key_id: p.secret_key_id,
                scopes: p.scopes.clone(),
                rate_limit: limit,
                rate_window_ms: window,
                created_at: now,
                expires_at: p.expires_at,
                revoked_at: None,
                replaced_by: None,
                policy_mac: None,
                kdf: Kdf::CURRENT.stored(),
            },
        )?;
        Ok(id)
    }

    /// The policy MAC key for rows whose secret came from keyring key `key_id` with
    /// derivation `kdf`.
    fn policy_key(&self, kdf: Kdf, key_id: u32) -> Result<Hmac<Sha256>> {
        if let Some(m) = self
            .policy_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kdf, key_id))
        {
            return Ok(m.clone());
        }
        let keyed = self.keyring.derive_with(kdf, key_id, POLICY_LABEL)?.hmac();
        self.policy_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kdf, key_id), keyed.clone());
        Ok(keyed)
    }

    /// The MAC over every policy column of `p`, fed (not finalised).
    fn policy_mac(&self, p: &Policy) -> Result<Hmac<Sha256>> {
        fn bytes(m: &mut Hmac<Sha256>, b: &[u8]) {
            m.update(&(b.len() as u64).to_le_bytes());
            m.update(b);
        }
        fn int(m: &mut Hmac<Sha256>, v: Option<i64>) {
            match v {
                None => m.update(&[0]),
                Some(v) => {
                    m.update(&[1]);
                    m.update(&v.to_le_bytes());
                }
            }
        }
        // An unknown version (a row edited outside keel) cannot be checked: tampered.
        let kdf = Kdf::from_stored(p.kdf).map_err(|_| Error::from(AuthError::Tampered))?;
        let mut m = self.policy_key(kdf, p.secret_key_id)?;
        int(&mut m, Some(p.id));
        bytes(&mut m, p.tenant.as_bytes());
        bytes(&mut m, p.name.as_bytes());
        bytes(&mut m, p.env.as_bytes());
        bytes(&mut m, p.display.as_bytes());
        bytes(&mut m, &p.hash);
        int(&mut m, Some(i64::from(p.secret_key_id)));
        bytes(&mut m, p.scopes.as_bytes());
        int(&mut m, p.rate_limit);
        int(&mut m, p.rate_window_ms);
        int(&mut m, Some(p.created_at));
        int(&mut m, p.expires_at);
        int(&mut m, p.revoked_at);
        int(&mut m, p.replaced_by);
        Ok(m)
    }

    /// Writes `p`'s policy columns' MAC to its row.
    fn seal(&self, tx: &dyn ApiKeyWrite, p: &Policy) -> Result<()> {
        let mac: [u8; 32] = self.policy_mac(p)?.finalize().into_bytes().into();
        tx.set_policy_mac(p.id, &mac)
    }

    /// Whether `stored` is `p`'s policy MAC (constant-time comparison).
    fn policy_ok(&self, p: &Policy, stored: Option<&[u8]>) -> Result<bool> {
        let Some(stored) = stored else {
            return Ok(false);
        };
        Ok(self.policy_mac(p)?.verify_slice(stored).is_ok())
    }

    /// Trust on upgrade: seals the rows that existed when migration 4 added `policy_mac` (it
    /// recorded their highest id in `api_keys_upgrade`), once; then drops the marker, after
    /// which a row without a MAC is refused as tampered. Rows under a keyring key this keyring
    /// lacks stay unsealed, and the marker stays until a keyring holding it opens the database.
    fn seal_legacy_rows(&self) -> Result<()> {
        if backend::read(&*self.backend, |r| r.upgrade_marker())?.is_none() {
            return Ok(());
        }
        let (sealed, left) = backend::write(&*self.backend, |tx| {
            let Some(max_id) = tx.upgrade_marker()? else {
                return Ok((0, 0));
            };
            let rows = tx.unsealed(max_id)?;
            let (mut sealed, mut left) = (0u64, 0u64);
            for p in rows {
                if self.keyring.has_key(p.secret_key_id) {
                    self.seal(tx, &p)?;
                    sealed += 1;
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                tx.drop_upgrade_marker()?;
            }
            Ok((sealed, left))
        })?;
        if sealed > 0 || left > 0 {
            tracing::info!(
                keel.auth.sealed_keys = sealed,
                keel.auth.unsealed_keys = left,
                "API keys written before policy MACs existed were sealed (trust on upgrade)"
            );
        }
        Ok(())
    }

    /// Verifies a presented key: its identity and scopes, or why it is refused
    /// (`Malformed`, `BadChecksum`, `WrongEnvironment`, `UnknownKey`, `Revoked`, `Expired`,
    /// `Tampered`).
    pub fn verify(&self, presented: &str) -> Result<Arc<Identity>> {
        let timer = metrics::start(metrics::Op::AuthVerify);
        // The outcome, never the key (nor its tenant or display prefix).
        let span =
            tracing::info_span!("auth.verify", keel.auth.outcome = tracing::field::Empty).entered();
        let result = self.verify_measured(presented);
        span.record("keel.auth.outcome", verify_outcome(&result));
        metrics::auth_verified(timer, &result);
        result
    }

    fn verify_measured(&self, presented: &str) -> Result<Arc<Identity>> {
        let parsed = key::parse(presented)?;
        if !self.accepted_envs.contains(&parsed.env) {
            return Err(AuthError::WrongEnvironment {
                env: parsed.env,
                accepted: self.accepted_envs.clone(),
            }
            .into());
        }
        let result = self.verify_parsed(presented);
        if let Err(Error::Auth(reason)) = &result {
            let outcome = match reason {
                AuthError::UnknownKey => "refused: unknown",
                AuthError::Revoked => "refused: revoked",
                AuthError::Expired => "refused: expired",
                AuthError::Tampered => "refused: tampered",
                _ => "refused",
            };
            if let Some(audit) = &self.audit {
                if self.failure_audits.check("all", 1)?.allowed {
                    let e = Self::entry(&parsed.display, "api_key.verify", String::new(), outcome);
                    self.record_refusal(audit, &e);
                } else {
                    let n = self
                        .suppressed_failure_audits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            keel.auth.suppressed_audits = n,
                            "refused API-key verifications above the audit budget are not recorded"
                        );
                    }
                }
            }
        }
        result
    }

    fn verify_parsed(&self, presented: &str) -> Result<Arc<Identity>> {
        let primary = self.keyring.primary_id();
        let hash = self.hasher(Kdf::CURRENT, primary)?.hash(presented);
        if let Some(identity) = self.cache.get(&hash) {
            self.check_expiry(&identity)?;
            return Ok(identity);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        // Keys made under an older keyring primary hash with that key's secret; keys made
        // before HKDF derivation, with its version-1 secret.
        let mut candidates = vec![(Kdf::CURRENT, primary, hash)];
        for kdf in Kdf::ALL {
            if kdf != Kdf::CURRENT && !self.legacy_rows {
                continue;
            }
            for id in self.keyring.key_ids() {
                if (kdf, id) != (Kdf::CURRENT, primary) {
                    candidates.push((kdf, id, self.hasher(kdf, id)?.hash(presented)));
                }
            }
        }
        for (kdf, secret_id, candidate) in candidates {
            if let Some(identity) = self.lookup(&candidate, kdf, secret_id, presented)? {
                self.check_expiry(&identity)?;
                let identity = Arc::new(identity);
                // A revoke or rotate that ran meanwhile may concern this key: then do not cache
                // what was read before it (the next verification reads the database again).
                if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                    self.cache.insert(hash, identity.clone())?;
                }
                return Ok(identity);
            }
        }
        Err(AuthError::UnknownKey.into())
    }

    fn check_expiry(&self, identity: &Identity) -> Result<()> {
        match identity.expires_at_ms {
            Some(at) if self.now_ms() >= at => Err(AuthError::Expired.into()),
            _ => Ok(()),
        }
    }

    fn lookup(
        &self,
        hash: &[u8; 32],
        kdf: Kdf,
        secret_id: u32,
        presented: &str,
    ) -> Result<Option<Identity>> {
        let row = backend::read(&*self.backend, |r| r.by_hash(hash))?;
        let Some(p) = row else {
            return Ok(None);
        };
        // Defence in depth: the row must hold this key's hash under the secret it names.
        if p.secret_key_id != secret_id
            || p.kdf != kdf.stored()
            || !self
                .hasher(kdf, p.secret_key_id)?
                .verify(presented, &p.hash)
        {
            return Ok(None);
        }
        if !self.policy_ok(&p, p.policy_mac.as_deref())? {
            tracing::warn!(
                keel.auth.key_id = p.id,
                "API key row fails its policy MAC: edited outside keel"
            );
            return Err(AuthError::Tampered.into());
        }
        if p.revoked_at.is_some() {
            return Err(AuthError::Revoked.into());
        }
        self.touch(p.id);
        Ok(Some(Identity {
            key_id: p.id,
            scopes: split_scopes(&p.scopes),
            rate_limit: p
                .rate_limit
                .zip(p.rate_window_ms)
                .map(|(l, w)| (l as u64, Duration::from_millis(w as u64))),
            expires_at_ms: p.expires_at,
            tenant: p.tenant,
            name: p.name,
            env: p.env,
        }))
    }

    /// Writes `last_used_at`, best effort: one try with a zero busy timeout, so a verification
    /// never waits for another connection's write lock; a skipped write is counted.
    fn touch(&self, id: i64) {
        let now = self.now_ms();
        let done = self.backend.touch(id, now);
        if done.is_err() {
            let n = self
                .last_used_skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                tracing::debug!(
                    keel.auth.last_used_skipped = n,
                    "last_used_at not written: database busy"
                );
            }
        }
    }

    /// One key of `tenant`, or [`AuthError::UnknownKey`].
    pub fn get(&self, tenant: &str, id: i64) -> Result<KeyInfo> {
        let _span = tracing::info_span!("auth.get_key").entered();
        backend::read(&*self.backend, |r| r.info(tenant, id))?
            .map(|raw| self.finish_info(raw))
            .transpose()?
            .ok_or_else(|| AuthError::UnknownKey.into())
    }

    /// Every key of `tenant`, oldest first.
    pub fn list(&self, tenant: &str) -> Result<Vec<KeyInfo>> {
        let _span = tracing::info_span!("auth.list_keys").entered();
        let raws = backend::read(&*self.backend, |r| r.infos(tenant))?;
        raws.into_iter().map(|r| self.finish_info(r)).collect()
    }

    fn finish_info(&self, row: KeyInfoRow) -> Result<KeyInfo> {
        let metadata = match row.metadata {
            Some(ct) => {
                let pt = field::decrypt(&self.keyring, &ct, &ad(&row.tenant, &[row.id]))?;
                Some(
                    String::from_utf8(pt)
                        .map_err(|_| Error::InvalidArgument("metadata is not UTF-8".into()))?,
                )
            }
            None => None,
        };
        Ok(KeyInfo {
            id: row.id,
            scopes: split_scopes(&row.scopes),
            metadata,
            rate_limit: row
                .rate_limit
                .zip(row.rate_window_ms)
                .map(|(l, w)| (l as u64, Duration::from_millis(w as u64))),
            created_at_ms: row.created_at,
            expires_at_ms: row.expires_at,
            revoked_at_ms: row.revoked_at,
            last_used_at_ms: row.last_used_at,
            replaced_by: row.replaced_by,
            tenant: row.tenant,
            name: row.name,
            env: row.env,
            display: row.display,
        })
    }

    /// Revokes a key of `tenant`: it fails verification at once in this process, within the
    /// cache TTL elsewhere. Revoking twice is fine. The revocation, its policy MAC and its audit
    /// entry commit together. A row that fails its MAC is still revoked, and stays refused.
    pub fn revoke(&self, actor: &str, tenant: &str, id: i64) -> Result<()> {
        metrics::start(metrics::Op::AuthAdmin).finish(self.revoke_measured(actor, tenant, id))
    }

    fn revoke_measured(&self, actor: &str, tenant: &str, id: i64) -> Result<()> {
        let _span = tracing::info_span!("auth.revoke_key").entered();
        let now = self.now_ms();
        let target = format!("{tenant}/{id}");
        let success = Self::entry(actor, "api_key.revoke", target.clone(), "success");
        let unknown = Self::entry(actor, "api_key.revoke", target, "failure: unknown key");
        let hash: Option<Vec<u8>> = backend::write(&*self.backend, |tx| {
            let Some(mut p) = tx.policy(tenant, id)? else {
                self.record_in(tx, &unknown)?;
                return Ok(None);
            };
            if p.revoked_at.is_none() {
                let intact = self.policy_ok(&p, p.policy_mac.as_deref())?;
                p.revoked_at = Some(now);
                tx.set_revoked(id, now)?;
                if intact {
                    self.seal(tx, &p)?;
                }
            }
            self.record_in(tx, &success)?;
            Ok(Some(p.hash))
        })?;
        let Some(hash) = hash else {
            self.record_after(&unknown)?;
            return Err(AuthError::UnknownKey.into());
        };
        self.forget(&hash);
        self.record_after(&success)
    }

    /// Drops a key from the verified cache (the cache is keyed by the primary secret's hash;
    /// a key made under an older secret is cached under its primary-secret hash, which cannot
    /// be derived without the plaintext, so the whole cache is cleared in that case).
    fn forget(&self, stored_hash: &[u8]) {
        self.forget_here(stored_hash);
        #[cfg(feature = "redis")]
        if let Some(redis) = self.broadcast.get() {
            if let Err(e) = redis.publish(INVALIDATION_TOPIC, Some(stored_hash)) {
                // The change is committed; the other hosts fall back on `cache_ttl`, and clear
                // their caches when their subscription (lost with Redis) comes back.
                tracing::warn!(error = %e, "API-key invalidation not broadcast");
            }
        }
    }

    fn forget_here(&self, stored_hash: &[u8]) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match <[u8; 32]>::try_from(stored_hash) {
            Ok(h) if self.cache.contains_key(&h) => {
                self.cache.remove(&h);
            }
            _ => self.cache.clear(),
        }
    }

    /// Publishes every revoke and rotate on `redis` and drops the keys revoked or rotated by
    /// other processes from this registry's verified-key cache as their messages arrive (see the
    /// module docs for the bound and what happens while the subscription is down). Call once.
    #[cfg(feature = "redis")]
    pub fn broadcast_invalidations(
        self: &Arc<Self>,
        redis: Arc<crate::redis::Redis>,
    ) -> Result<()> {
        if self.broadcast.set(Arc::clone(&redis)).is_err() {
            return Err(Error::InvalidArgument(
                "this API-key registry already broadcasts its invalidations".into(),
            ));
        }
        let sink: std::sync::Weak<dyn crate::redis::Invalidate> =
            Arc::downgrade(self) as std::sync::Weak<dyn crate::redis::Invalidate>;
        redis.subscribe(sink);
        Ok(())
    }

    /// Replaces a key of `tenant` with a new one (same tenant, name, env, scopes, metadata and
    /// rate limit). The old key keeps working for `grace`, then expires. Returns the new key's
    /// plaintext and description. The new key, the old key's new expiry and link, both policy
    /// MACs and the audit entry commit in one transaction; a key whose row fails its MAC is not
    /// rotated ([`AuthError::Tampered`]).
    pub fn rotate(
        &self,
        actor: &str,
        tenant: &str,
        id: i64,
        grace: Duration,
    ) -> Result<(Zeroizing<String>, KeyInfo)> {
        metrics::start(metrics::Op::AuthAdmin)
            .finish(self.rotate_measured(actor, tenant, id, grace))
    }

    fn rotate_measured(
        &self,
        actor: &str,
        tenant: &str,
        id: i64,
        grace: Duration,
    ) -> Result<(Zeroizing<String>, KeyInfo)> {
        let _span = tracing::info_span!("auth.rotate_key").entered();
        let grace_end = self
            .now_ms()
            .saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let target = |new_id: i64| format!("{tenant}/{id} -> {tenant}/{new_id}");
        let (plaintext, new_id, old_hash) = backend::write(&*self.backend, |tx| {
            let mut old = tx.policy(tenant, id)?.ok_or(AuthError::UnknownKey)?;
            if !self.policy_ok(&old, old.policy_mac.as_deref())? {
                return Err(AuthError::Tampered.into());
            }
            if old.revoked_at.is_some() {
                return Err(AuthError::Revoked.into());
            }
            let metadata = tx.metadata(id)?;
            let metadata = metadata
                .map(|ct| {
                    let pt = field::decrypt(&self.keyring, &ct, &ad(tenant, &[id]))?;
                    String::from_utf8(pt)
                        .map_err(|_| Error::InvalidArgument("metadata is not UTF-8".into()))
                })
                .transpose()?;
            let new = NewKey {
                tenant: old.tenant.clone(),
                name: old.name.clone(),
                env: old.env.clone(),
                scopes: split_scopes(&old.scopes),
                expires_at: old
                    .expires_at
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
                metadata,
                rate_limit: old
                    .rate_limit
                    .zip(old.rate_window_ms)
                    .map(|(l, w)| (l as u64, Duration::from_millis(w as u64))),
            };
            let prepared = self.prepare(&new)?;
            let new_id = self.insert_in(tx, &new, &prepared)?;
            old.replaced_by = Some(new_id);
            old.expires_at = Some(old.expires_at.unwrap_or(grace_end).min(grace_end));
            tx.set_replaced(id, new_id, old.expires_at)?;
            self.seal(tx, &old)?;
            self.record_in(
                tx,
                &Self::entry(actor, "api_key.rotate", target(new_id), "success"),
            )?;
            Ok((prepared.plaintext, new_id, old.hash))
        })?;
        self.forget(&old_hash);
        self.record_after(&Self::entry(
            actor,
            "api_key.rotate",
            target(new_id),
            "success",
        ))?;
        let info = self.get(tenant, new_id)?;
        Ok((plaintext, info))
    }
}

/// A new key's checked, derived fields.
struct Prepared {
    plaintext: Zeroizing<String>,
    display: String,
    hash: [u8; 32],
    secret_key_id: u32,
    scopes: String,
    expires_at: Option<i64>,
}

/// Binds a metadata ciphertext to its tenant and row.
fn ad<'a>(tenant: &'a str, row: &'a [i64; 1]) -> Ad<'a> {
    Ad {
        table: TABLE,
        column: "metadata",
        tenant,
        row,
    }
}

/// The `keel.auth.outcome` span attribute of a verification: `ok` or the refusal reason (the
/// names of Python's `AuthError.reason`).
fn verify_outcome(result: &Result<Arc<Identity>>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Auth(e)) => match e {
            AuthError::Malformed => "malformed",
            AuthError::BadChecksum => "bad_checksum",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Revoked => "revoked",
            AuthError::Expired => "expired",
            AuthError::Tampered => "tampered",
            AuthError::WrongEnvironment { .. } => "wrong_environment",
            _ => "invalid",
        },
        Err(_) => "error",
    }
}

/// The invalidation topic of verified API keys.
#[cfg(feature = "redis")]
const INVALIDATION_TOPIC: &str = "api_keys";

#[cfg(feature = "redis")]
impl crate::redis::Invalidate for ApiKeys {
    fn topic(&self) -> &str {
        INVALIDATION_TOPIC
    }

    fn forget(&self, key: &[u8]) {
        self.forget_here(key);
    }

    fn forget_all(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.cache.clear();
    }
}
