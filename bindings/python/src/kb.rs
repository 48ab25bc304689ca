//! `keel.KnowledgeBase`: the core's [`keel::rag::KnowledgeBase`] from Python.
//!
//! Arguments are copied out of Python objects, then indexing and search run with the GIL
//! released. The progress hook is re-entered with the GIL for each report: an object with
//! `update(n)` (tqdm and friends) gets its `total` set at the first report and `update(delta)`
//! after; any other callable is called as `hook(done, total)`. An exception raised by the hook
//! stops indexing and propagates unchanged.

use std::path::PathBuf;
use std::sync::Arc;

use keel::rag::{
    IndexProgress, IndexReport, KnowledgeBase, KnowledgeBaseOptions, RagError, Reranker,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::args::{opt_usize_arg, usize_arg};
use crate::neural::{register_onnxruntime, PyCrossEncoder, PyEmbedder};
use crate::rag::{document, filter_of, hits_to_py, rag_err, PyHit};

/// What `KnowledgeBase.index_folder` did: files `added`, `updated`, `removed` and `unchanged`,
/// and the passages (`chunks`) indexed.
#[pyclass(module = "keel._native", name = "IndexReport", frozen, get_all)]
pub struct PyIndexReport {
    added: usize,
    updated: usize,
    removed: usize,
    unchanged: usize,
    chunks: usize,
}

impl From<IndexReport> for PyIndexReport {
    fn from(r: IndexReport) -> Self {
        Self {
            added: r.added,
            updated: r.updated,
            removed: r.removed,
            unchanged: r.unchanged,
            chunks: r.chunks,
        }
    }
}

#[pymethods]
impl PyIndexReport {
    fn __repr__(&self) -> String {
        format!(
            "IndexReport(added={}, updated={}, removed={}, unchanged={}, chunks={})",
            self.added, self.updated, self.removed, self.unchanged, self.chunks
        )
    }
}

/// A persisted hybrid knowledge base over folders of txt / Markdown / HTML files.
#[pyclass(module = "keel._native", name = "KnowledgeBase", frozen)]
pub struct PyKnowledgeBase {
    inner: Arc<KnowledgeBase>,
}

/// Forwards one progress report to the Python hook; false (with the error kept) if it raised.
fn report_progress(
    hook: &Bound<'_, PyAny>,
    tqdm_like: bool,
    last: &mut usize,
    p: IndexProgress,
) -> PyResult<()> {
    if !tqdm_like {
        hook.call1((p.done, p.total))?;
        return Ok(());
    }
    if p.done == 0 {
        hook.setattr("total", p.total)?;
        if hook.hasattr("refresh")? {
            hook.call_method0("refresh")?;
        }
    }
    if p.done > *last {
        hook.call_method1("update", (p.done - *last,))?;
        *last = p.done;
    }
    Ok(())
}

#[pymethods]
impl PyKnowledgeBase {
    #[new]
    #[pyo3(signature = (
        path=None, *, embedder=None, cross_encoder=None, chunk_size=None, chunk_overlap=None,
        candidates=None, rerank_top=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        embedder: Option<PyRef<'_, PyEmbedder>>,
        cross_encoder: Option<PyRef<'_, PyCrossEncoder>>,
        chunk_size: Option<i128>,
        chunk_overlap: Option<i128>,
        candidates: Option<i128>,
        rerank_top: Option<i128>,
    ) -> PyResult<Self> {
        let options = KnowledgeBaseOptions {
            chunk_size: opt_usize_arg("chunk_size", chunk_size)?,
            chunk_overlap: opt_usize_arg("chunk_overlap", chunk_overlap)?,
            candidates: opt_usize_arg("candidates", candidates)?,
            rerank_top: opt_usize_arg("rerank_top", rerank_top)?,
        };
        let mut builder = KnowledgeBase::builder().options(options);
        if let Some(p) = path {
            builder = builder.path(p);
        }
        if let Some(e) = embedder {
            register_onnxruntime(py)?;
            builder = builder.embedder(Arc::clone(&e.inner));
        }
        if let Some(c) = cross_encoder {
            builder = builder.reranker(Arc::clone(&c.inner) as Arc<dyn Reranker>);
        }
        let inner = py.allow_threads(|| builder.open()).map_err(rag_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The directory the knowledge base persists in (None: in memory).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.path().map(PathBuf::from)
    }

    /// Whether dense retrieval is fused with BM25 (an embedder was given).
    #[getter]
    fn hybrid(&self) -> bool {
        self.inner.is_hybrid()
    }

    /// Whether hits are reranked (a cross-encoder was given).
    #[getter]
    fn reranked(&self) -> bool {
        self.inner.is_reranked()
    }

    /// Documents indexed.
    #[getter]
    fn documents(&self) -> usize {
        self.inner.documents()
    }

    /// Passages (chunks) indexed.
    #[getter]
    fn passages(&self) -> usize {
        self.inner.passages()
    }

    /// `{document id: sha256}` of the files indexed.
    fn files(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.files().into_iter().collect()
    }

    /// Indexes the folder's txt / Markdown / HTML files; only new and changed files are
    /// re-chunked and re-embedded, and files gone from the folder are removed.
    #[pyo3(signature = (folder, *, progress=None))]
    fn index_folder(
        &self,
        py: Python<'_>,
        folder: PathBuf,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyIndexReport> {
        let Some(hook) = progress.filter(|p| !p.is_none()) else {
            return py
                .allow_threads(|| self.inner.index_folder(&folder))
                .map(PyIndexReport::from)
                .map_err(rag_err);
        };
        let tqdm_like = hook.hasattr("update")?;
        if !tqdm_like && !hook.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "progress must be a tqdm-like object (with update(n)) or a callable, not {}",
                hook.get_type().name()?
            )));
        }
        let hook = hook.unbind();
        let mut last = 0usize;
        let mut raised: Option<PyErr> = None;
        let result = py.allow_threads(|| {
            self.inner.index_folder_with_progress(&folder, &mut |p| {
                Python::with_gil(|py| {
                    match report_progress(hook.bind(py), tqdm_like, &mut last, p) {
                        Ok(()) => true,
                        Err(e) => {
                            raised = Some(e);
                            false
                        }
                    }
                })
            })
        });
        match (result, raised) {
            (Err(RagError::Cancelled { .. }), Some(e)) => Err(e),
            (r, _) => r.map(PyIndexReport::from).map_err(rag_err),
        }
    }

    /// The `k` best hits for `query` (BM25; hybrid with an embedder; reranked with a
    /// cross-encoder), optionally restricted by a metadata `filter`.
    #[pyo3(signature = (query, k=5, filter=None))]
    fn search(
        &self,
        py: Python<'_>,
        query: String,
        k: i128,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyHit>> {
        let k = usize_arg("k", k)?;
        let filter = filter_of(filter)?;
        py.allow_threads(|| self.inner.search_filtered(&query, k, filter.as_ref()))
            .map(hits_to_py)
            .map_err(rag_err)
    }

    /// Adds or replaces a document that is not a file (kept until deleted); returns the
    /// passages indexed. `save()` persists it.
    #[pyo3(signature = (id, text, title="", metadata=None))]
    fn add(
        &self,
        py: Python<'_>,
        id: String,
        text: String,
        title: &str,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let doc = document(id, title.to_owned(), text, metadata)?;
        py.allow_threads(|| self.inner.add(doc)).map_err(rag_err)
    }

    /// Deletes a document; returns whether it was indexed. `save()` persists it.
    fn delete(&self, py: Python<'_>, id: String) -> PyResult<bool> {
        py.allow_threads(|| self.inner.delete(&id)).map_err(rag_err)
    }

    /// Writes the indexes and the manifest to the path (no-op in memory).
    fn save(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.inner.save()).map_err(rag_err)
    }

    fn __len__(&self) -> usize {
        self.inner.documents()
    }

    fn __repr__(&self) -> String {
        format!(
            "KnowledgeBase(path={:?}, documents={}, hybrid={}, reranked={})",
            self.inner.path().map(|p| p.display().to_string()),
            self.inner.documents(),
            self.inner.is_hybrid(),
            self.inner.is_reranked()
        )
    }
}
