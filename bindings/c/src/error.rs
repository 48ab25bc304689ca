//! Result codes, the one mapping from `keel_core::Error` to them, and the per-thread message.
//!
//! Codes are ABI: `KEEL_OK` is 0 forever, each area owns a range of 100, and a code is never
//! renumbered or reused (a retired code stays here as a comment). `keel_result` is a plain
//! `int32_t`, not a C enum, so that any value a C caller hands back (to `keel_result_name`) is
//! well defined on the Rust side; unknown values take a fallback instead of being transmuted.
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
    StoreError,
};

use crate::panic::ffi_guard;

/// The status every fallible keel function returns: `KEEL_OK` (0) or one of the `KEEL_ERR_*`
/// codes below. Codes are stable: never renumbered, never reused.
pub type keel_result = i32;

/// Success.
pub const KEEL_OK: keel_result = 0;

// General errors: 1..=99.

/// A required pointer argument was NULL.
pub const KEEL_ERR_NULL_ARG: keel_result = 1;
/// An argument was outside its accepted range or malformed.
pub const KEEL_ERR_INVALID_ARGUMENT: keel_result = 2;
/// A string argument was not valid UTF-8.
pub const KEEL_ERR_INVALID_UTF8: keel_result = 3;
/// The requested item does not exist (e.g. a cache miss). Not a malfunction.
pub const KEEL_ERR_NOT_FOUND: keel_result = 4;
/// A bug in keel: a Rust panic was caught before it could reach C. The handle is still usable.
pub const KEEL_ERR_PANIC: keel_result = 5;
/// A callback supplied by the caller reported failure (returned non-zero).
pub const KEEL_ERR_CALLBACK: keel_result = 6;
/// An unexpected internal failure (an error this version of the C binding has no code for).
pub const KEEL_ERR_INTERNAL: keel_result = 7;
/// A caller-supplied output buffer is too small; the message says how large it must be.
pub const KEEL_ERR_BUFFER_TOO_SMALL: keel_result = 8;

// Cache errors: 100..=199.

/// `max_entries` was 0.
pub const KEEL_ERR_CACHE_ZERO_CAPACITY: keel_result = 100;
/// A TTL was too large (more than 100 years).
pub const KEEL_ERR_CACHE_INVALID_TTL: keel_result = 101;
/// One entry (key + value bytes) weighs more than the cache can hold.
pub const KEEL_ERR_CACHE_ENTRY_TOO_LARGE: keel_result = 102;
/// `keel_cache_get_or_insert` was called, from inside its own compute callback, for the key that
/// callback is computing; waiting for itself would deadlock.
pub const KEEL_ERR_CACHE_RECURSIVE_LOAD: keel_result = 103;

// Rate-limiting errors: 500..=599.

/// A rate-limit policy is unusable: bad name, zero limit, window outside 1 ms .. one year.
pub const KEEL_ERR_RATELIMIT_INVALID_POLICY: keel_result = 500;
/// A request's cost is 0 or above the policy's limit, so it could never be allowed.
pub const KEEL_ERR_RATELIMIT_INVALID_COST: keel_result = 501;
/// The host-shared state file could not be opened or mapped, or has other settings.
pub const KEEL_ERR_RATELIMIT_SHARED_STATE: keel_result = 502;
/// A host-shared decision waited longer than the bound (2 s) for a stripe lock that other
/// processes keep taking; retry later. (A lock left by a dead process is taken over after its
/// 500 ms lease, so this is not the crash case.)
pub const KEEL_ERR_RATELIMIT_SHARED_BUSY: keel_result = 503;

// Retrieval (rag) errors: 600..=699.

/// A retrieval setting is out of range: chunk size 0, overlap not below the size, k1 < 0,
/// b outside [0, 1], an unknown analyzer language.
pub const KEEL_ERR_RAG_INVALID_CONFIG: keel_result = 600;
/// A document with this id is already indexed (use the update function to replace it).
pub const KEEL_ERR_RAG_DUPLICATE_DOCUMENT: keel_result = 601;
/// Metadata is not a JSON object, or a filter is malformed.
pub const KEEL_ERR_RAG_INVALID_METADATA: keel_result = 602;
/// Reading or writing an index file failed.
pub const KEEL_ERR_RAG_IO: keel_result = 603;
/// An index file is damaged, not a keel index, or of an unsupported format version.
pub const KEEL_ERR_RAG_CORRUPT_INDEX: keel_result = 604;
/// An evaluation data set could not be read.
pub const KEEL_ERR_RAG_INVALID_DATA: keel_result = 605;
/// ONNX Runtime could not be found or started (the message says how to install it:
/// `pip install "onnxruntime>=1.31,<2"` or set `ORT_DYLIB_PATH`).
pub const KEEL_ERR_RAG_RUNTIME: keel_result = 650;
/// A model directory is missing, incomplete or malformed (model.onnx, tokenizer.json), or
/// inference failed.
pub const KEEL_ERR_RAG_MODEL: keel_result = 651;

// Engine configuration errors: 700..=719.

/// The configuration could not be read or parsed: an unreadable file, a TOML syntax error, an
/// unknown field (a typo) or a value of the wrong type; the message names the field and where
/// it came from (the file or the `KEEL_*` variable).
pub const KEEL_ERR_CONFIG_PARSE: keel_result = 700;
/// A configuration field has a value it does not accept; the message names the field and value.
pub const KEEL_ERR_CONFIG_INVALID: keel_result = 701;
/// A required configuration field is not set (e.g. `database.url`), or an accessor needs one
/// that is not configured.
pub const KEEL_ERR_CONFIG_MISSING: keel_result = 702;
/// The database URL names a backend this build does not have (`redis://`, `postgres://`: not
/// yet implemented); the message names the scheme, never the rest of the URL.
pub const KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE: keel_result = 703;
/// No rate limiter or cache of that name is configured; the message lists the configured ones.
pub const KEEL_ERR_CONFIG_UNKNOWN_NAME: keel_result = 704;

// Reserved ranges, one per area: 200..=299 store and memory, 300..=399 crypto, 400..=499 auth,
// 500..=599 ratelimit, 600..=699 rag, 700..=719 engine configuration.

// Store errors: 200..=249.

/// SQLite reported an error (the message carries SQLite's code and text).
pub const KEEL_ERR_STORE_SQLITE: keel_result = 200;
/// The database stayed locked by other connections or processes longer than keel waits
/// (busy timeout plus retries). Nothing was written; the call may be retried.
pub const KEEL_ERR_STORE_BUSY: keel_result = 201;
/// The database file could not be opened or is not a database.
pub const KEEL_ERR_STORE_OPEN: keel_result = 202;
/// The schema could not be migrated to this version of keel.
pub const KEEL_ERR_STORE_MIGRATION: keel_result = 203;
/// No pooled connection could be obtained.
pub const KEEL_ERR_STORE_POOL: keel_result = 204;

// Memory errors: 250..=299.

/// No such session for this tenant and user.
pub const KEEL_ERR_MEMORY_SESSION_NOT_FOUND: keel_result = 250;
/// A message's content is larger than the configured limit.
pub const KEEL_ERR_MEMORY_CONTENT_TOO_LARGE: keel_result = 251;
/// Message metadata is not a JSON document, or is too large.
pub const KEEL_ERR_MEMORY_INVALID_METADATA: keel_result = 252;
/// Stored memory failed its integrity check: a message or one of its clear columns (role,
/// tokens, time, session) was altered, a message was deleted, or a session's owner, times or
/// count were edited. Nothing is returned.
pub const KEEL_ERR_MEMORY_TAMPERED: keel_result = 253;

// Crypto errors: 300..=399.

/// A ciphertext failed authentication: altered, moved to another row, or the key is wrong.
pub const KEEL_ERR_CRYPTO_DECRYPTION_FAILED: keel_result = 300;
/// The data names a key id the keyring does not hold (retired or missing).
pub const KEEL_ERR_CRYPTO_UNKNOWN_KEY: keel_result = 301;
/// A ciphertext is truncated or has an unknown format version.
pub const KEEL_ERR_CRYPTO_FORMAT: keel_result = 302;
/// Keyring material is malformed (encoding, key length, duplicate id, no key).
pub const KEEL_ERR_CRYPTO_INVALID_KEYRING: keel_result = 303;
/// The keyring source (environment variable, key file) is missing or unreadable.
pub const KEEL_ERR_CRYPTO_KEYRING_SOURCE: keel_result = 304;
/// A key cannot be retired while data is still encrypted under it.
pub const KEEL_ERR_CRYPTO_KEY_IN_USE: keel_result = 305;
/// The system random number generator failed.
pub const KEEL_ERR_CRYPTO_RNG: keel_result = 306;
/// The audit log's chain does not verify: an entry was edited, deleted, inserted, reordered, or
/// the log was truncated.
pub const KEEL_ERR_CRYPTO_AUDIT_TAMPERED: keel_result = 307;
/// A key of the keyring differs from the key of the same id the database was written with
/// (the wrong keyring); checked when a memory opens.
pub const KEEL_ERR_CRYPTO_KEY_MISMATCH: keel_result = 308;

// API-key errors: 400..=499.

/// The string is not shaped like a keel API key.
pub const KEEL_ERR_AUTH_MALFORMED: keel_result = 400;
/// The key's checksum does not match (a typo or a truncated copy).
pub const KEEL_ERR_AUTH_BAD_CHECKSUM: keel_result = 401;
/// No such key.
pub const KEEL_ERR_AUTH_UNKNOWN_KEY: keel_result = 402;
/// The key was revoked.
pub const KEEL_ERR_AUTH_REVOKED: keel_result = 403;
/// The key (or its rotation grace period) has expired.
pub const KEEL_ERR_AUTH_EXPIRED: keel_result = 404;
/// The key lacks a required scope.
pub const KEEL_ERR_AUTH_MISSING_SCOPE: keel_result = 405;
/// An environment label is not 1-16 lowercase ASCII letters or digits.
pub const KEEL_ERR_AUTH_INVALID_ENV: keel_result = 406;
/// The key's stored record (tenant, scopes, expiry, revocation, rate limit...) fails its keyring
/// MAC: the database was edited without the keyring. The key is refused.
pub const KEEL_ERR_AUTH_TAMPERED: keel_result = 407;
/// The key's environment (`keel_<env>_...`) is not one the registry accepts; the message names
/// it and the accepted ones.
pub const KEEL_ERR_AUTH_WRONG_ENVIRONMENT: keel_result = 408;

/// The code for a core error. The one place where `keel_core::Error` meets `keel_result`.
pub(crate) fn result_code(err: &Error) -> keel_result {
    match err {
        Error::InvalidArgument(_) => KEEL_ERR_INVALID_ARGUMENT,
        Error::Cache(e) => match e {
            CacheError::ZeroCapacity { .. } => KEEL_ERR_CACHE_ZERO_CAPACITY,
            CacheError::InvalidTtl(_) => KEEL_ERR_CACHE_INVALID_TTL,
            CacheError::EntryTooLarge { .. } => KEEL_ERR_CACHE_ENTRY_TOO_LARGE,
            CacheError::RecursiveLoad => KEEL_ERR_CACHE_RECURSIVE_LOAD,
            // Both enums are #[non_exhaustive]: a variant added to the core before it has a code
            // here still reaches C as a failure, with its message.
            _ => KEEL_ERR_INTERNAL,
        },
        Error::RateLimit(e) => match e {
            RateLimitError::InvalidPolicy(_) => KEEL_ERR_RATELIMIT_INVALID_POLICY,
            RateLimitError::InvalidCost { .. } => KEEL_ERR_RATELIMIT_INVALID_COST,
            RateLimitError::Shared(_) => KEEL_ERR_RATELIMIT_SHARED_STATE,
            RateLimitError::SharedBusy { .. } => KEEL_ERR_RATELIMIT_SHARED_BUSY,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Rag(e) => match e {
            RagError::InvalidConfig(_) => KEEL_ERR_RAG_INVALID_CONFIG,
            RagError::DuplicateDocument => KEEL_ERR_RAG_DUPLICATE_DOCUMENT,
            RagError::InvalidMetadata(_) => KEEL_ERR_RAG_INVALID_METADATA,
            RagError::Io(_) => KEEL_ERR_RAG_IO,
            RagError::CorruptIndex(_) => KEEL_ERR_RAG_CORRUPT_INDEX,
            RagError::InvalidData(_) => KEEL_ERR_RAG_INVALID_DATA,
            RagError::Runtime(_) => KEEL_ERR_RAG_RUNTIME,
            RagError::Model(_) => KEEL_ERR_RAG_MODEL,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Store(e) => match e {
            StoreError::Sqlite { .. } => KEEL_ERR_STORE_SQLITE,
            StoreError::Busy { .. } => KEEL_ERR_STORE_BUSY,
            StoreError::Open(_) => KEEL_ERR_STORE_OPEN,
            StoreError::Migration(_) => KEEL_ERR_STORE_MIGRATION,
            StoreError::Pool(_) => KEEL_ERR_STORE_POOL,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Memory(e) => match e {
            MemoryError::SessionNotFound => KEEL_ERR_MEMORY_SESSION_NOT_FOUND,
            MemoryError::ContentTooLarge { .. } => KEEL_ERR_MEMORY_CONTENT_TOO_LARGE,
            MemoryError::InvalidMetadata(_) => KEEL_ERR_MEMORY_INVALID_METADATA,
            MemoryError::Tampered { .. } => KEEL_ERR_MEMORY_TAMPERED,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Crypto(e) => match e {
            CryptoError::DecryptionFailed => KEEL_ERR_CRYPTO_DECRYPTION_FAILED,
            CryptoError::UnknownKey { .. } => KEEL_ERR_CRYPTO_UNKNOWN_KEY,
            CryptoError::Format(_) => KEEL_ERR_CRYPTO_FORMAT,
            CryptoError::InvalidKeyring(_) => KEEL_ERR_CRYPTO_INVALID_KEYRING,
            CryptoError::KeyringSource(_) => KEEL_ERR_CRYPTO_KEYRING_SOURCE,
            CryptoError::KeyInUse { .. } => KEEL_ERR_CRYPTO_KEY_IN_USE,
            CryptoError::Rng => KEEL_ERR_CRYPTO_RNG,
            CryptoError::AuditTampered { .. } => KEEL_ERR_CRYPTO_AUDIT_TAMPERED,
            CryptoError::KeyMismatch { .. } => KEEL_ERR_CRYPTO_KEY_MISMATCH,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Auth(e) => match e {
            AuthError::Malformed => KEEL_ERR_AUTH_MALFORMED,
            AuthError::BadChecksum => KEEL_ERR_AUTH_BAD_CHECKSUM,
            AuthError::UnknownKey => KEEL_ERR_AUTH_UNKNOWN_KEY,
            AuthError::Revoked => KEEL_ERR_AUTH_REVOKED,
            AuthError::Expired => KEEL_ERR_AUTH_EXPIRED,
            AuthError::MissingScope { .. } => KEEL_ERR_AUTH_MISSING_SCOPE,
            AuthError::InvalidEnv => KEEL_ERR_AUTH_INVALID_ENV,
            AuthError::Tampered => KEEL_ERR_AUTH_TAMPERED,
            AuthError::WrongEnvironment { .. } => KEEL_ERR_AUTH_WRONG_ENVIRONMENT,
            _ => KEEL_ERR_INTERNAL,
        },
        Error::Config(e) => match e {
            ConfigError::Parse(_) => KEEL_ERR_CONFIG_PARSE,
            ConfigError::Invalid { .. } => KEEL_ERR_CONFIG_INVALID,
            ConfigError::Missing { .. } => KEEL_ERR_CONFIG_MISSING,
            ConfigError::BackendUnavailable { .. } => KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE,
            ConfigError::UnknownName { .. } => KEEL_ERR_CONFIG_UNKNOWN_NAME,
            _ => KEEL_ERR_INTERNAL,
        },
        _ => KEEL_ERR_INTERNAL,
    }
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

fn result_name(result: keel_result) -> &'static CStr {
    match result {
        KEEL_OK => c"KEEL_OK",
        KEEL_ERR_NULL_ARG => c"KEEL_ERR_NULL_ARG",
        KEEL_ERR_INVALID_ARGUMENT => c"KEEL_ERR_INVALID_ARGUMENT",
        KEEL_ERR_INVALID_UTF8 => c"KEEL_ERR_INVALID_UTF8",
        KEEL_ERR_NOT_FOUND => c"KEEL_ERR_NOT_FOUND",
        KEEL_ERR_PANIC => c"KEEL_ERR_PANIC",
        KEEL_ERR_CALLBACK => c"KEEL_ERR_CALLBACK",
        KEEL_ERR_INTERNAL => c"KEEL_ERR_INTERNAL",
        KEEL_ERR_BUFFER_TOO_SMALL => c"KEEL_ERR_BUFFER_TOO_SMALL",
        KEEL_ERR_RATELIMIT_INVALID_POLICY => c"KEEL_ERR_RATELIMIT_INVALID_POLICY",
        KEEL_ERR_RATELIMIT_INVALID_COST => c"KEEL_ERR_RATELIMIT_INVALID_COST",
        KEEL_ERR_RATELIMIT_SHARED_STATE => c"KEEL_ERR_RATELIMIT_SHARED_STATE",
        KEEL_ERR_RATELIMIT_SHARED_BUSY => c"KEEL_ERR_RATELIMIT_SHARED_BUSY",
        KEEL_ERR_RAG_INVALID_CONFIG => c"KEEL_ERR_RAG_INVALID_CONFIG",
        KEEL_ERR_RAG_DUPLICATE_DOCUMENT => c"KEEL_ERR_RAG_DUPLICATE_DOCUMENT",
        KEEL_ERR_RAG_INVALID_METADATA => c"KEEL_ERR_RAG_INVALID_METADATA",
        KEEL_ERR_RAG_IO => c"KEEL_ERR_RAG_IO",
        KEEL_ERR_RAG_CORRUPT_INDEX => c"KEEL_ERR_RAG_CORRUPT_INDEX",
        KEEL_ERR_RAG_INVALID_DATA => c"KEEL_ERR_RAG_INVALID_DATA",
        KEEL_ERR_RAG_RUNTIME => c"KEEL_ERR_RAG_RUNTIME",
        KEEL_ERR_RAG_MODEL => c"KEEL_ERR_RAG_MODEL",
        KEEL_ERR_CONFIG_PARSE => c"KEEL_ERR_CONFIG_PARSE",
        KEEL_ERR_CONFIG_INVALID => c"KEEL_ERR_CONFIG_INVALID",
        KEEL_ERR_CONFIG_MISSING => c"KEEL_ERR_CONFIG_MISSING",
        KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE => c"KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE",
        KEEL_ERR_CONFIG_UNKNOWN_NAME => c"KEEL_ERR_CONFIG_UNKNOWN_NAME",
        KEEL_ERR_CACHE_ZERO_CAPACITY => c"KEEL_ERR_CACHE_ZERO_CAPACITY",
        KEEL_ERR_CACHE_INVALID_TTL => c"KEEL_ERR_CACHE_INVALID_TTL",
        KEEL_ERR_CACHE_ENTRY_TOO_LARGE => c"KEEL_ERR_CACHE_ENTRY_TOO_LARGE",
        KEEL_ERR_CACHE_RECURSIVE_LOAD => c"KEEL_ERR_CACHE_RECURSIVE_LOAD",
        KEEL_ERR_STORE_SQLITE => c"KEEL_ERR_STORE_SQLITE",
        KEEL_ERR_STORE_BUSY => c"KEEL_ERR_STORE_BUSY",
        KEEL_ERR_STORE_OPEN => c"KEEL_ERR_STORE_OPEN",
        KEEL_ERR_STORE_MIGRATION => c"KEEL_ERR_STORE_MIGRATION",
        KEEL_ERR_STORE_POOL => c"KEEL_ERR_STORE_POOL",
        KEEL_ERR_MEMORY_SESSION_NOT_FOUND => c"KEEL_ERR_MEMORY_SESSION_NOT_FOUND",
        KEEL_ERR_MEMORY_CONTENT_TOO_LARGE => c"KEEL_ERR_MEMORY_CONTENT_TOO_LARGE",
        KEEL_ERR_MEMORY_INVALID_METADATA => c"KEEL_ERR_MEMORY_INVALID_METADATA",
        KEEL_ERR_MEMORY_TAMPERED => c"KEEL_ERR_MEMORY_TAMPERED",
        KEEL_ERR_CRYPTO_KEY_MISMATCH => c"KEEL_ERR_CRYPTO_KEY_MISMATCH",
        KEEL_ERR_CRYPTO_DECRYPTION_FAILED => c"KEEL_ERR_CRYPTO_DECRYPTION_FAILED",
        KEEL_ERR_CRYPTO_UNKNOWN_KEY => c"KEEL_ERR_CRYPTO_UNKNOWN_KEY",
        KEEL_ERR_CRYPTO_FORMAT => c"KEEL_ERR_CRYPTO_FORMAT",
        KEEL_ERR_CRYPTO_AUDIT_TAMPERED => c"KEEL_ERR_CRYPTO_AUDIT_TAMPERED",
        KEEL_ERR_AUTH_MALFORMED => c"KEEL_ERR_AUTH_MALFORMED",
        KEEL_ERR_AUTH_BAD_CHECKSUM => c"KEEL_ERR_AUTH_BAD_CHECKSUM",
        KEEL_ERR_AUTH_UNKNOWN_KEY => c"KEEL_ERR_AUTH_UNKNOWN_KEY",
        KEEL_ERR_AUTH_REVOKED => c"KEEL_ERR_AUTH_REVOKED",
        KEEL_ERR_AUTH_EXPIRED => c"KEEL_ERR_AUTH_EXPIRED",
        KEEL_ERR_AUTH_MISSING_SCOPE => c"KEEL_ERR_AUTH_MISSING_SCOPE",
        KEEL_ERR_AUTH_INVALID_ENV => c"KEEL_ERR_AUTH_INVALID_ENV",
        KEEL_ERR_CRYPTO_INVALID_KEYRING => c"KEEL_ERR_CRYPTO_INVALID_KEYRING",
        KEEL_ERR_CRYPTO_KEYRING_SOURCE => c"KEEL_ERR_CRYPTO_KEYRING_SOURCE",
        KEEL_ERR_CRYPTO_KEY_IN_USE => c"KEEL_ERR_CRYPTO_KEY_IN_USE",
        KEEL_ERR_CRYPTO_RNG => c"KEEL_ERR_CRYPTO_RNG",
        _ => c"KEEL_ERR_UNKNOWN",
    }
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

    #[test]
    fn codes_are_stable_and_each_has_its_name() {
        // The numbers are ABI: this table may only grow.
        let table = [
            (KEEL_OK, 0, "KEEL_OK"),
            (KEEL_ERR_NULL_ARG, 1, "KEEL_ERR_NULL_ARG"),
            (KEEL_ERR_INVALID_ARGUMENT, 2, "KEEL_ERR_INVALID_ARGUMENT"),
            (KEEL_ERR_INVALID_UTF8, 3, "KEEL_ERR_INVALID_UTF8"),
            (KEEL_ERR_NOT_FOUND, 4, "KEEL_ERR_NOT_FOUND"),
            (KEEL_ERR_PANIC, 5, "KEEL_ERR_PANIC"),
            (KEEL_ERR_CALLBACK, 6, "KEEL_ERR_CALLBACK"),
            (KEEL_ERR_INTERNAL, 7, "KEEL_ERR_INTERNAL"),
            (KEEL_ERR_BUFFER_TOO_SMALL, 8, "KEEL_ERR_BUFFER_TOO_SMALL"),
            (
                KEEL_ERR_RATELIMIT_INVALID_POLICY,
                500,
                "KEEL_ERR_RATELIMIT_INVALID_POLICY",
            ),
            (
                KEEL_ERR_RATELIMIT_INVALID_COST,
                501,
                "KEEL_ERR_RATELIMIT_INVALID_COST",
            ),
            (
                KEEL_ERR_RATELIMIT_SHARED_BUSY,
                503,
                "KEEL_ERR_RATELIMIT_SHARED_BUSY",
            ),
            (
                KEEL_ERR_RAG_INVALID_CONFIG,
                600,
                "KEEL_ERR_RAG_INVALID_CONFIG",
            ),
            (
                KEEL_ERR_RAG_DUPLICATE_DOCUMENT,
                601,
                "KEEL_ERR_RAG_DUPLICATE_DOCUMENT",
            ),
            (
                KEEL_ERR_RAG_INVALID_METADATA,
                602,
                "KEEL_ERR_RAG_INVALID_METADATA",
            ),
            (KEEL_ERR_RAG_IO, 603, "KEEL_ERR_RAG_IO"),
            (
                KEEL_ERR_RAG_CORRUPT_INDEX,
                604,
                "KEEL_ERR_RAG_CORRUPT_INDEX",
            ),
            (KEEL_ERR_RAG_INVALID_DATA, 605, "KEEL_ERR_RAG_INVALID_DATA"),
            (KEEL_ERR_RAG_RUNTIME, 650, "KEEL_ERR_RAG_RUNTIME"),
            (KEEL_ERR_RAG_MODEL, 651, "KEEL_ERR_RAG_MODEL"),
            (KEEL_ERR_CONFIG_PARSE, 700, "KEEL_ERR_CONFIG_PARSE"),
            (KEEL_ERR_CONFIG_INVALID, 701, "KEEL_ERR_CONFIG_INVALID"),
            (KEEL_ERR_CONFIG_MISSING, 702, "KEEL_ERR_CONFIG_MISSING"),
            (
                KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE,
                703,
                "KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE",
            ),
            (
                KEEL_ERR_CONFIG_UNKNOWN_NAME,
                704,
                "KEEL_ERR_CONFIG_UNKNOWN_NAME",
            ),
            (
                KEEL_ERR_CACHE_ZERO_CAPACITY,
                100,
                "KEEL_ERR_CACHE_ZERO_CAPACITY",
            ),
            (
                KEEL_ERR_CACHE_INVALID_TTL,
                101,
                "KEEL_ERR_CACHE_INVALID_TTL",
            ),
            (
                KEEL_ERR_CACHE_ENTRY_TOO_LARGE,
                102,
                "KEEL_ERR_CACHE_ENTRY_TOO_LARGE",
            ),
            (
                KEEL_ERR_CACHE_RECURSIVE_LOAD,
                103,
                "KEEL_ERR_CACHE_RECURSIVE_LOAD",
            ),
        ];
        for (code, number, expected) in table {
            assert_eq!(code, number, "{expected} was renumbered");
            assert_eq!(name(code), expected);
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
        let cases: [(Error, keel_result, &str); 17] = [
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
