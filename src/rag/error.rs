//! Failures of the [`crate::rag`] module.
//!
//! Messages name sizes, limits, line numbers and setting names, never document or query text.

/// What can go wrong in chunking, indexing, searching, fusing or evaluating.
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
}

impl From<std::io::Error> for RagError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.kind().to_string())
    }
}
