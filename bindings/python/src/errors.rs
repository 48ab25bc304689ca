//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes are defined in Python (`keel/_exceptions.py`) so that they can subclass
//! both `keel.KeelError` and the built-in that fits (e.g. `ValueError`); they are looked up once and
//! cached. Errors a caller acts on carry their data as attributes (`AuditTampered.seq`,
//! `StoreBusy.waited` in seconds, `KeyInUseError.key_id`...): [`to_py`] lists, per core variant,
//! the class and the attributes, and the classes declare the same attributes (default `None`).

use keel::{
    AuthError, CacheError, CryptoError, Error, MemoryError, RagError, RateLimitError, StoreError,
    StreamError,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;
use pyo3::IntoPyObjectExt as _;

fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();
    let module = MODULE.get_or_try_init(py, || py.import("keel._exceptions").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.downcast_into::<PyType>()?)
}

/// Milliseconds as seconds, the unit of every duration in the Python door.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// An instance of `keel.<name>(message)` with `attrs` set on it.
fn build(py: Python<'_>, name: &'static str, msg: String, attrs: Attrs<'_>) -> PyResult<PyErr> {
    let exc = class(py, name)?.call1((msg,))?;
    for (key, value) in attrs {
        exc.setattr(key, value)?;
    }
    Ok(PyErr::from_value(exc))
}

type Attrs<'py> = Vec<(&'static str, Bound<'py, PyAny>)>;

/// The exception class and attributes for a core error: the one place where `keel::Error`
/// meets Python.
fn describe<'py>(py: Python<'py>, err: &Error) -> PyResult<(&'static str, Attrs<'py>)> {
    macro_rules! attrs {
        ($($key:literal => $value:expr),* $(,)?) => {
            vec![$(($key, $value.into_bound_py_any(py)?)),*]
        };
    }
    Ok(match err {
        Error::InvalidArgument(_) => ("InvalidArgument", attrs![]),
        Error::Cache(e) => match e {
            CacheError::RecursiveLoad => ("RecursiveLoadError", attrs![]),
            CacheError::ZeroCapacity { field } => ("CacheConfigError", attrs!["field" => *field]),
            CacheError::EntryTooLarge { weight, max } => (
                "CacheConfigError",
                attrs!["weight" => *weight, "max" => *max],
            ),
            _ => ("CacheConfigError", attrs![]),
        },
        Error::Auth(e) => {
            let reason = match e {
                AuthError::InvalidEnv => return Ok(("InvalidArgument", attrs![])),
                AuthError::Malformed => "malformed",
                AuthError::BadChecksum => "bad_checksum",
                AuthError::UnknownKey => "unknown_key",
                AuthError::Revoked => "revoked",
                AuthError::Expired => "expired",
                AuthError::Tampered => "tampered",
                AuthError::WrongEnvironment { .. } => "wrong_environment",
                AuthError::MissingScope { .. } => "missing_scope",
                _ => "invalid",
            };
            match e {
                AuthError::MissingScope { scope } => (
                    "MissingScope",
                    attrs!["reason" => reason, "scope" => scope.as_str()],
                ),
                AuthError::WrongEnvironment { env, accepted } => (
                    "AuthError",
                    attrs!["reason" => reason, "env" => env.as_str(), "accepted" => accepted.clone()],
                ),
                _ => ("AuthError", attrs!["reason" => reason]),
            }
        }
        Error::RateLimit(e) => match e {
            RateLimitError::Shared(_) => ("RateLimitStateError", attrs![]),
            RateLimitError::SharedBusy {
                path,
                waited_ms,
                holder_pid,
            } => (
                "RateLimitStateBusy",
                attrs![
                    "path" => path.as_str(),
                    "waited" => seconds(*waited_ms),
                    "holder_pid" => *holder_pid,
                ],
            ),
            RateLimitError::InvalidCost {
                cost,
                limit,
                policy,
            } => (
                "RateLimitConfigError",
                attrs!["cost" => *cost, "limit" => *limit, "policy" => policy.as_str()],
            ),
            _ => ("RateLimitConfigError", attrs![]),
        },
        Error::Store(e) => match e {
            StoreError::Busy { waited_ms } => {
                ("StoreBusy", attrs!["waited" => seconds(*waited_ms)])
            }
            StoreError::Sqlite { code, .. } => ("StoreError", attrs!["sqlite_code" => *code]),
            StoreError::Unavailable { location, .. } => {
                ("StoreUnavailable", attrs!["location" => location.as_str()])
            }
            StoreError::Postgres { code, .. } => {
                ("StoreError", attrs!["sqlstate" => code.as_str()])
            }
            _ => ("StoreError", attrs![]),
        },
        Error::Crypto(e) => match e {
            CryptoError::DecryptionFailed | CryptoError::Format(_) => ("DecryptionError", attrs![]),
            CryptoError::UnknownKey { key_id } => ("DecryptionError", attrs!["key_id" => *key_id]),
            CryptoError::InvalidKeyring(_) | CryptoError::KeyringSource(_) => {
                ("KeyringError", attrs![])
            }
            CryptoError::KeyInUse { key_id, rows } => (
                "KeyInUseError",
                attrs!["key_id" => *key_id, "rows" => *rows],
            ),
            CryptoError::KeyMismatch { key_id } => {
                ("KeyMismatchError", attrs!["key_id" => *key_id])
            }
            CryptoError::AuditTampered { seq } => ("AuditTampered", attrs!["seq" => *seq]),
            _ => ("CryptoError", attrs![]),
        },
        Error::Memory(e) => match e {
            MemoryError::SessionNotFound => ("SessionNotFound", attrs![]),
            MemoryError::ContentTooLarge { size, max } => {
                ("ContentTooLarge", attrs!["size" => *size, "max" => *max])
            }
            MemoryError::InvalidMetadata(_) => ("InvalidMetadata", attrs![]),
            MemoryError::BudgetTooSmall { budget, needed } => (
                "BudgetTooSmall",
                attrs!["budget" => *budget, "needed" => *needed],
            ),
            MemoryError::Tampered { message_id, reason } => (
                "MemoryTampered",
                attrs!["message_id" => *message_id, "reason" => reason.as_str()],
            ),
            _ => ("ConversationError", attrs![]),
        },
        Error::Rag(e) => match e {
            RagError::InvalidConfig(_) => ("RagConfigError", attrs![]),
            RagError::DuplicateDocument => ("DuplicateDocumentError", attrs![]),
            RagError::InvalidMetadata(_) => ("MetadataFilterError", attrs![]),
            RagError::Io(_) | RagError::CorruptIndex(_) => ("IndexFileError", attrs![]),
            RagError::InvalidData(_) => ("EvalDataError", attrs![]),
            RagError::Model(_) => ("ModelError", attrs![]),
            RagError::Runtime(_) => ("OnnxRuntimeUnavailable", attrs![]),
            RagError::Source { path, reason } => (
                "SourceError",
                attrs!["path" => path.as_str(), "reason" => reason.as_str()],
            ),
            RagError::Cancelled { done, total } => (
                "IndexingCancelled",
                attrs!["done" => *done, "total" => *total],
            ),
            _ => ("RagError", attrs![]),
        },
        Error::Config(e) => match e {
            keel::ConfigError::Invalid { field, value, .. } => (
                "ConfigError",
                attrs!["field" => field.as_str(), "value" => value.as_str()],
            ),
            keel::ConfigError::Missing { field, .. } => {
                ("ConfigError", attrs!["field" => field.as_str()])
            }
            keel::ConfigError::BackendUnavailable { field, scheme } => (
                "BackendUnavailable",
                attrs!["field" => field.as_str(), "scheme" => scheme.as_str()],
            ),
            keel::ConfigError::UnknownName { name, .. } => {
                ("UnknownComponent", attrs!["name" => name.as_str()])
            }
            _ => ("ConfigError", attrs![]),
        },
        Error::Trace(_) => ("TelemetryError", attrs![]),
        Error::Stream(e) => match e {
            StreamError::InvalidSseField { field, .. } => {
                ("SseFieldError", attrs!["field" => *field])
            }
            StreamError::SseTooLarge { limit } => ("SseTooLarge", attrs!["limit" => *limit]),
            _ => ("StreamConfigError", attrs![]),
        },
        Error::Redis(e) => match e {
            keel::RedisError::Unavailable { endpoint, .. } => {
                ("RedisUnavailable", attrs!["endpoint" => endpoint.as_str()])
            }
            keel::RedisError::Command { endpoint, .. } => {
                ("RedisError", attrs!["endpoint" => endpoint.as_str()])
            }
            keel::RedisError::InvalidUrl { .. } => ("RedisUrlError", attrs![]),
            _ => ("RedisError", attrs![]),
        },
        _ => ("KeelError", attrs![]),
    })
}

/// Converts a core error into the matching `keel` exception.
pub fn to_py(err: Error) -> PyErr {
    Python::with_gil(|py| {
        describe(py, &err)
            .and_then(|(name, attrs)| build(py, name, err.to_string(), attrs))
            .unwrap_or_else(|e| e)
    })
}

/// A `keel.InvalidArgument` with the given message.
pub fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(Error::InvalidArgument(msg.into()))
}

/// Emits a `DeprecationWarning` at the caller's line: an old name still works, and says which
/// new one to use.
pub fn deprecated(py: Python<'_>, msg: &std::ffi::CStr) -> PyResult<()> {
    let category = py.get_type::<pyo3::exceptions::PyDeprecationWarning>();
    PyErr::warn(py, &category, msg, 1)
}

/// [`deprecated`] once per process (for old names on hot paths, e.g. `RateLimiter.hit`).
pub fn deprecated_once(
    py: Python<'_>,
    warned: &std::sync::atomic::AtomicBool,
    msg: &std::ffi::CStr,
) -> PyResult<()> {
    if warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    deprecated(py, msg)
}
