//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes are defined in Python (`keel/_exceptions.py`) so that they can subclass
//! both `keel.KeelError` and the built-in that fits (e.g. `ValueError`); they are looked up once and
//! cached.

use keel::RagError;
use keel::{CacheError, CryptoError, Error, MemoryError, StoreError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();
    let module = MODULE.get_or_try_init(py, || py.import("keel._exceptions").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.downcast_into::<PyType>()?)
}

fn new_err(py: Python<'_>, name: &'static str, msg: String) -> PyErr {
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    }
}

/// A `keel.AuthError` (or `keel.MissingScope`) carrying `reason` and `scope` attributes.
fn auth_err(py: Python<'_>, e: &keel::AuthError, msg: String) -> PyErr {
    use keel::AuthError as A;
    let (name, reason, scope) = match e {
        A::InvalidEnv => return new_err(py, "InvalidArgument", msg),
        A::Malformed => ("AuthError", "malformed", None),
        A::BadChecksum => ("AuthError", "bad_checksum", None),
        A::UnknownKey => ("AuthError", "unknown_key", None),
        A::Revoked => ("AuthError", "revoked", None),
        A::Expired => ("AuthError", "expired", None),
        A::Tampered => ("AuthError", "tampered", None),
        A::WrongEnvironment { .. } => ("AuthError", "wrong_environment", None),
        A::MissingScope { scope } => ("MissingScope", "missing_scope", Some(scope.clone())),
        _ => ("AuthError", "invalid", None),
    };
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, (msg, reason, scope)),
        Err(e) => e,
    }
}

/// Converts a core error into the matching `keel` exception.
pub fn to_py(err: Error) -> PyErr {
    Python::with_gil(|py| {
        if let Error::Auth(a) = &err {
            return auth_err(py, a, err.to_string());
        }
        if let Error::Memory(MemoryError::Tampered { message_id, .. }) = &err {
            return match class(py, "MemoryTampered") {
                Ok(cls) => PyErr::from_type(cls, (err.to_string(), *message_id)),
                Err(e) => e,
            };
        }
        let name = match &err {
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::Cache(CacheError::RecursiveLoad) => "RecursiveLoadError",
            Error::Cache(_) => "CacheConfigError",
            Error::RateLimit(keel::RateLimitError::Shared(_)) => "RateLimitStateError",
            Error::RateLimit(keel::RateLimitError::SharedBusy { .. }) => "RateLimitStateBusy",
            Error::RateLimit(_) => "RateLimitConfigError",
            Error::Store(StoreError::Busy { .. }) => "StoreBusy",
            Error::Store(_) => "StoreError",
            Error::Crypto(
                CryptoError::DecryptionFailed
                | CryptoError::UnknownKey { .. }
                | CryptoError::Format(_),
            ) => "DecryptionError",
            Error::Crypto(CryptoError::InvalidKeyring(_) | CryptoError::KeyringSource(_)) => {
                "KeyringError"
            }
            Error::Crypto(CryptoError::KeyInUse { .. }) => "KeyInUseError",
            Error::Crypto(CryptoError::KeyMismatch { .. }) => "KeyMismatchError",
            Error::Crypto(CryptoError::AuditTampered { .. }) => "AuditTampered",
            Error::Crypto(_) => "CryptoError",
            Error::Memory(MemoryError::SessionNotFound) => "SessionNotFound",
            Error::Memory(MemoryError::ContentTooLarge { .. }) => "ContentTooLarge",
            Error::Memory(MemoryError::InvalidMetadata(_)) => "InvalidMetadata",
            Error::Memory(_) => "ConversationError",
            Error::Rag(RagError::InvalidConfig(_)) => "RagConfigError",
            Error::Rag(RagError::DuplicateDocument) => "DuplicateDocumentError",
            Error::Rag(RagError::InvalidMetadata(_)) => "MetadataFilterError",
            Error::Rag(RagError::Io(_) | RagError::CorruptIndex(_)) => "IndexFileError",
            Error::Rag(RagError::InvalidData(_)) => "EvalDataError",
            Error::Rag(RagError::Model(_)) => "ModelError",
            Error::Rag(RagError::Runtime(_)) => "OnnxRuntimeUnavailable",
            Error::Rag(_) => "RagError",
            Error::Config(keel::ConfigError::BackendUnavailable { .. }) => "BackendUnavailable",
            Error::Config(keel::ConfigError::UnknownName { .. }) => "UnknownComponent",
            Error::Config(_) => "ConfigError",
            _ => "KeelError",
        };
        new_err(py, name, err.to_string())
    })
}

/// A `keel.InvalidArgument` with the given message.
pub fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(Error::InvalidArgument(msg.into()))
}
