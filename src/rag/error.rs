//! Failures of the [`crate::rag`] module: [`RagError`], defined with the other families of
//! [`crate::Error`] in `src/error.rs` and re-exported here so that `keel::rag::RagError` keeps
//! working.

pub use crate::error::RagError;
