//! Result codes, the one mapping from `keel_core::Error` to them, and the per-thread message.
//!
//! Codes are ABI: `KEEL_OK` is 0 forever, each area owns a range of 100, and a code is never
//! renumbered or reused (a retired code stays here as a comment). `keel_result` is a plain
//! `int32_t`, not a C enum, so that any value a C caller hands back (to `keel_result_name`) is
//! well defined on the Rust side; unknown values take a fallback instead of being transmuted.
//!
//! One table. Every code is listed once, in the `result_codes!` invocation below, as its doc,
//! `NAME = value`, and the core errors it stands for (a pattern on `keel_core::Error`). The
//! macro generates the `pub const`s, [`RESULT_CODES`] (from which `tests/header.rs` writes the
//! header's `#define`s: cbindgen does not look inside macro invocations), the mapping
//! [`result_code`] and `keel_result_name`; a test pins every (name, value) pair against a
//! literal list.
//!
//! The message. Every function that returns a `keel_result` records a message when it fails and
//! clears it when it succeeds, so `keel_last_error_message()` always describes the most recent
//! such call on this thread: a stale message can never be mistaken for the current one. Functions
//! that return no code (getters, `_free`, `keel_result_name`, `keel_version`) leave it alone, so
//! they can be called while reporting an error. Messages name arguments, sizes and limits, never
//! key or value bytes. The buffer is reused, so failing calls stop allocating once it has grown.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use keel_core::{
    AuthError, CacheError, ConfigError, CryptoError, Error, MemoryError, RagError, RateLimitError,
    RedisError, StoreError, StreamError, TraceError,
};

use crate::panic::ffi_guard;

/// The status every fallible keel function returns: `KEEL_OK` (0) or one of the `KEEL_ERR_*`
/// codes. Codes are stable: never renumbered, never reused.
pub type keel_result = i32;

/// `s` (which must end in one NUL and have no other) as a C string, at compile time.
const fn c_name(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a result-code name is NUL-terminated"),
    }
}

/// Generates, from one list of `doc NAME = value [=> error pattern];`, the constants, the table
/// [`RESULT_CODES`], [`result_code`] and `result_name`.
macro_rules! result_codes {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $value:literal $(=> ($pat:pat))?;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: keel_result = $value;
        )*

        /// Every result code as (name, value, doc lines), in table order.
        #[cfg(test)]
        pub(crate) const RESULT_CODES: &[(&str, keel_result, &[&str])] =
            &[$((stringify!($name), $value, &[$($doc),*])),*];

        /// The code for a core error. The one place where `keel_core::Error` meets
        /// `keel_result`. The core's enums are #[non_exhaustive]: a variant added to the core
        /// before it has a code here still reaches C as a failure (`KEEL_ERR_INTERNAL`), with
        /// its message.
        pub(crate) fn result_code(err: &Error) -> keel_result {
            match err {
                $($($pat => $name,)?)*
                _ => KEEL_ERR_INTERNAL,
            }
        }

        fn result_name(result: keel_result) -> &'static CStr {
            match result {
                $($name => {
                    const NAME: &CStr = c_name(concat!(stringify!($name), "\0"));
                    NAME
                })*
                _ => c"KEEL_ERR_UNKNOWN",
            }
        }
    };
}

result_codes! {
    /// Success.
    KEEL_OK = 0;

    // General errors: 1..=99.

    /// A required pointer argument was NULL.
    KEEL_ERR_NULL_ARG = 1;
    /// An argument was outside its accepted range or malformed.
    KEEL_ERR_INVALID_ARGUMENT = 2 => (Error::InvalidArgument(_));
    /// A string argument was not valid UTF-8.
    KEEL_ERR_INVALID_UTF8 = 3;
    /// The requested item does not exist (e.g. a cache miss). Not a malfunction.
    KEEL_ERR_NOT_FOUND = 4;
    /// A bug in keel: a Rust panic was caught before it could reach C. The handle is still usable.
    KEEL_ERR_PANIC = 5;
    /// A callback supplied by the caller reported failure (returned non-zero).
    KEEL_ERR_CALLBACK = 6;
    /// An unexpected internal failure (an error this version of the C binding has no code for).
    KEEL_ERR_INTERNAL = 7;
    /// A caller-supplied output buffer is too small; the message says how large it must be.
    KEEL_ERR_BUFFER_TOO_SMALL = 8;

    // Cache errors: 100..=199.

    /// `max_entries` was 0.
    KEEL_ERR_CACHE_ZERO_CAPACITY = 100 => (Error::Cache(CacheError::ZeroCapacity { .. }));
    /// A TTL was too large (more than 100 years).
    KEEL_ERR_CACHE_INVALID_TTL = 101 => (Error::Cache(CacheError::InvalidTtl(_)));
    /// One entry (key + value bytes) weighs more than the cache can hold.
    KEEL_ERR_CACHE_ENTRY_TOO_LARGE = 102 => (Error::Cache(CacheError::EntryTooLarge { .. }));
    /// `keel_cache_get_or_insert` was called, from inside its own compute callback, for the key that
    /// callback is computing; waiting for itself would deadlock.
    KEEL_ERR_CACHE_RECURSIVE_LOAD = 103 => (Error::Cache(CacheError::RecursiveLoad));

    // Rate-limiting errors: 500..=599.

    /// A rate-limit policy is unusable: bad name, zero limit, window outside 1 ms .. one year.
    KEEL_ERR_RATELIMIT_INVALID_POLICY = 500
        => (Error::RateLimit(RateLimitError::InvalidPolicy(_)));
    /// A request's cost is 0 or above the policy's limit, so it could never be allowed.
    KEEL_ERR_RATELIMIT_INVALID_COST = 501
        => (Error::RateLimit(RateLimitError::InvalidCost { .. }));
    /// The host-shared state file could not be opened or mapped, or has other settings.
    KEEL_ERR_RATELIMIT_SHARED_STATE = 502 => (Error::RateLimit(RateLimitError::Shared(_)));
    /// A host-shared decision waited longer than the bound (2 s) for a stripe lock that other
    /// processes keep taking; retry later. (A lock left by a dead process is taken over after its
    /// 500 ms lease, so this is not the crash case.)
    KEEL_ERR_RATELIMIT_SHARED_BUSY = 503
        => (Error::RateLimit(RateLimitError::SharedBusy { .. }));

    // Retrieval (rag) errors: 600..=699.

    /// A retrieval setting is out of range: chunk size 0, overlap not below the size, k1 < 0,
    /// b outside [0, 1], an unknown analyzer language.
    KEEL_ERR_RAG_INVALID_CONFIG = 600 => (Error::Rag(RagError::InvalidConfig(_)));
    /// A document with this id is already indexed (use the update function to replace it).
    KEEL_ERR_RAG_DUPLICATE_DOCUMENT = 601 => (Error::Rag(RagError::DuplicateDocument));
    /// Metadata is not a JSON object, or a filter is malformed.
    KEEL_ERR_RAG_INVALID_METADATA = 602 => (Error::Rag(RagError::InvalidMetadata(_)));
    /// Reading or writing an index file failed.
    KEEL_ERR_RAG_IO = 603 => (Error::Rag(RagError::Io(_)));
    /// An index file is damaged, not a keel index, or of an unsupported format version.
    KEEL_ERR_RAG_CORRUPT_INDEX = 604 => (Error::Rag(RagError::CorruptIndex(_)));
    /// An evaluation data set could not be read.
    KEEL_ERR_RAG_INVALID_DATA = 605 => (Error::Rag(RagError::InvalidData(_)));
    /// A folder or file given to a knowledge base cannot be used: the folder is missing or not
    /// a folder, or a file cannot be read or is not UTF-8 (the message names the path).
    KEEL_ERR_RAG_SOURCE = 606 => (Error::Rag(RagError::Source { .. }));
    /// Indexing a folder was stopped by its progress callback (it returned nonzero); what was
    /// indexed before is kept.
    KEEL_ERR_RAG_CANCELLED = 607 => (Error::Rag(RagError::Cancelled { .. }));
    /// ONNX Runtime could not be found or started (the message says how to install it:
    /// `pip install "onnxruntime>=1.31,<2"` or set `ORT_DYLIB_PATH`).
    KEEL_ERR_RAG_RUNTIME = 650 => (Error::Rag(RagError::Runtime(_)));
    /// A model directory is missing, incomplete or malformed (model.onnx, tokenizer.json), or
    /// inference failed.
    KEEL_ERR_RAG_MODEL = 651 => (Error::Rag(RagError::Model(_)));

    // Engine configuration errors: 700..=719.

    /// The configuration could not be read or parsed: an unreadable file, a TOML syntax error, an
    /// unknown field (a typo) or a value of the wrong type; the message names the field and where
    /// it came from (the file or the `KEEL_*` variable).
    KEEL_ERR_CONFIG_PARSE = 700 => (Error::Config(ConfigError::Parse(_)));
    /// A configuration field has a value it does not accept; the message names the field and
    /// value.
    KEEL_ERR_CONFIG_INVALID = 701 => (Error::Config(ConfigError::Invalid { .. }));
    /// A required configuration field is not set (e.g. `database.url`), or an accessor needs one
    /// that is not configured.
    KEEL_ERR_CONFIG_MISSING = 702 => (Error::Config(ConfigError::Missing { .. }));
    /// The database URL names a backend this build does not have (`redis://`, which holds no
    /// database; `postgres://` without the Cargo feature `postgres`); the message names the
    /// scheme, never the rest of the URL.
    KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE = 703
        => (Error::Config(ConfigError::BackendUnavailable { .. }));
    /// No rate limiter or cache of that name is configured; the message lists the configured ones.
    KEEL_ERR_CONFIG_UNKNOWN_NAME = 704 => (Error::Config(ConfigError::UnknownName { .. }));

    // Telemetry (traces and logs) errors: 800..=819.

    /// A telemetry option or standard `OTEL_*` variable is invalid; the message names it (never a
    /// header value).
    KEEL_ERR_TELEMETRY_CONFIG = 800 => (Error::Trace(TraceError::Config(_)));
    /// The OTLP trace exporter could not be built or could not send (flush).
    KEEL_ERR_TELEMETRY_EXPORTER = 801 => (Error::Trace(TraceError::Exporter(_)));
    /// The process already has a global `tracing` subscriber that is not keel's.
    KEEL_ERR_TELEMETRY_SUBSCRIBER = 802 => (Error::Trace(TraceError::Subscriber));
    // Streaming errors: 850..=869.

    /// Segmenter options out of range (`max_chars` below 8, `min_chars` above `max_chars`).
    KEEL_ERR_STREAM_INVALID_OPTIONS = 850
        => (Error::Stream(StreamError::InvalidOptions(_)));
    /// An SSE event name or id that the wire format cannot carry (a line break; NUL in an id).
    KEEL_ERR_STREAM_SSE_FIELD = 851 => (Error::Stream(StreamError::InvalidSseField { .. }));
    /// An SSE line or event grew past the parser's `max_event_bytes`: it was dropped and the
    /// parser carries on at the next event.
    KEEL_ERR_STREAM_SSE_TOO_LARGE = 852 => (Error::Stream(StreamError::SseTooLarge { .. }));
    /// Bytes pushed into a segmenter are not UTF-8, or the stream ended inside a character.
    KEEL_ERR_STREAM_INVALID_UTF8 = 853 => (Error::Stream(StreamError::InvalidUtf8(_)));
    // Redis errors: 900..=929.

    /// Redis could not be reached or did not answer within `[redis] timeout` (down, restarting,
    /// loading). A rate limiter with `on_redis_error = "closed"` returns it; the message names
    /// the endpoint (host:port), never the password.
    KEEL_ERR_REDIS_UNAVAILABLE = 900 => (Error::Redis(RedisError::Unavailable { .. }));
    /// Redis answered a command with an error (a script error, a wrong type under a keel key).
    KEEL_ERR_REDIS_COMMAND = 901 => (Error::Redis(RedisError::Command { .. }));
    /// The Redis URL does not parse (the message masks the password).
    KEEL_ERR_REDIS_INVALID_URL = 902 => (Error::Redis(RedisError::InvalidUrl { .. }));

    // Store errors: 200..=249.

    /// SQLite reported an error (the message carries SQLite's code and text).
    KEEL_ERR_STORE_SQLITE = 200 => (Error::Store(StoreError::Sqlite { .. }));
    /// The database stayed locked by other connections or processes longer than keel waits
    /// (busy timeout plus retries). Nothing was written; the call may be retried.
    KEEL_ERR_STORE_BUSY = 201 => (Error::Store(StoreError::Busy { .. }));
    /// The database file could not be opened or is not a database.
    KEEL_ERR_STORE_OPEN = 202 => (Error::Store(StoreError::Open(_)));
    /// The schema could not be migrated to this version of keel.
    KEEL_ERR_STORE_MIGRATION = 203 => (Error::Store(StoreError::Migration(_)));
    /// No pooled connection could be obtained.
    KEEL_ERR_STORE_POOL = 204 => (Error::Store(StoreError::Pool(_)));

    // PostgreSQL store errors: 930..=959.

    /// The database server (PostgreSQL) could not be reached, or the connection was lost before
    /// the operation was known to commit. Nothing was acknowledged; retry later (the next call
    /// reconnects). The message names the URL without its password.
    KEEL_ERR_STORE_UNAVAILABLE = 930 => (Error::Store(StoreError::Unavailable { .. }));
    /// PostgreSQL reported an error (the message carries its SQLSTATE and primary message).
    KEEL_ERR_STORE_POSTGRES = 931 => (Error::Store(StoreError::Postgres { .. }));

    // Memory errors: 250..=299.

    /// No such session for this tenant and user.
    KEEL_ERR_MEMORY_SESSION_NOT_FOUND = 250 => (Error::Memory(MemoryError::SessionNotFound));
    /// A message's content is larger than the configured limit.
    KEEL_ERR_MEMORY_CONTENT_TOO_LARGE = 251
        => (Error::Memory(MemoryError::ContentTooLarge { .. }));
    /// Message metadata is not a JSON document, or is too large.
    KEEL_ERR_MEMORY_INVALID_METADATA = 252 => (Error::Memory(MemoryError::InvalidMetadata(_)));
    /// Stored memory failed its integrity check: a message or one of its clear columns (role,
    /// tokens, time, session) was altered, a message was deleted, or a session's owner, times or
    /// count were edited. Nothing is returned.
    KEEL_ERR_MEMORY_TAMPERED = 253 => (Error::Memory(MemoryError::Tampered { .. }));
    /// A token budget cannot hold the system prompt and the passages (the message names the
    /// budget and the tokens they take).
    KEEL_ERR_MEMORY_BUDGET_TOO_SMALL = 254
        => (Error::Memory(MemoryError::BudgetTooSmall { .. }));

    // Crypto errors: 300..=399.

    /// A ciphertext failed authentication: altered, moved to another row, or the key is wrong.
    KEEL_ERR_CRYPTO_DECRYPTION_FAILED = 300 => (Error::Crypto(CryptoError::DecryptionFailed));
    /// The data names a key id the keyring does not hold (retired or missing).
    KEEL_ERR_CRYPTO_UNKNOWN_KEY = 301 => (Error::Crypto(CryptoError::UnknownKey { .. }));
    /// A ciphertext is truncated or has an unknown format version.
    KEEL_ERR_CRYPTO_FORMAT = 302 => (Error::Crypto(CryptoError::Format(_)));
    /// Keyring material is malformed (encoding, key length, duplicate id, no key).
    KEEL_ERR_CRYPTO_INVALID_KEYRING = 303 => (Error::Crypto(CryptoError::InvalidKeyring(_)));
    /// The keyring source (environment variable, key file) is missing or unreadable.
    KEEL_ERR_CRYPTO_KEYRING_SOURCE = 304 => (Error::Crypto(CryptoError::KeyringSource(_)));
    /// A key cannot be retired while data is still encrypted under it.
    KEEL_ERR_CRYPTO_KEY_IN_USE = 305 => (Error::Crypto(CryptoError::KeyInUse { .. }));
    /// The system random number generator failed.
    KEEL_ERR_CRYPTO_RNG = 306 => (Error::Crypto(CryptoError::Rng));
    /// The audit log's chain does not verify: an entry was edited, deleted, inserted, reordered, or
    /// the log was truncated.
    KEEL_ERR_CRYPTO_AUDIT_TAMPERED = 307 => (Error::Crypto(CryptoError::AuditTampered { .. }));
    /// A key of the keyring differs from the key of the same id the database was written with
    /// (the wrong keyring); checked when a memory opens.
    KEEL_ERR_CRYPTO_KEY_MISMATCH = 308 => (Error::Crypto(CryptoError::KeyMismatch { .. }));

    // API-key errors: 400..=499.

    /// The string is not shaped like a keel API key.
    KEEL_ERR_AUTH_MALFORMED = 400 => (Error::Auth(AuthError::Malformed));
    /// The key's checksum does not match (a typo or a truncated copy).
    KEEL_ERR_AUTH_BAD_CHECKSUM = 401 => (Error::Auth(AuthError::BadChecksum));
    /// No such key.
    KEEL_ERR_AUTH_UNKNOWN_KEY = 402 => (Error::Auth(AuthError::UnknownKey));
    /// The key was revoked.
    KEEL_ERR_AUTH_REVOKED = 403 => (Error::Auth(AuthError::Revoked));
    /// The key (or its rotation grace period) has expired.
    KEEL_ERR_AUTH_EXPIRED = 404 => (Error::Auth(AuthError::Expired));
    /// The key lacks a required scope.
    KEEL_ERR_AUTH_MISSING_SCOPE = 405 => (Error::Auth(AuthError::MissingScope { .. }));
    /// An environment label is not 1-16 lowercase ASCII letters or digits.
    KEEL_ERR_AUTH_INVALID_ENV = 406 => (Error::Auth(AuthError::InvalidEnv));
    /// The key's stored record (tenant, scopes, expiry, revocation, rate limit...) fails its keyring
    /// MAC: the database was edited without the keyring. The key is refused.
    KEEL_ERR_AUTH_TAMPERED = 407 => (Error::Auth(AuthError::Tampered));
    /// The key's environment (`keel_<env>_...`) is not one the registry accepts; the message names
    /// it and the accepted ones.
    KEEL_ERR_AUTH_WRONG_ENVIRONMENT = 408 => (Error::Auth(AuthError::WrongEnvironment { .. }));
}

/// A failure on its way to C: the code to return and the message to record.
#[derive(Debug)]
pub(crate) struct FfiError {
    code: keel_result,
    message: Cow<'static, str>,
}

impl FfiError {
    pub(crate) fn new(code: keel_result, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn null_arg(name: &'static str) -> Self {
        Self::new(KEEL_ERR_NULL_ARG, format!("argument `{name}` is NULL"))
    }

    /// A miss is frequent and not a malfunction: its message is static, so it costs no allocation.
    pub(crate) fn not_found() -> Self {
        Self::new(KEEL_ERR_NOT_FOUND, "key not found")
    }

    /// Records the message for `keel_last_error_message` and returns the code.
    pub(crate) fn fail(self) -> keel_result {
        set_last_error(&self.message);
        self.code
    }
}

impl From<Error> for FfiError {
    fn from(err: Error) -> Self {
        Self::new(result_code(&err), err.to_string())
    }
}

/// Clears the thread's message and returns `KEEL_OK`.
pub(crate) fn succeed() -> keel_result {
    // try_with / try_borrow_mut: never panic, even during thread teardown.
    let _ = LAST_ERROR.try_with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut() {
            buf.clear();
        }
    });
    KEEL_OK
}

thread_local! {
    /// The message of the last failure on this thread: empty, or NUL-terminated text.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_last_error(message: &str) {
    let _ = LAST_ERROR.try_with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut() {
            buf.clear();
            // An interior NUL would silently truncate the C string.
            buf.extend(message.bytes().filter(|&b| b != 0));
            buf.push(0);
        }
    });
}

/// Describes the most recent failure on the calling thread, for logs and diagnostics (match on
/// the `keel_result`, not on this text).
///
/// Every function that returns a `keel_result` sets this message when it fails and clears it when
/// it succeeds; functions that return no `keel_result` (getters, `_free`, `keel_result_name`,
/// `keel_version`) leave it unchanged. The text never contains key or value bytes.
///
/// Returns: a UTF-8, NUL-terminated string owned by keel, never NULL; "" when the last call
/// succeeded or none failed yet. Do not free it. It stays valid until the next keel call on the
/// same thread: copy it to keep it.
///
/// Thread-safety: each thread has its own message; safe to call from any thread.
#[no_mangle]
pub extern "C" fn keel_last_error_message() -> *const c_char {
    ffi_guard!(or c"".as_ptr(), {
        LAST_ERROR
            .try_with(|buf| match buf.try_borrow() {
                Ok(buf) if !buf.is_empty() => buf.as_ptr().cast::<c_char>(),
                _ => c"".as_ptr(),
            })
            .unwrap_or(c"".as_ptr())
    })
}

/// The name of a result code, e.g. "KEEL_ERR_NOT_FOUND" for `KEEL_ERR_NOT_FOUND`.
///
/// Returns: a static NUL-terminated string, never NULL; do not free it. A value that is not a
/// known code (for example one from a newer keel) gives "KEEL_ERR_UNKNOWN".
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub extern "C" fn keel_result_name(result: keel_result) -> *const c_char {
    ffi_guard!(or c"KEEL_ERR_UNKNOWN".as_ptr(), { result_name(result).as_ptr() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(code: keel_result) -> String {
        // SAFETY: keel_result_name returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(keel_result_name(code)) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn every_cache_error_maps_to_its_code() {
        let cases = [
            (
                CacheError::ZeroCapacity {
                    field: "max_entries",
                },
                KEEL_ERR_CACHE_ZERO_CAPACITY,
            ),
            (
                CacheError::InvalidTtl("too long".into()),
                KEEL_ERR_CACHE_INVALID_TTL,
            ),
            (
                CacheError::EntryTooLarge { weight: 9, max: 8 },
                KEEL_ERR_CACHE_ENTRY_TOO_LARGE,
            ),
            (CacheError::RecursiveLoad, KEEL_ERR_CACHE_RECURSIVE_LOAD),
        ];
        for (err, code) in cases {
            assert_eq!(result_code(&Error::from(err.clone())), code, "{err:?}");
        }
    }

    #[test]
    fn invalid_argument_maps_to_the_general_code() {
        let err = Error::InvalidArgument("x".into());
        assert_eq!(result_code(&err), KEEL_ERR_INVALID_ARGUMENT);
        let ffi = FfiError::from(err);
        assert_eq!(ffi.code, KEEL_ERR_INVALID_ARGUMENT);
        assert_eq!(ffi.message, "invalid argument: x");
    }

    /// Every code, pinned: the numbers are ABI. This list may only grow (a new code is added
    /// here by hand, with its number); a code is never renumbered, reused or removed.
    const PINNED: &[(&str, keel_result)] = &[
        ("KEEL_OK", 0),
        ("KEEL_ERR_NULL_ARG", 1),
        ("KEEL_ERR_INVALID_ARGUMENT", 2),
        ("KEEL_ERR_INVALID_UTF8", 3),
        ("KEEL_ERR_NOT_FOUND", 4),
        ("KEEL_ERR_PANIC", 5),
        ("KEEL_ERR_CALLBACK", 6),
        ("KEEL_ERR_INTERNAL", 7),
        ("KEEL_ERR_BUFFER_TOO_SMALL", 8),
        ("KEEL_ERR_CACHE_ZERO_CAPACITY", 100),
        ("KEEL_ERR_CACHE_INVALID_TTL", 101),
        ("KEEL_ERR_CACHE_ENTRY_TOO_LARGE", 102),
        ("KEEL_ERR_CACHE_RECURSIVE_LOAD", 103),
        ("KEEL_ERR_RATELIMIT_INVALID_POLICY", 500),
        ("KEEL_ERR_RATELIMIT_INVALID_COST", 501),
        ("KEEL_ERR_RATELIMIT_SHARED_STATE", 502),
        ("KEEL_ERR_RATELIMIT_SHARED_BUSY", 503),
        ("KEEL_ERR_RAG_INVALID_CONFIG", 600),
        ("KEEL_ERR_RAG_DUPLICATE_DOCUMENT", 601),
        ("KEEL_ERR_RAG_INVALID_METADATA", 602),
        ("KEEL_ERR_RAG_IO", 603),
        ("KEEL_ERR_RAG_CORRUPT_INDEX", 604),
        ("KEEL_ERR_RAG_INVALID_DATA", 605),
        ("KEEL_ERR_RAG_SOURCE", 606),
        ("KEEL_ERR_RAG_CANCELLED", 607),
        ("KEEL_ERR_RAG_RUNTIME", 650),
        ("KEEL_ERR_RAG_MODEL", 651),
        ("KEEL_ERR_CONFIG_PARSE", 700),
        ("KEEL_ERR_CONFIG_INVALID", 701),
        ("KEEL_ERR_CONFIG_MISSING", 702),
        ("KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE", 703),
        ("KEEL_ERR_CONFIG_UNKNOWN_NAME", 704),
        ("KEEL_ERR_TELEMETRY_CONFIG", 800),
        ("KEEL_ERR_TELEMETRY_EXPORTER", 801),
        ("KEEL_ERR_TELEMETRY_SUBSCRIBER", 802),
        ("KEEL_ERR_STREAM_INVALID_OPTIONS", 850),
        ("KEEL_ERR_STREAM_SSE_FIELD", 851),
        ("KEEL_ERR_STREAM_SSE_TOO_LARGE", 852),
        ("KEEL_ERR_STREAM_INVALID_UTF8", 853),
        ("KEEL_ERR_REDIS_UNAVAILABLE", 900),
        ("KEEL_ERR_REDIS_COMMAND", 901),
        ("KEEL_ERR_REDIS_INVALID_URL", 902),
        ("KEEL_ERR_STORE_SQLITE", 200),
        ("KEEL_ERR_STORE_BUSY", 201),
        ("KEEL_ERR_STORE_OPEN", 202),
        ("KEEL_ERR_STORE_MIGRATION", 203),
        ("KEEL_ERR_STORE_POOL", 204),
        ("KEEL_ERR_STORE_UNAVAILABLE", 930),
        ("KEEL_ERR_STORE_POSTGRES", 931),
        ("KEEL_ERR_MEMORY_SESSION_NOT_FOUND", 250),
        ("KEEL_ERR_MEMORY_CONTENT_TOO_LARGE", 251),
        ("KEEL_ERR_MEMORY_INVALID_METADATA", 252),
        ("KEEL_ERR_MEMORY_TAMPERED", 253),
        ("KEEL_ERR_MEMORY_BUDGET_TOO_SMALL", 254),
        ("KEEL_ERR_CRYPTO_DECRYPTION_FAILED", 300),
        ("KEEL_ERR_CRYPTO_UNKNOWN_KEY", 301),
        ("KEEL_ERR_CRYPTO_FORMAT", 302),
        ("KEEL_ERR_CRYPTO_INVALID_KEYRING", 303),
        ("KEEL_ERR_CRYPTO_KEYRING_SOURCE", 304),
        ("KEEL_ERR_CRYPTO_KEY_IN_USE", 305),
        ("KEEL_ERR_CRYPTO_RNG", 306),
        ("KEEL_ERR_CRYPTO_AUDIT_TAMPERED", 307),
        ("KEEL_ERR_CRYPTO_KEY_MISMATCH", 308),
        ("KEEL_ERR_AUTH_MALFORMED", 400),
        ("KEEL_ERR_AUTH_BAD_CHECKSUM", 401),
        ("KEEL_ERR_AUTH_UNKNOWN_KEY", 402),
        ("KEEL_ERR_AUTH_REVOKED", 403),
        ("KEEL_ERR_AUTH_EXPIRED", 404),
        ("KEEL_ERR_AUTH_MISSING_SCOPE", 405),
        ("KEEL_ERR_AUTH_INVALID_ENV", 406),
        ("KEEL_ERR_AUTH_TAMPERED", 407),
        ("KEEL_ERR_AUTH_WRONG_ENVIRONMENT", 408),
    ];

    #[test]
    fn every_code_is_pinned_and_has_its_name() {
        let table: Vec<(&str, keel_result)> =
            RESULT_CODES.iter().map(|(n, v, _)| (*n, *v)).collect();
        assert_eq!(
            table, PINNED,
            "the result-code table differs from the pinned list"
        );
        let mut values: Vec<keel_result> = PINNED.iter().map(|(_, v)| *v).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), PINNED.len(), "two codes share a value");
        for (expected, value) in PINNED {
            assert_eq!(name(*value), *expected);
        }
        for (_, _, doc) in RESULT_CODES {
            assert!(!doc.is_empty(), "every code is documented in the header");
        }
    }

    #[test]
    fn every_auth_and_ratelimit_error_maps_to_its_code() {
        let cases: Vec<(Error, keel_result)> = vec![
            (AuthError::Malformed.into(), 400),
            (AuthError::BadChecksum.into(), 401),
            (AuthError::UnknownKey.into(), 402),
            (AuthError::Revoked.into(), 403),
            (AuthError::Expired.into(), 404),
            (
                AuthError::MissingScope {
                    scope: "admin".into(),
                }
                .into(),
                405,
            ),
            (AuthError::InvalidEnv.into(), 406),
            (AuthError::Tampered.into(), 407),
            (
                AuthError::WrongEnvironment {
                    env: "test".into(),
                    accepted: vec!["live".into()],
                }
                .into(),
                408,
            ),
            (RateLimitError::InvalidPolicy("x".into()).into(), 500),
            (
                RateLimitError::InvalidCost {
                    cost: 0,
                    limit: 1,
                    policy: "p".into(),
                }
                .into(),
                501,
            ),
            (RateLimitError::Shared("x".into()).into(), 502),
            (
                RateLimitError::SharedBusy {
                    path: "/x".into(),
                    waited_ms: 1,
                    holder_pid: 2,
                }
                .into(),
                503,
            ),
            (
                CryptoError::AuditTampered { seq: 3 }.into(),
                KEEL_ERR_CRYPTO_AUDIT_TAMPERED,
            ),
            (
                RedisError::Unavailable {
                    endpoint: "h:1".into(),
                    reason: "x".into(),
                }
                .into(),
                900,
            ),
            (
                RedisError::Command {
                    endpoint: "h:1".into(),
                    reason: "x".into(),
                }
                .into(),
                901,
            ),
            (
                RedisError::InvalidUrl {
                    url: "u".into(),
                    reason: "x".into(),
                }
                .into(),
                902,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(result_code(&err), code, "{err:?}");
        }
    }

    #[test]
    fn unknown_codes_have_a_fallback_name() {
        for code in [-1, 98, 99, 104, 205, 259, 399, 499, 699, i32::MIN, i32::MAX] {
            assert_eq!(name(code), "KEEL_ERR_UNKNOWN", "code {code}");
        }
    }

    #[test]
    fn messages_drop_interior_nuls() {
        assert_eq!(FfiError::new(KEEL_ERR_INTERNAL, "a\0b").fail(), 7);
        // SAFETY: never NULL, NUL-terminated.
        let msg = unsafe { CStr::from_ptr(keel_last_error_message()) };
        assert_eq!(msg.to_str().unwrap(), "ab");
    }

    #[test]
    fn every_store_memory_and_crypto_error_maps_to_its_code_and_name() {
        let cases: [(Error, keel_result, &str); 22] = [
            (
                StoreError::Unavailable {
                    location: "postgres://db/x".into(),
                    reason: "x".into(),
                }
                .into(),
                930,
                "KEEL_ERR_STORE_UNAVAILABLE",
            ),
            (
                StoreError::Postgres {
                    code: "XX000".into(),
                    message: "x".into(),
                }
                .into(),
                931,
                "KEEL_ERR_STORE_POSTGRES",
            ),
            (
                StoreError::Sqlite {
                    code: 1,
                    message: "x".into(),
                }
                .into(),
                200,
                "KEEL_ERR_STORE_SQLITE",
            ),
            (
                StoreError::Busy { waited_ms: 1 }.into(),
                201,
                "KEEL_ERR_STORE_BUSY",
            ),
            (
                StoreError::Open("x".into()).into(),
                202,
                "KEEL_ERR_STORE_OPEN",
            ),
            (
                StoreError::Migration("x".into()).into(),
                203,
                "KEEL_ERR_STORE_MIGRATION",
            ),
            (
                StoreError::Pool("x".into()).into(),
                204,
                "KEEL_ERR_STORE_POOL",
            ),
            (
                MemoryError::SessionNotFound.into(),
                250,
                "KEEL_ERR_MEMORY_SESSION_NOT_FOUND",
            ),
            (
                MemoryError::ContentTooLarge { size: 2, max: 1 }.into(),
                251,
                "KEEL_ERR_MEMORY_CONTENT_TOO_LARGE",
            ),
            (
                MemoryError::InvalidMetadata("x".into()).into(),
                252,
                "KEEL_ERR_MEMORY_INVALID_METADATA",
            ),
            (
                MemoryError::BudgetTooSmall {
                    budget: 1,
                    needed: 2,
                }
                .into(),
                254,
                "KEEL_ERR_MEMORY_BUDGET_TOO_SMALL",
            ),
            (
                RagError::Source {
                    path: "p".into(),
                    reason: "r".into(),
                }
                .into(),
                606,
                "KEEL_ERR_RAG_SOURCE",
            ),
            (
                RagError::Cancelled { done: 1, total: 2 }.into(),
                607,
                "KEEL_ERR_RAG_CANCELLED",
            ),
            (
                CryptoError::DecryptionFailed.into(),
                300,
                "KEEL_ERR_CRYPTO_DECRYPTION_FAILED",
            ),
            (
                CryptoError::UnknownKey { key_id: 1 }.into(),
                301,
                "KEEL_ERR_CRYPTO_UNKNOWN_KEY",
            ),
            (
                CryptoError::Format("x".into()).into(),
                302,
                "KEEL_ERR_CRYPTO_FORMAT",
            ),
            (
                CryptoError::InvalidKeyring("x".into()).into(),
                303,
                "KEEL_ERR_CRYPTO_INVALID_KEYRING",
            ),
            (
                CryptoError::KeyringSource("x".into()).into(),
                304,
                "KEEL_ERR_CRYPTO_KEYRING_SOURCE",
            ),
            (
                CryptoError::KeyInUse { key_id: 1, rows: 2 }.into(),
                305,
                "KEEL_ERR_CRYPTO_KEY_IN_USE",
            ),
            (CryptoError::Rng.into(), 306, "KEEL_ERR_CRYPTO_RNG"),
            (
                MemoryError::Tampered {
                    message_id: Some(3),
                    reason: "x".into(),
                }
                .into(),
                253,
                "KEEL_ERR_MEMORY_TAMPERED",
            ),
            (
                CryptoError::KeyMismatch { key_id: 1 }.into(),
                308,
                "KEEL_ERR_CRYPTO_KEY_MISMATCH",
            ),
        ];
        for (err, number, expected) in cases {
            assert_eq!(result_code(&err), number, "{err:?}");
            assert_eq!(name(number), expected);
        }
    }
}
