//! Retrieval for RAG without a model: chunking, BM25 lexical search, fusion, citations and
//! evaluation, joined by a [`Pipeline`] that a dense retriever and a reranker plug into.
//!
//! The flow is documents → [`chunk`] → passages → candidates from one or more [`Retriever`]s
//! ([`Bm25Index`]) → [`fuse`] → optional [`Reranker`] → [`Hit`]s that cite document, chunk and
//! exact offsets. [`eval`] scores rankings with trec_eval's definitions.

mod checksum;
pub mod chunk;
pub mod cite;
mod codec;
#[cfg(feature = "neural")]
pub mod dense;
#[cfg(feature = "neural")]
pub mod embed;
mod error;
pub mod eval;
pub mod filter;
pub mod fuse;
pub mod kb;
pub mod lexical;
#[cfg(feature = "neural")]
mod model;
mod par;
pub mod pipeline;
#[cfg(feature = "neural")]
mod pool;
#[cfg(feature = "neural")]
pub mod rerank;
#[cfg(feature = "neural")]
pub mod runtime;
// `pool_shape` serves only the neural half.
#[cfg_attr(not(feature = "neural"), allow(dead_code))]
mod threads;

#[cfg(test)]
mod tests;

/// How many hits a search returns when its caller does not say (the Python door's `k` and
/// `limit` defaults; Rust and C callers always pass one).
pub const DEFAULT_TOP_K: usize = 10;

pub use chunk::{chunk_text, Chunk, Chunker, Length, LengthFn, Span};
pub use cite::{
    hits_from_candidates, metadata_from_json, metadata_to_json, Candidate, Document, Hit, Metadata,
    Passage, SourceRank,
};
#[cfg(feature = "neural")]
pub use dense::{DenseIndex, Precision};
#[cfg(feature = "neural")]
pub use embed::{Embedder, EmbedderOptions, Pooling};
pub use error::RagError;
pub use eval::{evaluate, load_beir, BeirDataset, Evaluation, Metric, Qrels, Run};
pub use filter::Filter;
pub use fuse::{fuse, rrf, Fusion, Normalization, RankedList};
pub use kb::{
    IndexProgress, IndexReport, KnowledgeBase, KnowledgeBaseBuilder, KnowledgeBaseOptions,
};
pub use lexical::analyzer::{self, Analyzer, AnalyzerConfig};
pub use lexical::{Bm25Config, Bm25Index, Bm25Stats};
pub use pipeline::{rerank_hits, Pipeline, Reranker, Retriever};
#[cfg(feature = "neural")]
pub use rerank::{CrossEncoder, CrossEncoderOptions};
/// Names the ONNX Runtime library to load ahead of every other lookup step (see
/// [`runtime::set_library_path`]): the one call an `Engine`, the Python door or a Rust user makes.
#[cfg(feature = "neural")]
pub use runtime::set_library_path as set_onnxruntime_path;
pub use threads::{
    pool_shape, resolve_threads, PoolShape, DEFAULT_THREADS, MAX_SESSIONS, MAX_THREADS,
};
