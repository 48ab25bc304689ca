//! Neural retrieval from Python: `keel.Embedder`, `keel.DenseIndex` and `keel.CrossEncoder`.
//!
//! Inputs are copied out of Python objects first; tokenization, inference and search run with
//! the GIL released. This interpreter's `onnxruntime` wheel is found in Python
//! (`keel._onnxruntime`) and registered with the core before the first model is opened, so
//! `pip install "keel-engine[neural]"` is enough; `ORT_DYLIB_PATH` still wins.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel::rag::{
    rerank_hits, runtime, CrossEncoder, CrossEncoderOptions, DenseIndex, Document, Embedder,
    EmbedderOptions, Hit, Passage, Precision, RagError,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::telemetry::Traced;
use pyo3::types::PyBytes;

use crate::args::{opt_usize_arg, usize_arg};
use crate::rag::{document_of, filter_of, hits_to_py, rag_err, PyHit};

/// Passes this interpreter's `onnxruntime` wheel library (found by `keel._onnxruntime`, in
/// Python) down to the core before a model loads; the core never runs Python itself.
pub(crate) fn register_onnxruntime(py: Python<'_>) -> PyResult<()> {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.load(Ordering::Acquire) {
        return Ok(());
    }
    let path: Option<PathBuf> = py
        .import("keel._onnxruntime")?
        .call_method0("wheel_library")?
        .extract()?;
    if let Some(path) = path {
        runtime::set_host_library_path(path);
    }
    DONE.store(true, Ordering::Release);
    Ok(())
}

/// A sentence-embedding model loaded from a directory (model.onnx + tokenizer.json).
/// `sessions`: ONNX Runtime sessions, i.e. calls that run at once (None: the core's choice, one
/// per core divided by `threads`; 0 or above 64 a `RagConfigError`). `threads`: intra-op threads
/// per session (0 or None: the cores divided by the sessions; lowered to that; above 1024 a
/// `RagConfigError`).
#[pyclass(module = "keel._native", name = "Embedder", frozen)]
pub struct PyEmbedder {
    pub(crate) inner: Arc<Embedder>,
}

#[pymethods]
impl PyEmbedder {
    #[new]
    #[pyo3(signature = (path, *, threads=None, batch_size=None, max_length=None, sessions=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<i128>,
        batch_size: Option<i128>,
        max_length: Option<i128>,
        sessions: Option<i128>,
    ) -> PyResult<Self> {
        // None: the core's default (EmbedderOptions::default()).
        let defaults = EmbedderOptions::default();
        let threads = opt_usize_arg("threads", threads)?.unwrap_or(defaults.threads);
        let batch_size = opt_usize_arg("batch_size", batch_size)?.unwrap_or(defaults.batch_size);
        let max_length = opt_usize_arg("max_length", max_length)?;
        let sessions = opt_usize_arg("sessions", sessions)?.or(defaults.sessions);
        register_onnxruntime(py)?;
        let options = EmbedderOptions {
            threads,
            batch_size,
            max_length,
            sessions,
            ..defaults
        };
        let inner = py
            .traced(|| Embedder::open(&path, options))
            .map_err(rag_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The embedding dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The truncation length in tokens.
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length()
    }

    /// ONNX Runtime sessions (calls that run at once).
    #[getter]
    fn sessions(&self) -> usize {
        self.inner.sessions()
    }

    /// ONNX Runtime intra-op threads per session.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The most sessions that ran at the same time since the model was opened (diagnostic).
    #[getter]
    fn peak_concurrency(&self) -> usize {
        self.inner.peak_concurrency()
    }

    /// Inference calls (batches) run since the model was opened (diagnostic: fewer than the
    /// one-text calls made means they were micro-batched).
    #[getter]
    fn runs(&self) -> u64 {
        self.inner.runs()
    }

    /// One L2-normalised vector per text, in input order.
    fn embed(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<f32>>> {
        py.traced(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            self.inner.embed(&refs)
        })
        .map_err(rag_err)
    }

    /// The embeddings as one row-major float32 buffer (`numpy.frombuffer(b, "<f4")`).
    fn embed_bytes<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let flat = py
            .traced(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                self.inner.embed(&refs).map(|vs| {
                    vs.iter()
                        .flatten()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>()
                })
            })
            .map_err(rag_err)?;
        Ok(PyBytes::new(py, &flat))
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(dim={}, max_length={})",
            self.inner.dim(),
            self.inner.max_length()
        )
    }
}

/// A cross-encoder reranker loaded from a directory (model.onnx + tokenizer.json).
/// `sessions`, `threads`: as for `Embedder`.
#[pyclass(module = "keel._native", name = "CrossEncoder", frozen)]
pub struct PyCrossEncoder {
    pub(crate) inner: Arc<CrossEncoder>,
}

#[pymethods]
impl PyCrossEncoder {
    #[new]
    #[pyo3(signature = (path, *, threads=None, batch_size=None, max_length=None, sessions=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<i128>,
        batch_size: Option<i128>,
        max_length: Option<i128>,
        sessions: Option<i128>,
    ) -> PyResult<Self> {
        // None: the core's default (CrossEncoderOptions::default()).
        let defaults = CrossEncoderOptions::default();
        let threads = opt_usize_arg("threads", threads)?.unwrap_or(defaults.threads);
        let batch_size = opt_usize_arg("batch_size", batch_size)?.unwrap_or(defaults.batch_size);
        let max_length = opt_usize_arg("max_length", max_length)?;
        let sessions = opt_usize_arg("sessions", sessions)?.or(defaults.sessions);
        register_onnxruntime(py)?;
        let options = CrossEncoderOptions {
            threads,
            batch_size,
            max_length,
            sessions,
        };
        let inner = py
            .traced(|| CrossEncoder::open(&path, options))
            .map_err(rag_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The truncation length in tokens (query + passage).
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length()
    }

    /// ONNX Runtime sessions (calls that run at once).
    #[getter]
    fn sessions(&self) -> usize {
        self.inner.sessions()
    }

    /// ONNX Runtime intra-op threads per session.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The most sessions that ran at the same time since the model was opened (diagnostic).
    #[getter]
    fn peak_concurrency(&self) -> usize {
        self.inner.peak_concurrency()
    }

    /// One relevance score per passage, in input order.
    fn score(&self, py: Python<'_>, query: String, passages: Vec<String>) -> PyResult<Vec<f32>> {
        py.traced(|| {
            let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
            self.inner.score(&query, &refs)
        })
        .map_err(rag_err)
    }

    /// Reorders the first `top` hits (all if None) by cross-encoder score, ties by document id
    /// then chunk id (the core's `rerank_hits`); the rest keep their order after them. Each
    /// reranked hit gets the score and a ("rerank", rank, score) source.
    #[pyo3(signature = (query, hits, top=None))]
    fn rerank(
        &self,
        py: Python<'_>,
        query: String,
        hits: Vec<PyRef<'_, PyHit>>,
        top: Option<i128>,
    ) -> PyResult<Vec<PyHit>> {
        // None: every hit (the core reranks at most as many as there are).
        let top = opt_usize_arg("top", top)?.unwrap_or(usize::MAX);
        let hits: Vec<Hit> = hits.iter().map(|h| h.hit.clone()).collect();
        let out = py
            .traced(|| rerank_hits(&*self.inner, &query, hits, top))
            .map_err(rag_err)?;
        Ok(hits_to_py(out))
    }

    fn __repr__(&self) -> String {
        format!("CrossEncoder(max_length={})", self.inner.max_length())
    }
}

/// Exact cosine search over passage embeddings, optionally int8; persistent.
#[pyclass(module = "keel._native", name = "DenseIndex", frozen)]
pub struct PyDenseIndex {
    pub(crate) inner: Arc<DenseIndex>,
}

fn precision(int8: bool) -> Precision {
    if int8 {
        Precision::Int8
    } else {
        Precision::F32
    }
}

/// Vectors from a list of float lists or a row-major little-endian float32 buffer.
fn vectors_of(obj: &Bound<'_, PyAny>, rows: usize, dim: usize) -> PyResult<Vec<Vec<f32>>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        let bytes = b.as_bytes();
        if bytes.len() != rows * dim * 4 {
            return Err(rag_err(RagError::InvalidConfig(format!(
                "a float32 buffer for {rows} vectors of dimension {dim} needs {} bytes, not {}",
                rows * dim * 4,
                bytes.len()
            ))));
        }
        return Ok(bytes
            .chunks_exact(dim * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .collect());
    }
    obj.extract()
}

#[pymethods]
impl PyDenseIndex {
    #[new]
    #[pyo3(signature = (embedder=None, *, dim=None, int8=false))]
    fn new(
        embedder: Option<PyRef<'_, PyEmbedder>>,
        dim: Option<i128>,
        int8: bool,
    ) -> PyResult<Self> {
        let dim = opt_usize_arg("dim", dim)?;
        let inner = match (embedder, dim) {
            (Some(e), None) => DenseIndex::new(Arc::clone(&e.inner), precision(int8)),
            (Some(e), Some(d)) if d == e.inner.dim() => {
                DenseIndex::new(Arc::clone(&e.inner), precision(int8))
            }
            (None, Some(d)) => DenseIndex::with_dim(d, precision(int8)).map_err(rag_err)?,
            _ => {
                return Err(PyTypeError::new_err(
                    "pass an embedder, or dim= for an index of precomputed vectors",
                ))
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Reopens an index saved with `save`; `embedder` enables text search.
    #[staticmethod]
    #[pyo3(signature = (path, embedder=None))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        embedder: Option<PyRef<'_, PyEmbedder>>,
    ) -> PyResult<Self> {
        let e = embedder.map(|e| Arc::clone(&e.inner));
        let inner = py.traced(|| DenseIndex::open(&path, e)).map_err(rag_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Writes the index (passages and vectors) to `path` atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.traced(|| self.inner.save(&path)).map_err(rag_err)
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn int8(&self) -> bool {
        self.inner.precision() == Precision::Int8
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Embeds and adds (or replaces) documents: dicts with id/title/text/metadata, or tuples
    /// (id, text) / (id, title, text).
    fn add_many(&self, py: Python<'_>, docs: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut batch = Vec::new();
        for item in docs.try_iter()? {
            batch.push(Passage::whole(document_of(&item?)?));
        }
        py.traced(|| self.inner.upsert(batch)).map_err(rag_err)
    }

    /// Adds (or replaces) documents with precomputed vectors: a list of float lists, or a
    /// row-major float32 buffer (`array.astype("<f4").tobytes()`).
    fn add_vectors(
        &self,
        py: Python<'_>,
        ids: Vec<String>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let vs = vectors_of(vectors, ids.len(), self.inner.dim())?;
        let passages = ids
            .into_iter()
            .map(|id| Passage::whole(Document::new(id, "")))
            .collect();
        py.traced(|| self.inner.upsert_vectors(passages, vs))
            .map_err(rag_err)
    }

    /// Removes a document; returns whether it was indexed.
    fn delete(&self, py: Python<'_>, id: String) -> bool {
        py.traced(|| self.inner.delete(&id))
    }

    /// The `k` passages most similar to `query`.
    #[pyo3(signature = (query, k=keel::rag::DEFAULT_TOP_K as i128, filter=None))]
    fn search(
        &self,
        py: Python<'_>,
        query: String,
        k: i128,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyHit>> {
        let k = usize_arg("k", k)?;
        let filter = filter_of(filter)?;
        let c = py
            .traced(|| self.inner.search_hits(&query, k, filter.as_ref()))
            .map_err(rag_err)?;
        Ok(hits_to_py(c))
    }

    /// The `k` passages most similar to a query vector.
    #[pyo3(signature = (vector, k=keel::rag::DEFAULT_TOP_K as i128, filter=None))]
    fn search_vector(
        &self,
        py: Python<'_>,
        vector: Vec<f32>,
        k: i128,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyHit>> {
        let k = usize_arg("k", k)?;
        let filter = filter_of(filter)?;
        let c = py
            .traced(|| self.inner.search_vector_hits(&vector, k, filter.as_ref()))
            .map_err(rag_err)?;
        Ok(hits_to_py(c))
    }

    fn __repr__(&self) -> String {
        format!(
            "DenseIndex(dim={}, int8={}, len={})",
            self.inner.dim(),
            self.int8(),
            self.inner.len()
        )
    }
}
