//! The one error type of the core crate.
//!
//! Each area of keel has its own variant family so that the C binding can map it to a stable
//! result-code range and the Python binding to an exception subclass, each in one place.
//! Messages never contain keys, values, secrets or message content: only sizes, limits and names.

/// Everything that can go wrong in keel.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument was outside the accepted range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A cache-specific failure.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// An API-key failure: malformed, unknown, revoked, expired, or missing a scope.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A rate-limiting failure (bad policy or cost; a denial is a decision, not an error).
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    /// A retrieval failure (chunking, indexing, search, fusion, evaluation).
    #[error(transparent)]
    Rag(#[from] RagError),
    /// A failure of the SQLite store (open, pool, migrations, a statement).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A keyring or field-encryption failure.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A conversation-memory failure.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// An engine configuration failure (`keel::config`, `keel::Engine`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A telemetry (trace export or logs) failure (`keel::telemetry::trace`).
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A streaming failure: segmenter options, an SSE field that cannot be encoded, an SSE
    /// stream over the parser's size limit.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A Redis backend failure: Redis unreachable, a command refused, a bad URL.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Failures of [`crate::telemetry::trace`]. Messages name the option or variable, never a header
/// value (headers often carry a vendor's API key).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A telemetry option or `OTEL_*` variable is invalid.
    #[error("telemetry configuration: {0}")]
    Config(String),
    /// The OTLP exporter could not be built.
    #[error("trace exporter: {0}")]
    Exporter(String),
    /// The process already has a global `tracing` subscriber that is not keel's.
    #[error(
        "the process already has a global tracing subscriber; add tracing-opentelemetry to it \
         instead (keel's spans are ordinary tracing spans)"
    )]
    Subscriber,
}

/// Failures of the Redis backends ([`crate::redis`]). Messages name the endpoint (host and port)
/// and the failure, never the password, a key, a value or a message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Redis could not be reached, or did not answer within the timeout (down, restarting,
    /// loading, network). A rate limiter with `on_redis_error = "closed"` returns this error; one
    /// with `"open"` allows the request and flags the decision `degraded`.
    #[error("Redis at {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// Host and port.
        endpoint: String,
        /// What failed (connection refused, timed out, ...).
        reason: String,
    },
    /// Redis answered with an error (a script error, a wrong type under one of keel's keys).
    #[error("Redis at {endpoint} refused a command: {reason}")]
    Command {
        /// Host and port.
        endpoint: String,
        /// Redis' error text.
        reason: String,
    },
    /// The Redis URL does not parse.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Failures of the [`crate::cache`] module.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// `max_entries` (or `max_weight`) was zero.
    #[error("cache capacity must be at least 1 (got {field} = 0)")]
    ZeroCapacity {
        /// Which limit was zero.
        field: &'static str,
    },
    /// A TTL was zero, negative, NaN or too large to represent.
    #[error("invalid TTL: {0}")]
    InvalidTtl(String),
    /// One entry weighs more than a single cache shard can ever hold.
    #[error("entry weight {weight} exceeds the largest storable weight {max}")]
    EntryTooLarge {
        /// The weight of the rejected entry.
        weight: u64,
        /// The largest weight this cache can store in one entry.
        max: u64,
    },
    /// A get-or-compute for a key was called again, on the same thread, from inside the
    /// computation of that same key; waiting would deadlock, so it fails instead.
    #[error("recursive get_or_insert for a key that this thread is already computing")]
    RecursiveLoad,
}

/// Failures of the [`crate::auth`] module. Messages never contain the presented key.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The string is not shaped like a keel API key.
    #[error("malformed API key")]
    Malformed,
    /// The key's checksum does not match: a typo or a truncated copy.
    #[error("API key checksum mismatch (mistyped or truncated key)")]
    BadChecksum,
    /// No such key (or it was deleted).
    #[error("unknown API key")]
    UnknownKey,
    /// The key was revoked.
    #[error("API key revoked")]
    Revoked,
    /// The key (or its rotation grace period) has expired.
    #[error("API key expired")]
    Expired,
    /// The key is valid but lacks a required scope.
    #[error("API key lacks scope {scope:?}")]
    MissingScope {
        /// The scope that was required.
        scope: String,
    },
    /// An environment label is not 1-16 lowercase letters or digits.
    #[error("invalid key environment: use 1-16 lowercase ASCII letters or digits")]
    InvalidEnv,
    /// The key's stored record (tenant, scopes, expiry, revocation, rate limit...) does not
    /// match its keyring MAC: the database was edited without the keyring.
    #[error("API key refused: its stored record fails its integrity check (edited outside keel)")]
    Tampered,
    /// The key belongs to an environment this registry does not accept (`accepted_envs`).
    #[error(
        "API key of environment {env:?} refused: this registry accepts {}",
        .accepted.join(", ")
    )]
    WrongEnvironment {
        /// The key's environment label.
        env: String,
        /// The environments the registry accepts.
        accepted: Vec<String>,
    },
}

/// Failures of the [`crate::ratelimit`] module.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// A policy's limit, window or name is unusable.
    #[error("invalid rate-limit policy: {0}")]
    InvalidPolicy(String),
    /// A request's cost can never be allowed by the policy (cost 0 or above the limit).
    #[error("cost {cost} can never fit policy {policy:?} (limit {limit})")]
    InvalidCost {
        /// The requested cost.
        cost: u64,
        /// The policy's limit.
        limit: u64,
        /// The policy's name.
        policy: String,
    },
    /// The host-shared state file could not be created, opened or mapped, or was created with
    /// other settings.
    #[error("host-shared rate-limit state: {0}")]
    Shared(String),
    /// A host-shared decision waited too long for a stripe lock that another process keeps
    /// taking (a lock abandoned by a dead holder is taken over after its lease instead).
    #[error(
        "host-shared rate-limit state {path}: a stripe lock stayed busy for {waited_ms} ms \
         (last held by pid {holder_pid})"
    )]
    SharedBusy {
        /// The state file.
        path: String,
        /// How long this decision waited, in milliseconds.
        waited_ms: u64,
        /// The pid found in the lock word (in its own pid namespace).
        holder_pid: u32,
    },
}

/// Failures of the [`crate::store`] module. Messages carry SQLite's error text and codes, never
/// bound values.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database stayed locked by other connections or processes longer than the store waits
    /// (busy_timeout plus retries).
    #[error("database is busy: still locked after waiting {waited_ms} ms")]
    Busy {
        /// How long this call waited, in milliseconds.
        waited_ms: u64,
    },
    /// The schema could not be brought to the current version.
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// The database file could not be opened or is not a usable keel database.
    #[error("cannot open database: {0}")]
    Open(String),
    /// No pooled connection could be obtained.
    #[error("connection pool: {0}")]
    Pool(String),
    /// SQLite reported an error.
    #[error("sqlite error (code {code}): {message}")]
    Sqlite {
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's description of the error.
        message: String,
    },
    /// The database server could not be reached, or the connection was lost before the
    /// operation was known to commit (PostgreSQL). Nothing was acknowledged; retry later.
    #[error("database unavailable at {location}: {reason}")]
    Unavailable {
        /// The database URL, without credentials.
        location: String,
        /// Why (connection refused, timed out, closed), never a password.
        reason: String,
    },
    /// PostgreSQL reported an error.
    #[error("postgres error (SQLSTATE {code}): {message}")]
    Postgres {
        /// The five-character SQLSTATE.
        code: String,
        /// The server's primary message (never its detail, which may quote values).
        message: String,
    },
}

/// Failures of the [`crate::crypto`] module. Messages name key ids and sizes, never key bytes,
/// plaintext or ciphertext.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A ciphertext failed authentication: it was altered, moved to another row or column, or
    /// encrypted under different key material.
    #[error("decryption failed: the ciphertext is corrupt, was moved, or the key is wrong")]
    DecryptionFailed,
    /// The ciphertext names a key id the keyring does not hold (a retired or missing key).
    #[error("the keyring has no key with id {key_id}")]
    UnknownKey {
        /// The key id named by the ciphertext.
        key_id: u32,
    },
    /// The ciphertext is too short or has a format version this build does not know.
    #[error("unsupported or malformed ciphertext: {0}")]
    Format(String),
    /// Keyring material is malformed (bad encoding, wrong key length, duplicate id, no key).
    #[error("invalid keyring: {0}")]
    InvalidKeyring(String),
    /// The keyring source (environment variable or key file) is missing or unreadable.
    #[error("keyring source: {0}")]
    KeyringSource(String),
    /// A key cannot be retired while rows are still encrypted under it.
    #[error("key {key_id} is still used by {rows} encrypted fields; rotate them first")]
    KeyInUse {
        /// The key that was to be retired.
        key_id: u32,
        /// How many fields still use it.
        rows: u64,
    },
    /// The system random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// A key of the keyring does not match the key of the same id that this database was
    /// written with (checked when a store opens, against a keyed check value per key id): the
    /// wrong keyring, or a key id reused for a different key.
    #[error(
        "key {key_id} of the keyring does not match the key {key_id} this database was written \
         with (wrong keyring?)"
    )]
    KeyMismatch {
        /// The key id whose bytes differ.
        key_id: u32,
    },
    /// The audit log's hash chain is broken at this entry: an entry was edited, deleted,
    /// inserted or reordered (or the log was truncated after its recorded head).
    #[error("audit log tampered with at entry {seq}")]
    AuditTampered {
        /// The first entry (sequence number) whose chain link does not verify.
        seq: i64,
    },
}

/// Failures of the [`crate::memory`] module.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// No session with this id exists for this tenant and user.
    #[error("session not found")]
    SessionNotFound,
    /// A message's content is larger than the store accepts.
    #[error("message content is {size} bytes; the limit is {max}")]
    ContentTooLarge {
        /// Size of the rejected content in bytes.
        size: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// Metadata was not a valid JSON document (or exceeded the size limit).
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// Stored data failed its integrity check: a message's ciphertext or one of its clear
    /// columns (role, tokens, time, session, place in the session) was altered, a message was
    /// deleted, or a session's owner, times or message count were edited. Nothing is returned.
    #[error("{}", tampered_text(*.message_id, reason))]
    Tampered {
        /// The message that failed, when one did (None: the session as a whole).
        message_id: Option<i64>,
        /// What does not verify (never content, ids of tenants, users or sessions).
        reason: String,
    },
    /// A token budget cannot hold what must always be sent (the system prompt and the
    /// retrieved passages), let alone any history.
    #[error("token budget {budget} is too small: the system prompt and passages alone take {needed} tokens")]
    BudgetTooSmall {
        /// The budget asked for.
        budget: u64,
        /// Tokens the system prompt and passages take.
        needed: u64,
    },
}

fn tampered_text(message_id: Option<i64>, reason: &str) -> String {
    match message_id {
        Some(id) => format!("message {id} failed its integrity check: {reason}"),
        None => format!("session failed its integrity check: {reason}"),
    }
}

/// Failures of the [`crate::rag`] module (also reachable as `keel::rag::RagError`). Messages
/// name sizes, limits, line numbers and setting names, never document or query text.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RagError {
    /// A setting was out of range (a chunk size of 0, an overlap not below the size, a negative
    /// k1, a b outside [0, 1], an unknown language, a fusion weight that is not finite, ...).
    #[error("invalid retrieval setting: {0}")]
    InvalidConfig(String),
    /// A document with this id is already in the index (use update to replace it).
    #[error("a document with this id is already indexed (use update to replace it)")]
    DuplicateDocument,
    /// Metadata was not a JSON object, or a filter was malformed.
    #[error("invalid metadata or filter: {0}")]
    InvalidMetadata(String),
    /// Reading or writing an index file failed.
    #[error("index I/O failed: {0}")]
    Io(String),
    /// An index file is not a keel index, is of an unsupported version, or is damaged.
    #[error("corrupt or incompatible index file: {0}")]
    CorruptIndex(String),
    /// An evaluation data set (BEIR layout, qrels, run) could not be read.
    #[error("invalid evaluation data: {0}")]
    InvalidData(String),
    /// ONNX Runtime could not be found or started (the message says how to install it).
    #[error("ONNX Runtime unavailable: {0}")]
    Runtime(String),
    /// A model directory is missing, incomplete or malformed, or inference failed.
    #[error("model error: {0}")]
    Model(String),
    /// A folder or file given to a knowledge base could not be used: the folder is missing or
    /// not a folder, or a file cannot be read or is not UTF-8 text. Names the path.
    #[error("cannot index {path}: {reason}")]
    Source {
        /// The offending folder or file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Indexing a folder was stopped by its progress callback; the files indexed before the
    /// stop are kept (and saved), the rest are left as they were.
    #[error("indexing stopped by the progress callback after {done} of {total} files")]
    Cancelled {
        /// Files processed before the stop.
        done: usize,
        /// Files found in the folder.
        total: usize,
    },
}

impl From<std::io::Error> for RagError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.kind().to_string())
    }
}

/// Failures of [`crate::config`] and [`crate::Engine`]. Messages name the field (as a dotted
/// path such as `ratelimit.per_ip.limit`) and its value, but never a secret: a URL's password is
/// replaced by `***`, and keyring text is never part of a configuration.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration could not be read or parsed: an unreadable file, a TOML syntax error, an
    /// unknown field (a typo), or a value of the wrong type. The message names the field and
    /// where it came from (the file or the `KEEL_*` variable).
    #[error("configuration: {0}")]
    Parse(String),
    /// A field's value is outside what it accepts.
    #[error("configuration: {field} = {value}: {reason}")]
    Invalid {
        /// The field, as a dotted path (`ratelimit.per_ip.limit`).
        field: String,
        /// The offending value as written (a URL with its password masked).
        value: String,
        /// What the field accepts.
        reason: String,
    },
    /// A required field is not set, or an accessor needs a field that is not configured.
    #[error("configuration: {field} is not set ({hint})")]
    Missing {
        /// The field, as a dotted path.
        field: String,
        /// How to set it.
        hint: String,
    },
    /// The URL names a scheme that is no database backend of this build: `redis://` (Redis
    /// holds no database; it is configured under `[redis]`), or `postgres://` in a build without
    /// the `postgres` feature.
    #[error(
        "configuration: {field}: no {scheme}:// database backend in this build (database URLs are \
         sqlite:///path, or postgres://... with the `postgres` feature; Redis is configured under \
         [redis])"
    )]
    BackendUnavailable {
        /// The field holding the URL.
        field: String,
        /// The URL's scheme (never the rest of the URL).
        scheme: String,
    },
    /// An accessor asked for a rate limiter or cache that the configuration does not define.
    #[error(
        "no {kind} named {name:?} is configured (configured: {})",
        if .configured.is_empty() { "none".to_owned() } else { .configured.join(", ") }
    )]
    UnknownName {
        /// `rate limiter` or `cache`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names the configuration defines.
        configured: Vec<String>,
    },
}

/// Failures of the [`crate::stream`] module. Messages name options, fields and limits, never the
/// streamed text.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Segmenter options out of range (`max_chars` below the smallest accepted value,
    /// `min_chars` above `max_chars`) or an SSE parser limit of 0.
    #[error("invalid streaming option: {0}")]
    InvalidOptions(String),
    /// An SSE field that the wire format cannot carry: an event name or id containing a line
    /// break (or, for an id, NUL), which would split or silently drop the field.
    #[error("SSE field `{field}` cannot contain {what}")]
    InvalidSseField {
        /// `event` or `id`.
        field: &'static str,
        /// What it contains: `a line break` or `NUL`.
        what: &'static str,
    },
    /// An SSE line, or the data of one event, grew past the parser's limit without ending: the
    /// partial line or event is dropped (the parser skips to the next line and carries on).
    #[error("SSE line or event exceeds the parser limit of {limit} bytes")]
    SseTooLarge {
        /// The parser's `max_event_bytes`.
        limit: usize,
    },
    /// Bytes given to [`crate::stream::SentenceSegmenter::push_bytes`] are not UTF-8, or the
    /// stream ended inside a character.
    #[error("segmenter input is not valid UTF-8: {0}")]
    InvalidUtf8(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
