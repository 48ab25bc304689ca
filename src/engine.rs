//! `Engine`: one handle that builds every primitive from one configuration.
//!
//! An engine owns one database (chosen by `database.url`: a SQLite [`Store`], or a PostgreSQL
//! [`crate::store::PgStore`]; one connection pool either way) and one [`Keyring`], and
//! builds on them: conversation memory, the API-key registry with its audit log, the named rate
//! limiters and caches, and retrieval (BM25 and dense indexes, embedder, cross-encoder). Each
//! primitive is an `Arc` the engine hands out, so every user of `engine.memory()` shares the same
//! object; each stays usable on its own, without an engine.
//!
//! Invariants:
//! - Memory, API keys and the audit log share the engine's one database (the SQLite or
//!   PostgreSQL backends built on it): one pool, and the API keys' audit entries commit in the
//!   same transaction as the operation they record.
//! - Everything configured is checked at open: the URL, every option's range, the keyring (loaded
//!   and checked against the database), every rate limiter (a host-shared state file is opened),
//!   every cache's bounds, and that every configured model directory or library exists. What is
//!   expensive is built on first use: a cache's memory (`cache`), the indexes and the ONNX models
//!   (`bm25`, `dense`, `embedder`, `cross_encoder`); a model that fails to load fails that first
//!   access, with the model's own error.
//! - Asking for a rate limiter or cache the configuration does not define is
//!   [`ConfigError::UnknownName`], naming the name and listing the configured ones.
//!
//! docs/engine.md is the configuration reference.
//!
//! ```no_run
//! # fn main() -> keel::Result<()> {
//! // KEEL_DATABASE_URL=sqlite:///var/lib/app/keel.db, KEEL_KEYRING=1:...
//! let engine = keel::Engine::open(Some(std::path::Path::new("keel.toml")))?;
//! let decision = engine.rate_limiter("per_ip")?.check("203.0.113.7", 1)?;
//! let keys = engine.api_keys();
//! # let _ = (decision, keys);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::auth::backend::{ApiKeyBackend, SqliteApiKeys};
use crate::auth::ApiKeys;
use crate::cache::{Cache, CacheConfig};
use crate::config::{Backend, Config, KeyringSource, Settings};
use crate::crypto::audit::{AuditBackend, SqliteAudit};
use crate::crypto::{AuditLog, Keyring};
use crate::error::{ConfigError, Result};
use crate::memory::{AnyMemory, MemoryStore, SqliteMemory};
use crate::rag::{Bm25Config, Bm25Index};
#[cfg(feature = "neural")]
use crate::rag::{CrossEncoder, CrossEncoderOptions, DenseIndex};
#[cfg(feature = "neural")]
use crate::rag::{Embedder, EmbedderOptions, Precision};
use crate::ratelimit::{LimiterOptions, RateLimiter};
use crate::store::Store;

/// The database of an engine, chosen by the scheme of `database.url`: one pool shared by
/// memory, API keys and the audit log (so API-key operations and their audit entries commit in
/// one transaction on either).
enum Database {
    Sqlite(Store),
    #[cfg(feature = "postgres")]
    Postgres(crate::store::PgStore),
}

impl Database {
    fn open(settings: &Settings) -> Result<Self> {
        Ok(match &settings.backend {
            Backend::Sqlite(path) => Self::Sqlite(Store::open(path, settings.store.clone())?),
            #[cfg(feature = "postgres")]
            Backend::Postgres(url) => Self::Postgres(crate::store::PgStore::open(
                url.expose(),
                settings.postgres.clone(),
            )?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "database.url: no backend for {other:?} in this build"
                )))
            }
        })
    }

    fn memory(&self) -> AnyMemory {
        match self {
            Self::Sqlite(store) => Arc::new(SqliteMemory::new(store.clone())),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => Arc::new(crate::memory::PgMemory::new(store.clone())),
        }
    }

    fn api_keys(&self) -> Arc<dyn ApiKeyBackend> {
        match self {
            Self::Sqlite(store) => Arc::new(SqliteApiKeys::new(store.clone())),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => Arc::new(crate::auth::backend::PgApiKeys::new(store.clone())),
        }
    }

    fn audit(&self) -> Arc<dyn AuditBackend> {
        match self {
            Self::Sqlite(store) => Arc::new(SqliteAudit::new(store.clone())),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => Arc::new(crate::crypto::audit::PgAudit::new(store.clone())),
        }
    }
}

/// The cache type the engine builds for each `cache.<name>` table: byte keys and shared byte
/// values (what the C door stores). Typed caches are built from [`Engine::cache_config`].
pub type BytesCache = Cache<Box<[u8]>, Arc<[u8]>>;

/// A value built once, on first use, by whichever thread gets there first.
struct Lazy<T> {
    cell: OnceLock<Arc<T>>,
    init: Mutex<()>,
}

impl<T> Lazy<T> {
    fn new() -> Self {
        Self {
            cell: OnceLock::new(),
            init: Mutex::new(()),
        }
    }

    fn get_or_try(&self, f: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        if let Some(v) = self.cell.get() {
            return Ok(Arc::clone(v));
        }
        let _one = self.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.cell.get() {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(f()?);
        let _ = self.cell.set(Arc::clone(&v));
        Ok(v)
    }
}

struct NamedCache {
    config: CacheConfig,
    cache: Lazy<BytesCache>,
    /// `cache.<name>.l2 = true`: the shared cache, whose L1 is `cache`.
    #[cfg(feature = "redis")]
    shared: Option<Lazy<Arc<crate::cache::SharedCache>>>,
}

/// One store, one keyring, and every primitive built from one configuration. `Send + Sync`.
pub struct Engine {
    settings: Settings,
    db: Database,
    keyring: Arc<Keyring>,
    memory: Arc<MemoryStore<AnyMemory>>,
    api_keys: Arc<ApiKeys>,
    audit: Option<Arc<AuditLog>>,
    limiters: BTreeMap<String, Arc<RateLimiter>>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::redis::Redis>>,
    caches: BTreeMap<String, NamedCache>,
    bm25: Lazy<Bm25Index>,
    #[cfg(feature = "neural")]
    dense: Lazy<DenseIndex>,
    #[cfg(feature = "neural")]
    embedder: Lazy<Embedder>,
    #[cfg(feature = "neural")]
    cross_encoder: Lazy<CrossEncoder>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("database", &self.location())
            .field("rate_limiters", &self.limiters.keys().collect::<Vec<_>>())
            .field("caches", &self.caches.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unknown(kind: &'static str, name: &str, names: impl Iterator<Item = String>) -> ConfigError {
    ConfigError::UnknownName {
        kind,
        name: name.to_owned(),
        configured: names.collect(),
    }
}

impl Engine {
    /// Reads the TOML file at `path` (if any) and the `KEEL_*` environment variables (which win),
    /// then opens everything ([`Config::load`], [`Engine::from_config`]).
    pub fn open(path: Option<&Path>) -> Result<Self> {
        Self::from_config(&Config::load(path)?)
    }

    /// As [`Engine::open`] with no file: `KEEL_*` environment variables only.
    pub fn from_env() -> Result<Self> {
        Self::open(None)
    }

    /// Validates `config` and opens the store, loads the keyring, and builds the primitives.
    pub fn from_config(config: &Config) -> Result<Self> {
        let settings = config.validate()?;
        let t = &settings.telemetry;
        if t.traces.is_some() || t.logs.is_some() {
            crate::telemetry::trace::init(t.clone())?;
        }
        let _span = tracing::debug_span!("engine.open").entered();
        crate::telemetry::metrics::set_enabled(settings.metrics_enabled);
        let keyring = Arc::new(match &settings.keyring {
            KeyringSource::Env(var) => Keyring::from_env(var)?,
            KeyringSource::File(path) => Keyring::from_file(path)?,
        });
        let db = Database::open(&settings)?;
        let memory = Arc::new(MemoryStore::with_backend(
            db.memory(),
            Arc::clone(&keyring),
            settings.memory.clone(),
        )?);
        let mut keys = ApiKeys::with_backend(
            db.api_keys(),
            Arc::clone(&keyring),
            settings.api_keys.clone(),
        )?;
        let audit = settings.audit.then(|| {
            Arc::new(AuditLog::with_backend(
                db.audit(),
                Arc::clone(&keyring),
                Arc::new(crate::clock::SystemWallClock),
            ))
        });
        if let Some(a) = &audit {
            keys = keys.try_with_audit(Arc::clone(a))?;
        }
        #[cfg(feature = "redis")]
        let redis = match &settings.redis {
            Some(r) => Some(crate::redis::Redis::open(
                &r.url,
                crate::redis::RedisOptions {
                    timeout: r.timeout,
                    pool_size: r.pool_size,
                    prefix: r.prefix.clone(),
                },
            )?),
            None => None,
        };
        let api_keys = Arc::new(keys);
        #[cfg(feature = "redis")]
        if let (Some(r), Some(s)) = (&redis, &settings.redis) {
            if s.invalidate_api_keys {
                api_keys.broadcast_invalidations(Arc::clone(r))?;
            }
        }
        let mut limiters = BTreeMap::new();
        for (name, l) in &settings.ratelimit {
            #[cfg(feature = "redis")]
            if l.redis {
                let r = redis.as_ref().ok_or_else(|| ConfigError::Missing {
                    field: "redis.url".into(),
                    hint: format!("ratelimit.{name}.backend = \"redis\" needs it"),
                })?;
                let limiter =
                    RateLimiter::redis(l.policy.clone(), Arc::clone(r), l.on_redis_error)?;
                limiters.insert(name.clone(), Arc::new(limiter));
                continue;
            }
            let limiter = RateLimiter::open(
                l.policy.clone(),
                LimiterOptions {
                    shared_path: l.shared.clone(),
                    max_keys: l.max_keys,
                },
            )
            .map_err(|e| match e {
                crate::error::Error::InvalidArgument(m) => {
                    crate::error::Error::InvalidArgument(format!("ratelimit.{name}: {m}"))
                }
                e => e,
            })?;
            limiters.insert(name.clone(), Arc::new(limiter));
        }
        let caches = settings
            .cache
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    NamedCache {
                        config: config.clone(),
                        cache: Lazy::new(),
                        #[cfg(feature = "redis")]
                        shared: settings.cache_l2.contains(name).then(Lazy::new),
                    },
                )
            })
            .collect();
        #[cfg(feature = "neural")]
        if let Some(lib) = &settings.retrieval.onnxruntime {
            if !crate::rag::set_onnxruntime_path(lib) {
                tracing::warn!(
                    "retrieval.onnxruntime ignored: ONNX Runtime was already loaded or named \
                     by an earlier engine"
                );
            }
        }
        Ok(Self {
            settings,
            db,
            keyring,
            memory,
            api_keys,
            audit,
            limiters,
            #[cfg(feature = "redis")]
            redis,
            caches,
            bm25: Lazy::new(),
            #[cfg(feature = "neural")]
            dense: Lazy::new(),
            #[cfg(feature = "neural")]
            embedder: Lazy::new(),
            #[cfg(feature = "neural")]
            cross_encoder: Lazy::new(),
        })
    }

    /// The validated settings the engine was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The SQLite store shared by memory, API keys and the audit log (`None` on PostgreSQL).
    pub fn store(&self) -> Option<&Store> {
        match &self.db {
            Database::Sqlite(store) => Some(store),
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => None,
        }
    }

    /// The database shared by memory, API keys and the audit log, as a URL without its
    /// password.
    pub fn location(&self) -> String {
        match &self.db {
            Database::Sqlite(store) => format!("sqlite://{}", store.path().display()),
            #[cfg(feature = "postgres")]
            Database::Postgres(store) => store.location().to_owned(),
        }
    }

    /// Identifies the connection pool shared by memory, API keys and the audit log, within the
    /// process ([`Store::id`], [`crate::store::PgStore::id`]).
    pub fn store_id(&self) -> u64 {
        match &self.db {
            Database::Sqlite(store) => store.id(),
            #[cfg(feature = "postgres")]
            Database::Postgres(store) => store.id(),
        }
    }

    /// The keyring shared by every primitive.
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring)
    }

    /// Conversation memory (over the backend the database URL chose).
    pub fn memory(&self) -> &Arc<MemoryStore<AnyMemory>> {
        &self.memory
    }

    /// The API-key registry (audited in [`Engine::audit`] unless `api_keys.audit = false`).
    pub fn api_keys(&self) -> &Arc<ApiKeys> {
        &self.api_keys
    }

    /// The audit log, `None` when `api_keys.audit = false`.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// The rate limiter of the `ratelimit.<name>` table.
    pub fn rate_limiter(&self, name: &str) -> Result<&Arc<RateLimiter>> {
        self.limiters
            .get(name)
            .ok_or_else(|| unknown("rate limiter", name, self.limiters.keys().cloned()).into())
    }

    /// The Redis of the `[redis]` section, if configured.
    #[cfg(feature = "redis")]
    pub fn redis(&self) -> Option<&Arc<crate::redis::Redis>> {
        self.redis.as_ref()
    }

    /// The names of the configured rate limiters, sorted.
    pub fn rate_limiter_names(&self) -> Vec<String> {
        self.limiters.keys().cloned().collect()
    }

    /// The bounds of the `cache.<name>` table, for a typed cache: `Cache::new(config.clone())`.
    pub fn cache_config(&self, name: &str) -> Result<&CacheConfig> {
        self.caches
            .get(name)
            .map(|c| &c.config)
            .ok_or_else(|| unknown("cache", name, self.caches.keys().cloned()).into())
    }

    /// The byte cache of the `cache.<name>` table, built on first access and shared afterwards
    /// (for a cache with `l2 = true`, the L1 of [`Engine::shared_cache`]: reading it skips
    /// Redis, writing it skips the other hosts).
    pub fn cache(&self, name: &str) -> Result<Arc<BytesCache>> {
        let named = self
            .caches
            .get(name)
            .ok_or_else(|| unknown("cache", name, self.caches.keys().cloned()))?;
        #[cfg(feature = "redis")]
        if named.shared.is_some() {
            return Ok(Arc::clone(self.shared_cache(name)?.l1()));
        }
        let mut built = false;
        let cache = named.cache.get_or_try(|| {
            built = true;
            Cache::new(named.config.clone())
        })?;
        if built {
            crate::telemetry::metrics::register_cache(name, &cache)?;
        }
        Ok(cache)
    }

    /// The shared cache (in-process L1 over a Redis L2, invalidated on every host) of a
    /// `cache.<name>` table with `l2 = true`, built on first access.
    #[cfg(feature = "redis")]
    pub fn shared_cache(&self, name: &str) -> Result<Arc<crate::cache::SharedCache>> {
        let named = self
            .caches
            .get(name)
            .ok_or_else(|| unknown("cache", name, self.caches.keys().cloned()))?;
        let (Some(shared), Some(redis)) = (&named.shared, &self.redis) else {
            return Err(ConfigError::Missing {
                field: format!("cache.{name}.l2"),
                hint: "set l2 = true (and [redis] url) for a cache shared by every host".into(),
            }
            .into());
        };
        let mut built = false;
        let arc = shared.get_or_try(|| {
            built = true;
            // `SharedCache::new` returns the Arc its invalidation sink points to: keep that one.
            let c = crate::cache::SharedCache::new(name, named.config.clone(), Arc::clone(redis))?;
            Ok(c)
        })?;
        if built {
            // The metrics read the in-process L1, under the table's name.
            crate::telemetry::metrics::register_cache(name, arc.l1())?;
        }
        Ok(Arc::clone(&*arc))
    }

    /// The names of the configured caches, sorted.
    pub fn cache_names(&self) -> Vec<String> {
        self.caches.keys().cloned().collect()
    }

    /// The BM25 index: `retrieval.bm25_index` opened when the file exists, else a new empty
    /// index (with the core's default analyzer) to be saved there; with no path configured, an
    /// in-memory index. Built on first access and shared afterwards.
    pub fn bm25(&self) -> Result<Arc<Bm25Index>> {
        self.bm25.get_or_try(|| {
            Ok(match &self.settings.retrieval.bm25_index {
                Some(p) if p.exists() => Bm25Index::open(p)?,
                _ => Bm25Index::new(Bm25Config::default())?,
            })
        })
    }

    #[cfg(feature = "neural")]
    /// The embedding model of `retrieval.embedder`, loaded on first access.
    pub fn embedder(&self) -> Result<Arc<Embedder>> {
        let dir = self.retrieval_path("embedder", &self.settings.retrieval.embedder)?;
        let (sessions, threads) = self.settings.retrieval.pool();
        let options = EmbedderOptions {
            sessions,
            threads,
            ..EmbedderOptions::default()
        };
        self.embedder
            .get_or_try(|| Ok(Embedder::open(dir, options)?))
    }

    #[cfg(feature = "neural")]
    /// The cross-encoder of `retrieval.cross_encoder`, loaded on first access.
    pub fn cross_encoder(&self) -> Result<Arc<CrossEncoder>> {
        let dir = self.retrieval_path("cross_encoder", &self.settings.retrieval.cross_encoder)?;
        let (sessions, threads) = self.settings.retrieval.pool();
        let options = CrossEncoderOptions {
            sessions,
            threads,
            ..CrossEncoderOptions::default()
        };
        self.cross_encoder
            .get_or_try(|| Ok(CrossEncoder::open(dir, options)?))
    }

    #[cfg(feature = "neural")]
    /// The dense index of `retrieval.dense_index` (opened when the file exists, else a new
    /// empty one to be saved there), searching with [`Engine::embedder`]. Built on first access.
    pub fn dense(&self) -> Result<Arc<DenseIndex>> {
        let path = self.retrieval_path("dense_index", &self.settings.retrieval.dense_index)?;
        let embedder = self.embedder()?;
        self.dense.get_or_try(|| {
            Ok(if path.exists() {
                DenseIndex::open(path, Some(embedder))?
            } else {
                DenseIndex::new(embedder, Precision::default())
            })
        })
    }

    #[cfg(feature = "neural")]
    fn retrieval_path<'a>(
        &self,
        field: &str,
        value: &'a Option<std::path::PathBuf>,
    ) -> Result<&'a Path> {
        value.as_deref().ok_or_else(|| {
            ConfigError::Missing {
                field: format!("retrieval.{field}"),
                hint: format!(
                    "set it in the config file or KEEL_RETRIEVAL__{}",
                    field.to_uppercase()
                ),
            }
            .into()
        })
    }
}
