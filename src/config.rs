//! The configuration of a [`crate::Engine`]: a TOML file and/or `KEEL_*` environment variables.
//!
//! Sources, later ones winning field by field (layered with `figment`):
//! 1. the TOML file, when a path is given (a missing or unreadable file is an error, never an
//!    empty configuration);
//! 2. environment variables: `KEEL_<SECTION>__<FIELD>` (double underscore between levels, any
//!    case: `KEEL_RATELIMIT__PER_IP__LIMIT=100` is `ratelimit.per_ip.limit`), plus two
//!    shorthands, `KEEL_DATABASE_URL` (`database.url`) and `KEEL_KEYRING_FILE`
//!    (`keyring.file`). `KEEL_KEYRING` keeps its meaning: the keyring text itself, read when
//!    the keyring is loaded, never part of the configuration. Other `KEEL_*` variables without
//!    `__` (such as `KEEL_PYTHON`) are not configuration and are ignored.
//!
//! Invariants:
//! - Every section refuses unknown fields (`deny_unknown_fields`), so a typo names the field and
//!   its source instead of being silently ignored.
//! - Every field is optional in the file; an unset field takes the default of the core option
//!   struct it feeds (`StoreOptions`, `MemoryOptions`, `ApiKeysOptions`, the rate-limit and cache
//!   constructors). No default value is restated here, except the engine's own choices
//!   ([`DEFAULT_ALGORITHM`], [`DEFAULT_AUDIT`]).
//! - Validation after parsing names the field path and the value (`ratelimit.per_ip.limit = 0:
//!   limit must be at least 1`); a URL is shown with its password masked.
//!
//! docs/engine.md is the reference of every field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::auth::ApiKeysOptions;
use crate::cache::{ttl_from_secs_f64, CacheConfig};
use crate::error::{ConfigError, Error, Result};
use crate::memory::MemoryOptions;
use crate::ratelimit::{window_from_secs, Algorithm, OnRedisError, Policy};
use crate::store::{StoreOptions, Synchronous};

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "KEEL_";
/// The algorithm of a `ratelimit.<name>` table that does not name one.
pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::DEFAULT;
/// Whether the engine's API keys record admin operations in the audit log when
/// `api_keys.audit` is not set.
pub const DEFAULT_AUDIT: bool = true;

/// The whole configuration, as parsed (before validation). Build an [`crate::Engine`] from it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[database]`: where memory, API keys and the audit log live.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[keyring]`: where the keys come from.
    #[serde(default)]
    pub keyring: KeyringConfig,
    /// `[memory]`: conversation-memory limits.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// `[api_keys]`: the API-key registry.
    #[serde(default)]
    pub api_keys: ApiKeysConfig,
    /// `[ratelimit.<name>]`: one rate limiter per table.
    #[serde(default)]
    pub ratelimit: BTreeMap<String, RateLimitConfig>,
    /// `[cache.<name>]`: one cache per table.
    #[serde(default)]
    pub cache: BTreeMap<String, CacheSection>,
    /// `[retrieval]`: index files and model directories.
    #[serde(default)]
    pub retrieval: RetrievalConfig,
    /// `[redis]`: the Redis shared by the hosts of a deployment (rate limiters with
    /// `backend = "redis"`, API-key cache invalidation).
    #[serde(default)]
    pub redis: RedisSection,
    /// `[telemetry]`: metrics (`[telemetry.metrics]`), traces and logs (traces and logs off by
    /// default).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: `[telemetry.traces]`, `[telemetry.logs]` and `[telemetry.metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `[telemetry.traces]`: span export (OTLP over HTTP/protobuf).
    #[serde(default)]
    pub traces: TracesConfig,
    /// `[telemetry.logs]`: keel's events as JSON lines.
    #[serde(default)]
    pub logs: LogsConfig,
    /// `[telemetry.metrics]`: the metrics registry.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[telemetry.traces]`. Unset fields fall back to the standard `OTEL_*` variables (see
/// [`crate::telemetry::trace::TraceOptions`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// Turns span export on (default off).
    pub enabled: Option<bool>,
    /// The OTLP/HTTP base URL (`http://collector:4318`).
    pub endpoint: Option<String>,
    /// Extra HTTP headers of each export request.
    pub headers: Option<BTreeMap<String, String>>,
    /// `service.name`.
    pub service_name: Option<String>,
    /// Parent-based ratio of root spans kept, 0.0 to 1.0.
    pub sample_ratio: Option<f64>,
    /// The most detailed span level exported.
    pub level: Option<String>,
    /// `"otlp"` or `"none"`.
    pub exporter: Option<String>,
    /// Most spans queued.
    pub max_queue_size: Option<u64>,
    /// Most spans per export request.
    pub max_export_batch_size: Option<u64>,
    /// Seconds between two exports.
    pub scheduled_delay: Option<f64>,
    /// Seconds an export may take.
    pub export_timeout: Option<f64>,
}

/// `[telemetry.logs]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Turns logs on (default off): JSON lines on standard error.
    pub enabled: Option<bool>,
    /// The most detailed level logged.
    pub level: Option<String>,
}

/// `[redis]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://[:password@]host[:port][/db]` (or `rediss://`, `redis+unix:///path`).
    pub url: Option<String>,
    /// Seconds connecting, a command or a pool checkout may take (default 0.25).
    pub timeout: Option<f64>,
    /// Most pooled connections (default 16).
    pub pool_size: Option<u32>,
    /// Prefix of every key and channel (default `keel`).
    pub prefix: Option<String>,
    /// Whether revoking or rotating an API key drops it from the verified-key cache of every
    /// host, through a pub/sub broadcast (default true when `url` is set).
    pub invalidate_api_keys: Option<bool>,
}

/// `[telemetry.metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the per-call instruments run (process-wide; default
    /// [`crate::telemetry::metrics::DEFAULT_ENABLED`]).
    pub enabled: Option<bool>,
}

/// `[database]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:///absolute/path.db` or `sqlite://relative/path.db` (relative to the working
    /// directory), or `postgres://user:password@host:port/db` (also `postgresql://`; Cargo
    /// feature `postgres`). `redis://` is recognised and refused: Redis holds no database.
    pub url: Option<String>,
    /// SQLite only: `"normal"` or `"full"` (`PRAGMA synchronous`). PostgreSQL's durability is
    /// the server's `synchronous_commit`.
    pub synchronous: Option<String>,
    /// SQLite only: seconds SQLite waits for another connection's lock.
    pub busy_timeout: Option<f64>,
    /// Seconds a write keeps retrying (SQLite: after `busy_timeout`; PostgreSQL: serialization
    /// failures and deadlocks) before failing as busy.
    pub busy_deadline: Option<f64>,
    /// Most pooled connections (shared by every primitive of the engine).
    pub pool_size: Option<u32>,
    /// PostgreSQL only: seconds a call waits to connect before failing as unavailable.
    pub connect_timeout: Option<f64>,
}

/// `[keyring]`: at most one of `env` and `file`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringConfig {
    /// The environment variable holding the keyring text (default `KEEL_KEYRING`).
    pub env: Option<String>,
    /// A key file (mode 0600) holding the keyring text.
    pub file: Option<PathBuf>,
}

/// `[memory]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Largest accepted message content, in bytes.
    pub max_content_bytes: Option<u64>,
    /// Largest accepted metadata document, in bytes.
    pub max_metadata_bytes: Option<u64>,
}

/// `[api_keys]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Seconds a verified key is trusted without the database.
    pub cache_ttl: Option<f64>,
    /// Most verified keys cached.
    pub cache_entries: Option<u64>,
    /// Key environments accepted by `verify`.
    pub accepted_envs: Option<Vec<String>>,
    /// Whether admin operations and refused verifications are audited.
    pub audit: Option<bool>,
}

/// `[ratelimit.<name>]`: the table's name is the policy's name (shown in `RateLimit-Policy`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `"gcra"` or `"sliding_window"`.
    pub algorithm: Option<String>,
    /// Units of cost per window (required).
    pub limit: Option<u64>,
    /// The window in seconds (required).
    pub window: Option<f64>,
    /// Host-shared mode: the state file family (e.g. `/dev/shm/keel-ratelimit-api`). Also read
    /// as `shared_path`, the name of the Python and C doors.
    #[serde(alias = "shared_path")]
    pub shared: Option<PathBuf>,
    /// Most keys tracked.
    pub max_keys: Option<u64>,
    /// Where the state lives: `"local"` (this process, or the host with `shared`, the default) or
    /// `"redis"` (the `[redis]` server: one budget for every host).
    pub backend: Option<String>,
    /// A Redis limiter's behaviour while Redis is unreachable: `"closed"` (an error, the
    /// default) or `"open"` (allowed, the decision flagged degraded).
    pub on_redis_error: Option<String>,
}

/// `[cache.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Most entries held (required).
    pub max_entries: Option<u64>,
    /// Bound on the total weight (bytes in the C door).
    pub max_weight: Option<u64>,
    /// Default time to live in seconds.
    pub ttl: Option<f64>,
    /// Whether the cache has a shared L2 in the `[redis]` server, with invalidation broadcast
    /// to every host (`Engine::shared_cache`); default false.
    pub l2: Option<bool>,
}

/// `[retrieval]`: paths only; indexes and models are loaded on first use.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// The BM25 index file (opened if it exists, else an empty index to be saved there).
    pub bm25_index: Option<PathBuf>,
    /// The dense index file (opened if it exists, else an empty index to be saved there).
    pub dense_index: Option<PathBuf>,
    /// The embedding model directory (model.onnx + tokenizer.json).
    pub embedder: Option<PathBuf>,
    /// The cross-encoder model directory (model.onnx + tokenizer.json).
    pub cross_encoder: Option<PathBuf>,
    /// The ONNX Runtime shared library (`libonnxruntime.so*`).
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime sessions of each neural model, i.e. calls that run at once (unset: one per
    /// core divided by `threads`; 0 or above [`crate::rag::MAX_SESSIONS`] is refused).
    pub sessions: Option<u64>,
    /// Intra-op threads per session (unset or 0: the cores divided by the sessions; lowered to
    /// that; above [`crate::rag::MAX_THREADS`] is refused).
    pub threads: Option<u64>,
}

impl RetrievalConfig {
    /// The `sessions` and `threads` of the neural models' options (None, 0: the core's choice).
    pub fn pool(&self) -> (Option<usize>, usize) {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        (self.sessions.map(n), self.threads.map_or(0, n))
    }
}

/// Where a database URL points (more backends will join: `#[non_exhaustive]`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(SecretUrl),
}

/// A URL that may hold a password: `Debug` and `Display` show it masked ([`redact_url`]); only
/// [`SecretUrl::expose`] returns the text, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: pass it to a client, never to a message or a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// The validated settings of one rate limiter.
#[derive(Debug, Clone)]
pub struct LimiterSettings {
    /// The policy (named after the table).
    pub policy: Policy,
    /// The host-shared state path, if any.
    pub shared: Option<PathBuf>,
    /// The key bound, if set (else the core default of the mode).
    pub max_keys: Option<usize>,
    /// Whether the state lives in Redis (`backend = "redis"`).
    pub redis: bool,
    /// What a Redis limiter does while Redis is unreachable.
    pub on_redis_error: OnRedisError,
}

/// The validated `[redis]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// The URL (with its password: never print it, use [`redact_url`]).
    pub url: String,
    /// Connect / command / checkout timeout.
    pub timeout: Duration,
    /// Most pooled connections.
    pub pool_size: u32,
    /// Key and channel prefix.
    pub prefix: String,
    /// Whether API-key revocations are broadcast to every host.
    pub invalidate_api_keys: bool,
}

/// The validated configuration: every field converted to the core's types.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database backend.
    pub backend: Backend,
    /// Store options (defaults from [`StoreOptions::default`]).
    pub store: StoreOptions,
    /// PostgreSQL connection options (defaults from [`crate::store::PgOptions::default`]).
    #[cfg(feature = "postgres")]
    pub postgres: crate::store::PgOptions,
    /// The keyring source.
    pub keyring: KeyringSource,
    /// Memory options (defaults from [`MemoryOptions::default`]).
    pub memory: MemoryOptions,
    /// API-key options (defaults from [`ApiKeysOptions::default`]).
    pub api_keys: ApiKeysOptions,
    /// Whether the API keys are audited.
    pub audit: bool,
    /// Rate limiters by name.
    pub ratelimit: BTreeMap<String, LimiterSettings>,
    /// Caches by name.
    pub cache: BTreeMap<String, CacheConfig>,
    /// The names of the caches with a Redis L2 (`cache.<name>.l2 = true`).
    pub cache_l2: std::collections::BTreeSet<String>,
    /// Retrieval paths, checked to exist.
    pub retrieval: RetrievalConfig,
    /// Traces and logs to turn on when the engine opens (both `None`: leave telemetry alone).
    pub telemetry: crate::telemetry::trace::TelemetryOptions,
    /// Whether the metrics' per-call instruments run.
    pub metrics_enabled: bool,
    /// The `[redis]` section, when `redis.url` is set.
    pub redis: Option<RedisSettings>,
}

/// Where the keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringSource {
    /// An environment variable holding the keyring text.
    Env(String),
    /// A key file.
    File(PathBuf),
}

fn parse_err(e: figment::Error) -> Error {
    let text: Vec<String> = e
        .into_iter()
        .map(|one| one.to_string().replace("key \"default.", "key \""))
        .collect();
    ConfigError::Parse(text.join("; ")).into()
}

/// Maps a `KEEL_*` variable name (prefix removed) to a configuration key, or `None` when the
/// variable is not configuration.
fn env_key(key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "database_url" => Some("database__url".into()),
        "keyring_file" => Some("keyring__file".into()),
        _ if lower.contains("__") => Some(lower),
        _ => None,
    }
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter_map(|k| env_key(k.as_str()).map(Into::into))
        .split("__")
}

fn file_provider(path: &Path) -> Result<figment::providers::Data<Toml>> {
    // figment treats a missing file as empty; a configured file that is not there is a mistake.
    std::fs::metadata(path)
        .map_err(|e| ConfigError::Parse(format!("cannot read {}: {}", path.display(), e.kind())))?;
    Ok(Toml::file_exact(path))
}

impl Config {
    /// The TOML file at `path` (if any), overridden by `KEEL_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::new();
        if let Some(path) = path {
            fig = fig.merge(file_provider(path)?);
        }
        fig.merge(env_provider()).extract().map_err(parse_err)
    }

    /// `KEEL_*` environment variables only.
    pub fn from_env() -> Result<Self> {
        Self::load(None)
    }

    /// The TOML file at `path` only (no environment variables).
    pub fn from_file(path: &Path) -> Result<Self> {
        Figment::from(file_provider(path)?)
            .extract()
            .map_err(parse_err)
    }

    /// TOML text only.
    pub fn from_toml(text: &str) -> Result<Self> {
        Figment::from(Toml::string(text))
            .extract()
            .map_err(parse_err)
    }

    /// Checks every field and converts it to the core's types.
    pub fn validate(&self) -> Result<Settings> {
        let db = &self.database;
        let url = db.url.as_deref().ok_or_else(|| ConfigError::Missing {
            field: "database.url".into(),
            hint: "e.g. database.url = \"sqlite:///var/lib/app/keel.db\" or KEEL_DATABASE_URL"
                .into(),
        })?;
        let backend = parse_url("database.url", url)?;
        if !matches!(backend, Backend::Sqlite(_)) {
            for (field, set) in [
                ("database.synchronous", db.synchronous.is_some()),
                ("database.busy_timeout", db.busy_timeout.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        field,
                        "(set)",
                        "applies to sqlite:// databases only (PostgreSQL: the server's \
                         synchronous_commit and lock settings apply)",
                    ));
                }
            }
        } else if let Some(s) = db.connect_timeout {
            return Err(invalid(
                "database.connect_timeout",
                &s.to_string(),
                "applies to postgres:// databases only",
            ));
        }
        #[cfg(feature = "postgres")]
        let postgres = {
            let mut pg = crate::store::PgOptions::default();
            if let Some(n) = db.pool_size {
                pg.pool_size = n;
            }
            if let Some(s) = db.connect_timeout {
                pg.connect_timeout = seconds("database.connect_timeout", s)?;
            }
            if let Some(s) = db.busy_deadline {
                pg.busy_deadline = seconds("database.busy_deadline", s)?;
            }
            if let Err(e) = pg.validate() {
                let msg = e.to_string();
                let (name, value) = [
                    ("pool_size", db.pool_size.map(|n| n.to_string())),
                    ("connect_timeout", db.connect_timeout.map(|s| s.to_string())),
                    ("busy_deadline", db.busy_deadline.map(|s| s.to_string())),
                ]
                .into_iter()
                .find(|(n, _)| msg.contains(n))
                .unwrap_or(("", None));
                return Err(reason(
                    &format!("database.{name}"),
                    &value.unwrap_or_else(|| "(default)".into()),
                    &e,
                ));
            }
            pg
        };
        let mut store = StoreOptions::default();
        if let Some(s) = &db.synchronous {
            store.synchronous =
                Synchronous::parse(s).map_err(|e| reason("database.synchronous", s, &e))?;
        }
        if let Some(s) = db.busy_timeout {
            store.busy_timeout = seconds("database.busy_timeout", s)?;
        }
        if let Some(s) = db.busy_deadline {
            store.busy_deadline = seconds("database.busy_deadline", s)?;
        }
        if let Some(n) = db.pool_size {
            store.pool_size = n;
        }
        if let Err(e) = store.validate() {
            // The store names the option; the configuration names the field and its value.
            let msg = e.to_string();
            let (name, value) = [
                ("pool_size", db.pool_size.map(|n| n.to_string())),
                ("busy_timeout", db.busy_timeout.map(|s| s.to_string())),
                ("busy_deadline", db.busy_deadline.map(|s| s.to_string())),
            ]
            .into_iter()
            .find(|(n, _)| msg.contains(n))
            .unwrap_or(("", None));
            return Err(reason(
                &format!("database.{name}"),
                &value.unwrap_or_else(|| "(default)".into()),
                &e,
            ));
        }

        let keyring = match (&self.keyring.env, &self.keyring.file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "keyring",
                    "env and file",
                    "set one of keyring.env and keyring.file (KEEL_KEYRING_FILE)",
                ))
            }
            (None, Some(file)) => KeyringSource::File(file.clone()),
            (Some(var), None) if var.is_empty() => {
                return Err(invalid(
                    "keyring.env",
                    "\"\"",
                    "name an environment variable",
                ))
            }
            (Some(var), None) => KeyringSource::Env(var.clone()),
            (None, None) => KeyringSource::Env(crate::crypto::KEYRING_ENV.to_owned()),
        };

        let mut memory = MemoryOptions {
            store: store.clone(),
            ..MemoryOptions::default()
        };
        if let Some(n) = self.memory.max_content_bytes {
            memory.max_content_bytes = size("memory.max_content_bytes", n)?;
        }
        if let Some(n) = self.memory.max_metadata_bytes {
            memory.max_metadata_bytes = size("memory.max_metadata_bytes", n)?;
        }

        let ak = &self.api_keys;
        let mut api_keys = ApiKeysOptions::default();
        if let Some(s) = ak.cache_ttl {
            api_keys.cache_ttl = ttl_from_secs_f64(s)
                .map_err(|e| reason("api_keys.cache_ttl", &s.to_string(), &e))?;
        }
        if let Some(n) = ak.cache_entries {
            if n == 0 {
                return Err(invalid("api_keys.cache_entries", "0", "must be at least 1"));
            }
            api_keys.cache_entries = n;
        }
        if let Some(envs) = &ak.accepted_envs {
            if envs.is_empty() {
                return Err(invalid(
                    "api_keys.accepted_envs",
                    "[]",
                    "name at least one key environment (e.g. \"live\")",
                ));
            }
            for env in envs {
                if crate::auth::check_env(env).is_err() {
                    return Err(invalid(
                        "api_keys.accepted_envs",
                        &format!("{env:?}"),
                        "an environment is 1-16 lowercase ASCII letters or digits",
                    ));
                }
            }
            api_keys.accepted_envs = envs.clone();
        }

        let redis = redis_settings(&self.redis)?;
        let mut ratelimit = BTreeMap::new();
        for (name, rl) in &self.ratelimit {
            let l = limiter(name, rl)?;
            if l.redis && redis.is_none() {
                return Err(ConfigError::Missing {
                    field: "redis.url".into(),
                    hint: format!(
                        "ratelimit.{name}.backend = \"redis\" needs [redis] url = \"redis://host:6379\""
                    ),
                }
                .into());
            }
            ratelimit.insert(name.clone(), l);
        }
        let mut cache = BTreeMap::new();
        let mut cache_l2 = std::collections::BTreeSet::new();
        for (name, c) in &self.cache {
            cache.insert(name.clone(), cache_config(name, c)?);
            if c.l2 == Some(true) {
                if redis.is_none() {
                    return Err(ConfigError::Missing {
                        field: "redis.url".into(),
                        hint: format!(
                            "cache.{name}.l2 = true needs [redis] url = \"redis://host:6379\""
                        ),
                    }
                    .into());
                }
                cache_l2.insert(name.clone());
            }
        }
        let r = &self.retrieval;
        // A build without the Cargo feature `neural` has nothing to load these into: refuse the
        // field rather than ignore it.
        #[cfg(not(feature = "neural"))]
        for (field, path) in [
            ("retrieval.embedder", &r.embedder),
            ("retrieval.cross_encoder", &r.cross_encoder),
            ("retrieval.onnxruntime", &r.onnxruntime),
            ("retrieval.dense_index", &r.dense_index),
        ] {
            if let Some(path) = path {
                return Err(invalid(
                    field,
                    &path.display().to_string(),
                    "this build of keel has no neural retrieval (Cargo feature `neural`)",
                ));
            }
        }
        for (field, path, dir) in [
            ("retrieval.embedder", &r.embedder, true),
            ("retrieval.cross_encoder", &r.cross_encoder, true),
            ("retrieval.onnxruntime", &r.onnxruntime, false),
        ] {
            if let Some(path) = path {
                let ok = if dir { path.is_dir() } else { path.is_file() };
                if !ok {
                    let what = if dir { "a model directory" } else { "a file" };
                    return Err(invalid(
                        field,
                        &path.display().to_string(),
                        &format!("no such {what}"),
                    ));
                }
            }
        }
        for (field, path) in [
            ("retrieval.bm25_index", &r.bm25_index),
            ("retrieval.dense_index", &r.dense_index),
        ] {
            if let Some(path) = path {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                if parent.is_some_and(|p| !p.is_dir()) {
                    return Err(invalid(
                        field,
                        &path.display().to_string(),
                        "its folder does not exist",
                    ));
                }
            }
        }
        let (sessions, threads) = r.pool();
        if let Err(e) = crate::rag::pool_shape(sessions, threads) {
            let (field, value) = match r.sessions {
                Some(n) if n == 0 || n > crate::rag::MAX_SESSIONS as u64 => ("sessions", n),
                _ => ("threads", r.threads.unwrap_or(0)),
            };
            return Err(reason(
                &format!("retrieval.{field}"),
                &value.to_string(),
                &Error::from(e),
            ));
        }
        if r.dense_index.is_some() && r.embedder.is_none() {
            return Err(ConfigError::Missing {
                field: "retrieval.embedder".into(),
                hint: "retrieval.dense_index needs the embedding model that fills it".into(),
            }
            .into());
        }
        Ok(Settings {
            backend,
            store,
            #[cfg(feature = "postgres")]
            postgres,
            keyring,
            memory,
            api_keys,
            audit: ak.audit.unwrap_or(DEFAULT_AUDIT),
            ratelimit,
            cache,
            cache_l2,
            retrieval: r.clone(),
            telemetry: self.telemetry.options()?,
            metrics_enabled: self
                .telemetry
                .metrics
                .enabled
                .unwrap_or(crate::telemetry::metrics::DEFAULT_ENABLED),
            redis,
        })
    }
}

impl TelemetryConfig {
    /// The body of a `[telemetry]` section as TOML text (`[traces]`, `[logs]`, `[metrics]`
    /// tables), overridden by `KEEL_TELEMETRY__*` variables: how the C door turns telemetry on
    /// without an Engine. Empty text: the environment alone.
    pub fn from_toml(text: &str) -> Result<Self> {
        let env = Env::prefixed("KEEL_TELEMETRY__").split("__");
        Figment::from(Toml::string(text))
            .merge(env)
            .extract()
            .map_err(parse_err)
    }

    /// The traces and logs options this section turns on, checked.
    pub fn options(&self) -> Result<crate::telemetry::trace::TelemetryOptions> {
        use crate::telemetry::trace::{
            check_ratio, parse_level, BatchOptions, Exporter, LogOptions, TelemetryOptions,
            TraceOptions,
        };
        let t = &self.traces;
        let traces = if t.enabled.unwrap_or(false) {
            let level = |field: &str, v: &Option<String>| -> Result<Option<String>> {
                if let Some(l) = v {
                    parse_level(field, l).map_err(|e| reason(field, l, &e))?;
                }
                Ok(v.clone())
            };
            if let Some(r) = t.sample_ratio {
                check_ratio("telemetry.traces.sample_ratio", r)
                    .map_err(|e| reason("telemetry.traces.sample_ratio", &r.to_string(), &e))?;
            }
            if let Some(url) = &t.endpoint {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        "telemetry.traces.endpoint",
                        url,
                        "an OTLP/HTTP endpoint starts with http:// or https://",
                    ));
                }
            }
            let exporter = match t.exporter.as_deref() {
                None => None,
                Some("otlp") => Some(Exporter::Otlp),
                Some("none") => Some(Exporter::None),
                Some(other) => {
                    return Err(invalid(
                        "telemetry.traces.exporter",
                        other,
                        "use \"otlp\" or \"none\"",
                    ))
                }
            };
            let count = |field: &str, n: Option<u64>| -> Result<Option<usize>> {
                n.map(|n| size(field, n)).transpose()
            };
            let secs = |field: &str, s: Option<f64>| -> Result<Option<Duration>> {
                s.map(|s| seconds(field, s)).transpose()
            };
            Some(TraceOptions {
                endpoint: t.endpoint.clone(),
                headers: t
                    .headers
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                service_name: t.service_name.clone(),
                sample_ratio: t.sample_ratio,
                level: level("telemetry.traces.level", &t.level)?,
                exporter,
                batch: BatchOptions {
                    max_queue_size: count("telemetry.traces.max_queue_size", t.max_queue_size)?,
                    max_export_batch_size: count(
                        "telemetry.traces.max_export_batch_size",
                        t.max_export_batch_size,
                    )?,
                    scheduled_delay: secs("telemetry.traces.scheduled_delay", t.scheduled_delay)?,
                    export_timeout: secs("telemetry.traces.export_timeout", t.export_timeout)?,
                },
            })
        } else {
            None
        };
        let l = &self.logs;
        let logs = if l.enabled.unwrap_or(false) {
            if let Some(v) = &l.level {
                parse_level("telemetry.logs.level", v)
                    .map_err(|e| reason("telemetry.logs.level", v, &e))?;
            }
            Some(LogOptions {
                level: l.level.clone(),
                sink: Default::default(),
            })
        } else {
            None
        };
        Ok(TelemetryOptions { traces, logs })
    }
}

fn invalid(field: &str, value: &str, why: &str) -> Error {
    ConfigError::Invalid {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: why.to_owned(),
    }
    .into()
}

/// A core validation error, re-labelled with the field and value it came from.
fn reason(field: &str, value: &str, e: &Error) -> Error {
    let text = match e {
        Error::RateLimit(crate::RateLimitError::InvalidPolicy(m)) => m.clone(),
        Error::Cache(crate::CacheError::InvalidTtl(m)) => m.clone(),
        Error::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    };
    invalid(field, value, &text)
}

fn seconds(field: &str, s: f64) -> Result<Duration> {
    crate::clock::duration_from_secs(field, s).map_err(|e| reason(field, &s.to_string(), &e))
}

fn size(field: &str, n: u64) -> Result<usize> {
    if n == 0 {
        return Err(invalid(field, "0", "must be at least 1"));
    }
    usize::try_from(n).map_err(|_| invalid(field, &n.to_string(), "too large for this platform"))
}

fn limiter(name: &str, rl: &RateLimitConfig) -> Result<LimiterSettings> {
    let field = |f: &str| format!("ratelimit.{name}.{f}");
    let algorithm = match &rl.algorithm {
        None => DEFAULT_ALGORITHM,
        Some(a) => Algorithm::parse(a)
            .map_err(|_| invalid(&field("algorithm"), a, "use \"gcra\" or \"sliding_window\""))?,
    };
    let limit = rl.limit.ok_or_else(|| ConfigError::Missing {
        field: field("limit"),
        hint: "units of cost per window, e.g. limit = 100".into(),
    })?;
    if limit == 0 {
        return Err(invalid(&field("limit"), "0", "must be at least 1"));
    }
    let secs = rl.window.ok_or_else(|| ConfigError::Missing {
        field: field("window"),
        hint: "the window in seconds, e.g. window = 60".into(),
    })?;
    let window =
        window_from_secs(secs).map_err(|e| reason(&field("window"), &secs.to_string(), &e))?;
    let policy = Policy::new(name, limit, window, algorithm).map_err(|e| {
        // The policy's own checks: the name (the table's) or limit against window.
        let (f, v) = if e.to_string().contains("name must be") {
            (format!("ratelimit.{name}"), format!("{name:?}"))
        } else {
            (field("limit"), limit.to_string())
        };
        reason(&f, &v, &e)
    })?;
    let max_keys = match rl.max_keys {
        None => None,
        Some(0) => return Err(invalid(&field("max_keys"), "0", "must be at least 1")),
        Some(n) => Some(
            usize::try_from(n)
                .map_err(|_| invalid(&field("max_keys"), &n.to_string(), "too large"))?,
        ),
    };
    if let (Some(n), Some(_)) = (max_keys, &rl.shared) {
        #[cfg(unix)]
        if n > crate::ratelimit::MAX_SHARED_KEYS {
            return Err(invalid(
                &field("max_keys"),
                &n.to_string(),
                &format!(
                    "a shared limiter tracks at most {} keys",
                    crate::ratelimit::MAX_SHARED_KEYS
                ),
            ));
        }
    }
    if let Some(p) = &rl.shared {
        if p.as_os_str().is_empty() {
            return Err(invalid(&field("shared"), "\"\"", "name a state file path"));
        }
    }
    let redis = match rl.backend.as_deref() {
        None | Some("local") => false,
        Some("redis") => true,
        Some(other) => {
            return Err(invalid(
                &field("backend"),
                &format!("{other:?}"),
                "use \"local\" or \"redis\"",
            ))
        }
    };
    if redis && rl.shared.is_some() {
        return Err(invalid(
            &field("shared"),
            &rl.shared
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            "a limiter is either host-shared (a state file) or in Redis, not both",
        ));
    }
    #[cfg(feature = "redis")]
    if redis {
        crate::ratelimit::check_redis_policy(&policy)
            .map_err(|e| reason(&field("window"), &secs.to_string(), &e))?;
    }
    let on_redis_error = match rl.on_redis_error.as_deref() {
        None => OnRedisError::default(),
        Some(v) => {
            if !redis {
                return Err(invalid(
                    &field("on_redis_error"),
                    &format!("{v:?}"),
                    "only a limiter with backend = \"redis\" uses it",
                ));
            }
            OnRedisError::parse(v).map_err(|_| {
                invalid(
                    &field("on_redis_error"),
                    &format!("{v:?}"),
                    "use \"open\" or \"closed\"",
                )
            })?
        }
    };
    Ok(LimiterSettings {
        policy,
        shared: rl.shared.clone(),
        max_keys,
        redis,
        on_redis_error,
    })
}

fn redis_settings(r: &RedisSection) -> Result<Option<RedisSettings>> {
    let Some(url) = &r.url else {
        for (field, set) in [
            ("redis.timeout", r.timeout.is_some()),
            ("redis.pool_size", r.pool_size.is_some()),
            ("redis.prefix", r.prefix.is_some()),
            ("redis.invalidate_api_keys", r.invalidate_api_keys.is_some()),
        ] {
            if set {
                return Err(ConfigError::Missing {
                    field: "redis.url".into(),
                    hint: format!("{field} is set but the Redis URL is not"),
                }
                .into());
            }
        }
        return Ok(None);
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(
        scheme.as_deref(),
        Some("redis" | "rediss" | "redis+unix" | "unix")
    ) {
        return Err(invalid(
            "redis.url",
            &redact_url(url),
            "use redis://[:password@]host[:port][/db]",
        ));
    }
    #[cfg(not(feature = "redis"))]
    {
        Err(ConfigError::BackendUnavailable {
            field: "redis.url".into(),
            scheme: scheme.unwrap_or_default(),
        }
        .into())
    }
    #[cfg(feature = "redis")]
    {
        let timeout = match r.timeout {
            None => crate::redis::DEFAULT_TIMEOUT,
            Some(t) => seconds("redis.timeout", t)?,
        };
        let pool_size = match r.pool_size {
            None => crate::redis::DEFAULT_POOL_SIZE,
            Some(0) => return Err(invalid("redis.pool_size", "0", "must be at least 1")),
            Some(n) => n,
        };
        let prefix = r
            .prefix
            .clone()
            .unwrap_or_else(|| crate::redis::DEFAULT_PREFIX.to_owned());
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !valid {
            return Err(invalid(
                "redis.prefix",
                &format!("{prefix:?}"),
                "use 1-64 ASCII letters, digits, '_', '-', '.' or ':'",
            ));
        }
        Ok(Some(RedisSettings {
            url: url.clone(),
            timeout,
            pool_size,
            prefix,
            invalidate_api_keys: r.invalidate_api_keys.unwrap_or(true),
        }))
    }
}

fn cache_config(name: &str, c: &CacheSection) -> Result<CacheConfig> {
    let field = |f: &str| format!("cache.{name}.{f}");
    let max_entries = c.max_entries.ok_or_else(|| ConfigError::Missing {
        field: field("max_entries"),
        hint: "most entries held, e.g. max_entries = 10000".into(),
    })?;
    if max_entries == 0 {
        return Err(invalid(&field("max_entries"), "0", "must be at least 1"));
    }
    let mut config = CacheConfig::new(max_entries);
    if let Some(w) = c.max_weight {
        if w == 0 {
            return Err(invalid(&field("max_weight"), "0", "must be at least 1"));
        }
        config = config.max_weight(w);
    }
    if let Some(t) = c.ttl {
        config = config
            .ttl(ttl_from_secs_f64(t).map_err(|e| reason(&field("ttl"), &t.to_string(), &e))?);
    }
    Ok(config)
}

/// Masks the password of a URL's user info (`scheme://user:***@host`), for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Parses a database URL: `sqlite:///abs/path` or `sqlite://relative/path` (relative to the
/// working directory), `postgres://...` / `postgresql://...` (with the Cargo feature
/// `postgres`; otherwise [`ConfigError::BackendUnavailable`], naming only the scheme). `redis`
/// and `rediss` are known schemes that hold no database (also `BackendUnavailable`).
pub fn parse_url(field: &str, url: &str) -> Result<Backend> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            field,
            &redact_url(url),
            "not a URL: use sqlite:///absolute/path.db or sqlite://relative/path.db",
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {
            if rest.is_empty() || rest == "/" {
                return Err(invalid(field, url, "the URL names no database file"));
            }
            Ok(Backend::Sqlite(PathBuf::from(rest)))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            if rest.is_empty() {
                return Err(invalid(
                    field,
                    &redact_url(url),
                    "the URL names no server: use postgres://user:password@host:port/db",
                ));
            }
            Ok(Backend::Postgres(SecretUrl::new(url)))
        }
        #[cfg(not(feature = "postgres"))]
        s @ ("postgres" | "postgresql") => Err(ConfigError::BackendUnavailable {
            field: field.to_owned(),
            scheme: s.to_owned(),
        }
        .into()),
        s @ ("redis" | "rediss") => Err(ConfigError::BackendUnavailable {
            field: field.to_owned(),
            scheme: s.to_owned(),
        }
        .into()),
        _ => Err(invalid(
            field,
            &redact_url(url),
            &format!("unknown scheme {scheme:?}: use sqlite:///path or postgres://host/db"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratelimit_table_takes_shared_path_as_the_doors_name_it() {
        let c = Config::from_toml(
            "[ratelimit.api]\nlimit = 5\nwindow = 60\nshared_path = \"/tmp/keel-rl\"\n",
        )
        .unwrap();
        assert_eq!(
            c.ratelimit["api"].shared.as_deref(),
            Some(std::path::Path::new("/tmp/keel-rl"))
        );
    }

    #[test]
    fn a_password_never_appears_in_a_redacted_url() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/keel"),
            "postgres://app:***@db:5432/keel"
        );
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
        assert_eq!(redact_url("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }

    #[test]
    fn sqlite_urls_absolute_and_relative() {
        assert_eq!(
            parse_url("f", "sqlite:///var/x.db").unwrap(),
            Backend::Sqlite("/var/x.db".into())
        );
        assert_eq!(
            parse_url("f", "sqlite://data/x.db").unwrap(),
            Backend::Sqlite("data/x.db".into())
        );
        assert!(parse_url("f", "sqlite://").is_err());
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(env_key("DATABASE_URL").as_deref(), Some("database__url"));
        assert_eq!(env_key("KEYRING_FILE").as_deref(), Some("keyring__file"));
        assert_eq!(
            env_key("RATELIMIT__PER_IP__LIMIT").as_deref(),
            Some("ratelimit__per_ip__limit")
        );
        assert_eq!(env_key("KEYRING"), None);
        assert_eq!(env_key("PYTHON"), None);
    }

    #[test]
    fn telemetry_is_off_unless_enabled_and_checked_by_field() {
        let off = Config::from_toml("[telemetry.traces]\nendpoint = \"http://c:4318\"\n")
            .unwrap()
            .telemetry
            .options()
            .unwrap();
        assert!(off.traces.is_none() && off.logs.is_none());
        let on = Config::from_toml(
            "[telemetry.traces]\nenabled = true\nendpoint = \"http://c:4318\"\n\
             headers = { x-key = \"v\" }\nsample_ratio = 0.25\nscheduled_delay = 0.5\n\
             exporter = \"none\"\n[telemetry.logs]\nenabled = true\nlevel = \"debug\"\n\
             [telemetry.metrics]\n",
        )
        .unwrap()
        .telemetry
        .options()
        .unwrap();
        let t = on.traces.unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("http://c:4318"));
        assert_eq!(t.headers, vec![("x-key".to_owned(), "v".to_owned())]);
        assert_eq!(t.sample_ratio, Some(0.25));
        assert_eq!(t.batch.scheduled_delay, Some(Duration::from_millis(500)));
        assert_eq!(t.exporter, Some(crate::telemetry::trace::Exporter::None));
        assert_eq!(on.logs.unwrap().level.as_deref(), Some("debug"));
        for (toml, field) in [
            (
                "[telemetry.traces]\nenabled = true\nsample_ratio = 2.0",
                "telemetry.traces.sample_ratio",
            ),
            (
                "[telemetry.traces]\nenabled = true\nlevel = \"loud\"",
                "telemetry.traces.level",
            ),
            (
                "[telemetry.traces]\nenabled = true\nendpoint = \"c:4318\"",
                "telemetry.traces.endpoint",
            ),
            (
                "[telemetry.traces]\nenabled = true\nexporter = \"zipkin\"",
                "telemetry.traces.exporter",
            ),
            (
                "[telemetry.logs]\nenabled = true\nlevel = \"chatty\"",
                "telemetry.logs.level",
            ),
        ] {
            let e = Config::from_toml(toml)
                .unwrap()
                .telemetry
                .options()
                .unwrap_err();
            assert!(
                matches!(&e, Error::Config(ConfigError::Invalid { field: f, .. }) if f == field),
                "{toml}: {e}"
            );
        }
        let e = Config::from_toml("[telemetry.traces]\nendpiont = \"x\"").unwrap_err();
        assert!(e.to_string().contains("endpiont"), "{e}");
        let t =
            TelemetryConfig::from_toml("[traces]\nenabled = true\nexporter = \"none\"").unwrap();
        assert_eq!(t.traces.enabled, Some(true));
    }

    fn field_of(text: &str) -> String {
        let e = Config::from_toml(text).unwrap().validate().unwrap_err();
        match e {
            Error::Config(ConfigError::Invalid { field, .. })
            | Error::Config(ConfigError::Missing { field, .. }) => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn redis_settings_are_validated_naming_the_field() {
        let db = "[database]\nurl = \"sqlite:///tmp/x.db\"\n";
        let redis = "[redis]\nurl = \"redis://:pw@127.0.0.1:6379\"\n";
        let rl = "[ratelimit.api]\nlimit = 5\nwindow = 60\n";
        assert_eq!(
            field_of(&format!("{db}{rl}backend = \"redis\"\n")),
            "redis.url"
        );
        assert_eq!(
            field_of(&format!("{db}{redis}{rl}backend = \"memcached\"\n")),
            "ratelimit.api.backend"
        );
        assert_eq!(
            field_of(&format!(
                "{db}{redis}{rl}backend = \"redis\"\non_redis_error = \"maybe\"\n"
            )),
            "ratelimit.api.on_redis_error"
        );
        assert_eq!(
            field_of(&format!("{db}{redis}{rl}on_redis_error = \"open\"\n")),
            "ratelimit.api.on_redis_error"
        );
        assert_eq!(
            field_of(&format!(
                "{db}{redis}{rl}backend = \"redis\"\nshared = \"/dev/shm/x\"\n"
            )),
            "ratelimit.api.shared"
        );
        assert_eq!(
            field_of(&format!(
                "{db}{redis}[ratelimit.api]\nlimit = 5\nwindow = 3000000\nbackend = \"redis\"\n"
            )),
            "ratelimit.api.window"
        );
        assert_eq!(
            field_of(&format!("{db}[redis]\nurl = \"http://x\"\n")),
            "redis.url"
        );
        assert_eq!(
            field_of(&format!("{db}[redis]\nprefix = \"x\"\n")),
            "redis.url"
        );
        assert_eq!(
            field_of(&format!("{db}{redis}prefix = \"a b\"\n")),
            "redis.prefix"
        );
        assert_eq!(
            field_of(&format!("{db}[cache.c]\nmax_entries = 5\nl2 = true\n")),
            "redis.url"
        );
        let ok = Config::from_toml(&format!(
            "{db}{redis}{rl}backend = \"redis\"\non_redis_error = \"open\"\n"
        ))
        .unwrap()
        .validate()
        .unwrap();
        let l = &ok.ratelimit["api"];
        assert!(l.redis);
        assert_eq!(l.on_redis_error, OnRedisError::Open);
        let text = format!(
            "{:?}",
            Config::from_toml(&format!("{db}[redis]\nurl = \"http://:pw@x\"\n"))
                .unwrap()
                .validate()
                .unwrap_err()
        );
        assert!(!text.contains("pw@"), "{text}");
    }

    #[test]
    fn retrieval_sessions_and_threads_are_checked_naming_the_field_and_value() {
        let db = "[database]\nurl = \"sqlite:///tmp/never-opened.db\"\n[retrieval]\n";
        for (toml, field, value) in [
            ("sessions = 0", "retrieval.sessions", "0"),
            ("sessions = 65", "retrieval.sessions", "65"),
            ("threads = 5000", "retrieval.threads", "5000"),
        ] {
            let e = Config::from_toml(&format!("{db}{toml}"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(
                matches!(&e, Error::Config(ConfigError::Invalid { field: f, value: v, .. })
                    if f == field && v == value),
                "{toml}: {e}"
            );
        }
        let ok = Config::from_toml(&format!("{db}sessions = 2\nthreads = 1"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(ok.retrieval.pool(), (Some(2), 1));
    }
}
