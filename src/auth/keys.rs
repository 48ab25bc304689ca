//! API keys on the SQLite store: create, verify, list, get, revoke, rotate.
//!
//! Verification: offline format + checksum check, then HMAC-SHA256 of the presented key under
//! a secret derived from the keyring, looked up by that hash and compared in constant time.
//! Verified keys are cached (by hash, never by plaintext) for at most `cache_ttl`:
//! - in this process, `revoke` and `rotate` drop the cached entry at once;
//! - in other processes sharing the database, a revoked key keeps verifying for at most
//!   `cache_ttl` (default 1 s) — the documented bound;
//! - expiry is checked on every verification, cached or not;
//! - `last_used_at` is written when a key is verified from the database, so its precision is
//!   `cache_ttl`.
//!
//! The hashing secret is HMAC-SHA256(keyring key, "keel/api-key-hash/v1"): never stored, and
//! pinned per key by the keyring key id, so rotating the keyring's primary key does not
//! invalidate existing API keys (as long as the old key id stays in the keyring).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use rusqlite::{params, OptionalExtension, Row};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::{self, KeyHasher};
use crate::cache::{Cache, CacheConfig};
use crate::clock::Clock;
use crate::crypto::field::{self, Ad};
use crate::crypto::{AuditLog, Keyring, NewAuditEntry};
use crate::error::{AuthError, Error, Result};
use crate::store::{sqlite_err, Store};

const TABLE: &str = "api_keys";
const SECRET_LABEL: &[u8] = b"keel/api-key-hash/v1";
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

/// Settings of [`ApiKeys`].
#[derive(Debug, Clone)]
pub struct ApiKeysOptions {
    /// How long a verified key is trusted without asking the database (the bound on how late
    /// another process notices a revocation). Default 1 s.
    pub cache_ttl: Duration,
    /// Most verified keys cached. Default 10 000.
    pub cache_entries: u64,
}

impl Default for ApiKeysOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(1),
            cache_entries: 10_000,
        }
    }
}

/// The API-key registry. `Send + Sync`.
pub struct ApiKeys {
    store: Store,
    keyring: Arc<Keyring>,
    hashers: RwLock<HashMap<u32, KeyHasher>>,
    cache: Cache<[u8; 32], Arc<Identity>>,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<AuditLog>>,
    /// Bumped by every revoke and rotate: a verification that read the database before such a
    /// change must not put its (now stale) result in the cache.
    generation: std::sync::atomic::AtomicU64,
    /// Bounds the audit writes caused by refused verifications (anyone can mint well-formed
    /// unknown keys; each refusal must not become a database write).
    failure_audits: crate::ratelimit::RateLimiter,
    suppressed_failure_audits: std::sync::atomic::AtomicU64,
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
        Self::with_clock(
            store,
            keyring,
            options,
            Arc::new(crate::memory::SystemClock),
        )
    }

    /// As [`ApiKeys::new`] with another wall clock (time since the Unix epoch), for tests.
    pub fn with_clock(
        store: Store,
        keyring: Arc<Keyring>,
        options: ApiKeysOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let cache = Cache::new(CacheConfig::new(options.cache_entries).ttl(options.cache_ttl))?;
        Ok(Self {
            store,
            keyring,
            hashers: RwLock::new(HashMap::new()),
            cache,
            clock,
            audit: None,
            generation: std::sync::atomic::AtomicU64::new(0),
            failure_audits: crate::ratelimit::RateLimiter::new(crate::ratelimit::Policy::gcra(
                "audit-failures",
                FAILURE_AUDITS_PER_MINUTE,
                Duration::from_secs(60),
            )?),
            suppressed_failure_audits: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Records admin operations (create, revoke, rotate) and refused verifications of
    /// well-formed keys (unknown, revoked, expired) in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    fn record(&self, actor: &str, action: &str, target: String, outcome: &str) -> Result<()> {
        match &self.audit {
            None => Ok(()),
            Some(audit) => audit
                .append(&NewAuditEntry {
                    actor: actor.to_owned(),
                    action: action.to_owned(),
                    target,
                    outcome: outcome.to_owned(),
                    request_id: None,
                })
                .map(drop),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis()).unwrap_or(i64::MAX)
    }

    fn hasher(&self, key_id: u32) -> Result<KeyHasher> {
        if let Some(h) = self
            .hashers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_id)
        {
            return Ok(h.clone());
        }
        let material = self.keyring.key(key_id)?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&material[..])
            .map_err(|_| Error::InvalidArgument("unusable keyring key".into()))?;
        mac.update(SECRET_LABEL);
        let secret = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        let hasher = KeyHasher::new(&secret[..])?;
        self.hashers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id, hasher.clone());
        Ok(hasher)
    }

    /// Creates a key on behalf of `actor`; returns its plaintext (show it once, store it
    /// nowhere) and description.
    pub fn create(&self, actor: &str, new: &NewKey) -> Result<(Zeroizing<String>, KeyInfo)> {
        let _span = tracing::info_span!("auth.create_key", db.system.name = "sqlite").entered();
        let created = self.insert(new, None)?;
        self.record(
            actor,
            "api_key.create",
            format!("{}/{}", new.tenant, created.1.id),
            "success",
        )?;
        Ok(created)
    }

    fn insert(&self, new: &NewKey, replaces: Option<i64>) -> Result<(Zeroizing<String>, KeyInfo)> {
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
        let parsed = key::parse(&plaintext)?;
        let secret_key_id = self.keyring.primary_id();
        let hash = self.hasher(secret_key_id)?.hash(&plaintext);
        let now = self.now_ms();
        let expires = new.expires_at.map(ms);
        let id = self.store.write(|tx| {
            tx.execute(
                "INSERT INTO api_keys (tenant_id, name, env, display, hash, secret_key_id, scopes,
                    rate_limit, rate_window_ms, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    new.tenant,
                    new.name,
                    new.env,
                    parsed.display,
                    &hash[..],
                    secret_key_id,
                    scopes,
                    new.rate_limit.map(|(l, _)| l as i64),
                    new.rate_limit.map(|(_, w)| w.as_millis() as i64),
                    now,
                    expires,
                ],
            )
            .map_err(sqlite_err)?;
            let id = tx.last_insert_rowid();
            if let Some(m) = &new.metadata {
                let ct = field::encrypt(&self.keyring, m.as_bytes(), &ad(&new.tenant, &[id]))?;
                tx.execute(
                    "UPDATE api_keys SET metadata = ?1 WHERE id = ?2",
                    params![ct, id],
                )
                .map_err(sqlite_err)?;
            }
            if let Some(old) = replaces {
                // Re-checked inside this transaction: a revoke that landed after `rotate` read
                // the old key must not yield a valid replacement.
                let changed = tx
                    .execute(
                        "UPDATE api_keys SET replaced_by = ?1
                         WHERE id = ?2 AND tenant_id = ?3 AND revoked_at IS NULL",
                        params![id, old, new.tenant],
                    )
                    .map_err(sqlite_err)?;
                if changed == 0 {
                    return Err(AuthError::Revoked.into());
                }
            }
            Ok(id)
        })?;
        let info = self.get(&new.tenant, id)?;
        Ok((plaintext, info))
    }

    /// Verifies a presented key: its identity and scopes, or why it is refused
    /// (`Malformed`, `BadChecksum`, `UnknownKey`, `Revoked`, `Expired`).
    pub fn verify(&self, presented: &str) -> Result<Arc<Identity>> {
        let _span = tracing::trace_span!("auth.verify").entered();
        let parsed = key::parse(presented)?;
        let result = self.verify_parsed(presented);
        if let Err(Error::Auth(reason)) = &result {
            let outcome = match reason {
                AuthError::UnknownKey => "refused: unknown",
                AuthError::Revoked => "refused: revoked",
                AuthError::Expired => "refused: expired",
                _ => "refused",
            };
            if self.audit.is_some() {
                if self.failure_audits.check("all", 1)?.allowed {
                    self.record(&parsed.display, "api_key.verify", String::new(), outcome)?;
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
        let hash = self.hasher(primary)?.hash(presented);
        if let Some(identity) = self.cache.get(&hash) {
            self.check_expiry(&identity)?;
            return Ok(identity);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        // Keys made under an older keyring primary hash with that key's secret.
        let mut candidates = vec![(primary, hash)];
        for id in self.keyring.key_ids() {
            if id != primary {
                candidates.push((id, self.hasher(id)?.hash(presented)));
            }
        }
        for (secret_id, candidate) in candidates {
            if let Some(identity) = self.lookup(&candidate, secret_id, presented)? {
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

    fn lookup(&self, hash: &[u8; 32], secret_id: u32, presented: &str) -> Result<Option<Identity>> {
        let now = self.now_ms();
        let row = self.store.read(|conn| {
            conn.query_row(
                "SELECT id, tenant_id, name, env, scopes, rate_limit, rate_window_ms, expires_at,
                        revoked_at, hash, secret_key_id
                 FROM api_keys WHERE hash = ?1",
                params![&hash[..]],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, Vec<u8>>(9)?,
                        r.get::<_, u32>(10)?,
                    ))
                },
            )
            .optional()
            .map_err(sqlite_err)
        })?;
        let Some((id, tenant, name, env, scopes, limit, window, expires, revoked, stored, sid)) =
            row
        else {
            return Ok(None);
        };
        // Defence in depth: the row must hold this key's hash under the secret it names.
        if sid != secret_id || !self.hasher(sid)?.verify(presented, &stored) {
            return Ok(None);
        }
        if revoked.is_some() {
            return Err(AuthError::Revoked.into());
        }
        self.store.write(|tx| {
            tx.execute(
                "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2",
                params![now, id],
            )
            .map_err(sqlite_err)
        })?;
        Ok(Some(Identity {
            key_id: id,
            tenant,
            name,
            env,
            scopes: split_scopes(&scopes),
            rate_limit: limit
                .zip(window)
                .map(|(l, w)| (l as u64, Duration::from_millis(w as u64))),
            expires_at_ms: expires,
        }))
    }

    /// One key of `tenant`, or [`AuthError::UnknownKey`].
    pub fn get(&self, tenant: &str, id: i64) -> Result<KeyInfo> {
        let _span = tracing::debug_span!("auth.get_key", db.system.name = "sqlite").entered();
        self.store
            .read(|conn| {
                conn.query_row(
                    &format!("{SELECT_INFO} WHERE tenant_id = ?1 AND id = ?2"),
                    params![tenant, id],
                    raw_info,
                )
                .optional()
                .map_err(sqlite_err)
            })?
            .map(|raw| self.finish_info(raw))
            .transpose()?
            .ok_or_else(|| AuthError::UnknownKey.into())
    }

    /// Every key of `tenant`, oldest first.
    pub fn list(&self, tenant: &str) -> Result<Vec<KeyInfo>> {
        let _span = tracing::debug_span!("auth.list_keys", db.system.name = "sqlite").entered();
        let raws = self.store.read(|conn| {
            let mut stmt = conn
                .prepare(&format!("{SELECT_INFO} WHERE tenant_id = ?1 ORDER BY id"))
                .map_err(sqlite_err)?;
            let rows = stmt
                .query_map(params![tenant], raw_info)
                .map_err(sqlite_err)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(sqlite_err)?;
            Ok(rows)
        })?;
        raws.into_iter().map(|r| self.finish_info(r)).collect()
    }

    fn finish_info(&self, (mut info, metadata): (KeyInfo, Option<Vec<u8>>)) -> Result<KeyInfo> {
        if let Some(ct) = metadata {
            let pt = field::decrypt(&self.keyring, &ct, &ad(&info.tenant, &[info.id]))?;
            info.metadata = Some(
                String::from_utf8(pt)
                    .map_err(|_| Error::InvalidArgument("metadata is not UTF-8".into()))?,
            );
        }
        Ok(info)
    }

    /// Revokes a key of `tenant`: it fails verification at once in this process, within the
    /// cache TTL elsewhere. Revoking twice is fine.
    pub fn revoke(&self, actor: &str, tenant: &str, id: i64) -> Result<()> {
        let _span = tracing::info_span!("auth.revoke_key", db.system.name = "sqlite").entered();
        let now = self.now_ms();
        let hash: Option<Vec<u8>> = self.store.write(|tx| {
            let hash = tx
                .query_row(
                    "SELECT hash FROM api_keys WHERE tenant_id = ?1 AND id = ?2",
                    params![tenant, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite_err)?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?1) WHERE tenant_id = ?2 AND id = ?3",
                params![now, tenant, id],
            )
            .map_err(sqlite_err)?;
            Ok(hash)
        })?;
        let Some(hash) = hash else {
            self.record(
                actor,
                "api_key.revoke",
                format!("{tenant}/{id}"),
                "failure: unknown key",
            )?;
            return Err(AuthError::UnknownKey.into());
        };
        self.forget(&hash);
        self.record(actor, "api_key.revoke", format!("{tenant}/{id}"), "success")
    }

    /// Drops a key from the verified cache (the cache is keyed by the primary secret's hash;
    /// a key made under an older secret is cached under its primary-secret hash, which cannot
    /// be derived without the plaintext, so the whole cache is cleared in that case).
    fn forget(&self, stored_hash: &[u8]) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match <[u8; 32]>::try_from(stored_hash) {
            Ok(h) if self.cache.contains_key(&h) => {
                self.cache.remove(&h);
            }
            _ => self.cache.clear(),
        }
    }

    /// Replaces a key of `tenant` with a new one (same tenant, name, env, scopes, metadata and
    /// rate limit). The old key keeps working for `grace`, then expires. Returns the new key's
    /// plaintext and description.
    pub fn rotate(
        &self,
        actor: &str,
        tenant: &str,
        id: i64,
        grace: Duration,
    ) -> Result<(Zeroizing<String>, KeyInfo)> {
        let _span = tracing::info_span!("auth.rotate_key", db.system.name = "sqlite").entered();
        let old = self.get(tenant, id)?;
        if old.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked.into());
        }
        let new = NewKey {
            tenant: old.tenant.clone(),
            name: old.name.clone(),
            env: old.env.clone(),
            scopes: old.scopes.clone(),
            expires_at: old
                .expires_at_ms
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
            metadata: old.metadata.clone(),
            rate_limit: old.rate_limit,
        };
        let created = self.insert(&new, Some(id))?;
        let grace_end = self
            .now_ms()
            .saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let hash: Vec<u8> = self.store.write(|tx| {
            tx.execute(
                "UPDATE api_keys SET expires_at = min(coalesce(expires_at, ?1), ?1)
                 WHERE tenant_id = ?2 AND id = ?3",
                params![grace_end, tenant, id],
            )
            .map_err(sqlite_err)?;
            tx.query_row(
                "SELECT hash FROM api_keys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(sqlite_err)
        })?;
        self.forget(&hash);
        let target = format!("{tenant}/{id} -> {tenant}/{}", created.1.id);
        self.record(actor, "api_key.rotate", target, "success")?;
        Ok(created)
    }
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

const SELECT_INFO: &str = "SELECT id, tenant_id, name, env, display, scopes, metadata, rate_limit,
    rate_window_ms, created_at, expires_at, revoked_at, last_used_at, replaced_by FROM api_keys";

fn raw_info(r: &Row<'_>) -> rusqlite::Result<(KeyInfo, Option<Vec<u8>>)> {
    let limit: Option<i64> = r.get(7)?;
    let window: Option<i64> = r.get(8)?;
    Ok((
        KeyInfo {
            id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            env: r.get(3)?,
            display: r.get(4)?,
            scopes: split_scopes(&r.get::<_, String>(5)?),
            metadata: None,
            rate_limit: limit
                .zip(window)
                .map(|(l, w)| (l as u64, Duration::from_millis(w as u64))),
            created_at_ms: r.get(9)?,
            expires_at_ms: r.get(10)?,
            revoked_at_ms: r.get(11)?,
            last_used_at_ms: r.get(12)?,
            replaced_by: r.get(13)?,
        },
        r.get(6)?,
    ))
}
