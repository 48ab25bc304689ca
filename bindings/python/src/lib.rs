//! `keel._native`: the PyO3 module behind `import keel`.
//!
//! Thin by design: each class converts arguments, calls the core crate and maps errors through
//! [`errors::to_py`]. The public Python API is re-exported by `python/keel/__init__.py`.

mod args;
mod auth;
mod cache;
mod engine;
mod errors;
mod kb;
mod memory;
mod metrics;
mod neural;
mod rag;
mod ratelimit;
mod shared_cache;
mod stream;
mod telemetry;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", keel::VERSION)?;
    m.add_class::<cache::PyCache>()?;
    cache::install_fast_paths(m.py())?;
    m.add_class::<cache::PyCacheStats>()?;
    m.add_class::<shared_cache::PySharedCache>()?;
    m.add_class::<memory::PyKeyring>()?;
    m.add_class::<memory::PyMemory>()?;
    m.add_class::<memory::PyMessage>()?;
    m.add_class::<memory::PySessionInfo>()?;
    m.add_class::<auth::PyApiKeys>()?;
    m.add_class::<auth::PyKeyInfo>()?;
    m.add_class::<auth::PyIdentity>()?;
    m.add_class::<auth::PyAuditLog>()?;
    m.add_class::<auth::PyAuditEntry>()?;
    m.add_class::<ratelimit::PyRateLimiter>()?;
    m.add_class::<ratelimit::PyDecision>()?;
    m.add_function(wrap_pyfunction!(ratelimit::check_all, m)?)?;
    m.add_class::<rag::PyChunk>()?;
    m.add_class::<rag::PyChunker>()?;
    m.add_class::<rag::PyHit>()?;
    m.add_class::<rag::PyDocument>()?;
    m.add_class::<rag::PyBm25Index>()?;
    m.add_function(wrap_pyfunction!(rag::chunk_text, m)?)?;
    m.add_function(wrap_pyfunction!(rag::fuse, m)?)?;
    m.add_function(wrap_pyfunction!(rag::rrf, m)?)?;
    m.add_function(wrap_pyfunction!(rag::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(rag::evaluate_per_query, m)?)?;
    m.add_function(wrap_pyfunction!(rag::load_beir, m)?)?;
    m.add_class::<neural::PyEmbedder>()?;
    m.add_class::<neural::PyDenseIndex>()?;
    m.add_class::<neural::PyCrossEncoder>()?;
    m.add_class::<kb::PyKnowledgeBase>()?;
    m.add_class::<kb::PyIndexReport>()?;
    m.add_class::<engine::PyEngine>()?;
    telemetry::register(m)?;
    m.add_class::<stream::PySentenceSegmenter>()?;
    m.add_class::<stream::PySseEvent>()?;
    m.add_class::<stream::PySseParser>()?;
    m.add_function(wrap_pyfunction!(stream::sse_event, m)?)?;
    m.add_function(wrap_pyfunction!(stream::sse_comment, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::metrics_content_type, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::set_metrics_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::metrics_enabled, m)?)?;
    Ok(())
}
