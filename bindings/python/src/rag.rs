//! Retrieval from Python: `keel.Chunker` / `keel.chunk_text`, `keel.BM25Index`, `keel.Hit`,
//! `keel.fuse` / `keel.rrf`, `keel.evaluate` and `keel.load_beir`.
//!
//! Text and ids are copied out of Python objects first, then chunking, indexing, search and
//! evaluation run with the GIL released. A `Hit` keeps the core's shared passage and converts a
//! field to a Python object only when it is read, so returning many hits stays cheap. Metadata
//! crosses as JSON (Python's `json` module on this side, `serde_json` in the core).

use std::path::PathBuf;
use std::sync::Arc;

use keel::rag::{
    self, Bm25Config, Bm25Index, Candidate, Chunker, Document, Filter, Fusion, Hit, Length,
    Metadata, Metric, Passage, RagError, RankedList,
};
use keel::Error;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::telemetry::Traced;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::args::usize_arg;
use crate::errors::to_py;

pub(crate) fn rag_err(e: RagError) -> PyErr {
    to_py(Error::Rag(e))
}

fn json_dumps(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    obj.py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()
}

fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

fn metadata_of(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Metadata> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Metadata::new());
    };
    if !obj.is_instance_of::<PyDict>() {
        return Err(rag_err(RagError::InvalidMetadata(
            "metadata must be a dict".into(),
        )));
    }
    let text = json_dumps(obj).map_err(|_| {
        rag_err(RagError::InvalidMetadata(
            "metadata must be JSON-serialisable".into(),
        ))
    })?;
    rag::metadata_from_json(&text).map_err(rag_err)
}

pub(crate) fn filter_of(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Filter>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let text = json_dumps(obj).map_err(|_| {
        rag_err(RagError::InvalidMetadata(
            "a filter must be JSON-serialisable".into(),
        ))
    })?;
    Filter::parse(&text).map(Some).map_err(rag_err)
}

// ---------------------------------------------------------------------------------------------
// chunking

/// One chunk of a text with its exact offsets: `text[byte_start:byte_end]` of the UTF-8 bytes and
/// `text[char_start:char_end]` of the Python string are both the chunk.
#[pyclass(module = "keel._native", name = "Chunk", frozen, get_all)]
pub struct PyChunk {
    index: usize,
    text: Py<PyString>,
    byte_start: usize,
    byte_end: usize,
    char_start: usize,
    char_end: usize,
}

#[pymethods]
impl PyChunk {
    fn __repr__(&self) -> String {
        format!(
            "Chunk(index={}, chars={}..{}, bytes={}..{})",
            self.index, self.char_start, self.char_end, self.byte_start, self.byte_end
        )
    }
}

/// Splits text on natural boundaries (paragraph, line, sentence, word, grapheme) into chunks of
/// at most `max_len` (chars, or the value of `length(text)`), sharing up to `overlap`.
#[pyclass(module = "keel._native", name = "Chunker", frozen)]
pub struct PyChunker {
    inner: Chunker,
    /// Whether `length` is a Python callable (then its errors are collected in
    /// `LENGTH_ERROR` of the calling thread and reported after the chunking).
    custom_length: bool,
}

thread_local! {
    /// The first error raised by a Python `length` callable during this thread's current
    /// `chunks()` call. Per thread, because the callable runs on the calling thread and another
    /// thread may chunk with the same `Chunker` meanwhile (the callable can release the GIL).
    static LENGTH_ERROR: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

impl PyChunker {
    fn run(&self, py: Python<'_>, text: String) -> PyResult<Vec<PyChunk>> {
        let spans: Vec<(usize, rag::Span)> = match self.custom_length {
            // A Python length function needs the GIL for every call.
            true => {
                LENGTH_ERROR.with(|e| e.borrow_mut().take());
                let out = self
                    .inner
                    .chunks(&text)
                    .iter()
                    .map(|c| (c.index, c.span))
                    .collect();
                if let Some(err) = LENGTH_ERROR.with(|e| e.borrow_mut().take()) {
                    return Err(err);
                }
                out
            }
            false => py.traced(|| {
                self.inner
                    .chunks(&text)
                    .iter()
                    .map(|c| (c.index, c.span))
                    .collect()
            }),
        };
        Ok(spans
            .into_iter()
            .map(|(index, s)| PyChunk {
                index,
                text: PyString::new(py, &text[s.byte_start..s.byte_end]).unbind(),
                byte_start: s.byte_start,
                byte_end: s.byte_end,
                char_start: s.char_start,
                char_end: s.char_end,
            })
            .collect())
    }
}

#[pymethods]
impl PyChunker {
    #[new]
    #[pyo3(signature = (max_len, overlap=0, *, length=None))]
    fn new(max_len: i128, overlap: i128, length: Option<Py<PyAny>>) -> PyResult<Self> {
        let max_len = usize_arg("max_len", max_len)?;
        let overlap = usize_arg("overlap", overlap)?;
        let (measure, custom_length) = match length {
            None => (Length::Chars, false),
            Some(f) => {
                let measure = Length::Custom(Arc::new(move |text: &str| {
                    Python::with_gil(|py| {
                        match f.call1(py, (text,)).and_then(|v| v.extract::<usize>(py)) {
                            Ok(n) => n,
                            Err(e) => {
                                LENGTH_ERROR.with(|slot| {
                                    slot.borrow_mut().get_or_insert(e);
                                });
                                // Too long: the chunker falls back to smaller pieces and terminates.
                                usize::MAX
                            }
                        }
                    })
                }));
                (measure, true)
            }
        };
        Ok(Self {
            inner: Chunker::with_length(max_len, overlap, measure).map_err(rag_err)?,
            custom_length,
        })
    }

    #[getter]
    fn max_len(&self) -> usize {
        self.inner.max_len()
    }

    #[getter]
    fn overlap(&self) -> usize {
        self.inner.overlap()
    }

    /// The chunks of `text`, in order.
    fn chunks(&self, py: Python<'_>, text: String) -> PyResult<Vec<PyChunk>> {
        self.run(py, text)
    }

    fn __repr__(&self) -> String {
        format!(
            "Chunker(max_len={}, overlap={})",
            self.inner.max_len(),
            self.inner.overlap()
        )
    }
}

/// Splits `text` into chunks of at most `max_len` chars, sharing up to `overlap` chars.
#[pyfunction]
#[pyo3(signature = (text, max_len, overlap=0))]
pub fn chunk_text(
    py: Python<'_>,
    text: String,
    max_len: i128,
    overlap: i128,
) -> PyResult<Vec<PyChunk>> {
    PyChunker::new(max_len, overlap, None)?.run(py, text)
}

// ---------------------------------------------------------------------------------------------
// hits

/// A search result that cites its source: document id, chunk id, offsets, title, text,
/// metadata, final score and the (retriever, rank, score) that each retriever gave it.
#[pyclass(module = "keel._native", name = "Hit", frozen)]
pub struct PyHit {
    pub(crate) hit: Hit,
}

#[pymethods]
impl PyHit {
    #[getter]
    fn doc_id(&self) -> &str {
        &self.hit.passage.doc_id
    }
    #[getter]
    fn chunk_id(&self) -> u32 {
        self.hit.passage.chunk_id
    }
    #[getter]
    fn score(&self) -> f64 {
        self.hit.score
    }
    #[getter]
    fn title(&self) -> &str {
        &self.hit.passage.title
    }
    #[getter]
    fn text(&self) -> &str {
        &self.hit.passage.text
    }
    #[getter]
    fn byte_start(&self) -> usize {
        self.hit.passage.span.byte_start
    }
    #[getter]
    fn byte_end(&self) -> usize {
        self.hit.passage.span.byte_end
    }
    #[getter]
    fn char_start(&self) -> usize {
        self.hit.passage.span.char_start
    }
    #[getter]
    fn char_end(&self) -> usize {
        self.hit.passage.span.char_end
    }
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, &rag::metadata_to_json(&self.hit.passage.metadata))
    }
    /// `[(retriever, rank, score), ...]`: how each retriever ranked this hit (rank from 1).
    #[getter]
    fn sources(&self) -> Vec<(String, usize, f32)> {
        self.hit
            .sources
            .iter()
            .map(|s| (s.retriever.to_string(), s.rank, s.score))
            .collect()
    }
    /// The hit as plain JSON-able types (str, int, float, list, dict, None), e.g. for a FastAPI
    /// response: every field above, `sources` as a list of `{"retriever", "rank", "score"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = &self.hit.passage;
        let d = PyDict::new(py);
        d.set_item("doc_id", &p.doc_id)?;
        d.set_item("chunk_id", p.chunk_id)?;
        d.set_item("score", self.hit.score)?;
        d.set_item("title", &p.title)?;
        d.set_item("text", &p.text)?;
        d.set_item("byte_start", p.span.byte_start)?;
        d.set_item("byte_end", p.span.byte_end)?;
        d.set_item("char_start", p.span.char_start)?;
        d.set_item("char_end", p.span.char_end)?;
        d.set_item("metadata", self.metadata(py)?)?;
        let sources = PyList::empty(py);
        for s in &self.hit.sources {
            let item = PyDict::new(py);
            item.set_item("retriever", &*s.retriever)?;
            item.set_item("rank", s.rank)?;
            item.set_item("score", s.score)?;
            sources.append(item)?;
        }
        d.set_item("sources", sources)?;
        Ok(d)
    }

    /// Rebuilds a hit from `to_dict()`'s output (used by pickle).
    #[classmethod]
    fn _from_dict(_cls: &Bound<'_, pyo3::types::PyType>, d: &Bound<'_, PyDict>) -> PyResult<Self> {
        fn field<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, name: &str) -> PyResult<T> {
            d.get_item(name)?
                .ok_or_else(|| PyTypeError::new_err(format!("a Hit dict needs {name:?}")))?
                .extract()
        }
        let metadata = d.get_item("metadata")?;
        let mut sources = Vec::new();
        let list: Bound<'_, PyList> = field(d, "sources")?;
        for item in list.iter() {
            let item = item.downcast_into::<PyDict>()?;
            let retriever: String = field(&item, "retriever")?;
            sources.push(rag::SourceRank {
                retriever: Arc::from(retriever.as_str()),
                rank: field(&item, "rank")?,
                score: field(&item, "score")?,
            });
        }
        let passage = Passage {
            doc_id: field(d, "doc_id")?,
            chunk_id: field(d, "chunk_id")?,
            span: rag::Span {
                byte_start: field(d, "byte_start")?,
                byte_end: field(d, "byte_end")?,
                char_start: field(d, "char_start")?,
                char_end: field(d, "char_end")?,
            },
            title: field(d, "title")?,
            text: field(d, "text")?,
            metadata: Arc::new(metadata_of(metadata.as_ref())?),
        };
        Ok(Self {
            hit: Hit {
                passage: Arc::new(passage),
                score: field(d, "score")?,
                sources,
            },
        })
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyDict>,))> {
        let restore = slf.get_type().getattr("_from_dict")?;
        Ok((restore, (slf.get().to_dict(slf.py())?,)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Hit(doc_id={:?}, chunk_id={}, score={:.6})",
            self.hit.passage.doc_id,
            self.hit.chunk_id(),
            self.hit.score
        )
    }
}

pub(crate) fn hits_to_py(hits: Vec<Hit>) -> Vec<PyHit> {
    hits.into_iter().map(|hit| PyHit { hit }).collect()
}

// ---------------------------------------------------------------------------------------------
// documents

/// A document to index: `Document(id, text, title="", metadata=None)`, the same order as
/// `BM25Index.add`. `add_many` takes these, dicts with the same keys, or `(id, text)` pairs.
#[pyclass(module = "keel._native", name = "Document", frozen, get_all)]
pub struct PyDocument {
    id: String,
    text: String,
    title: String,
    metadata: Option<Py<PyAny>>,
}

#[pymethods]
impl PyDocument {
    #[new]
    #[pyo3(signature = (id, text, title="", metadata=None))]
    fn new(
        id: String,
        text: String,
        title: &str,
        metadata: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let title = title.to_owned();
        // Checked now, so a bad document fails where it is made, not inside add_many.
        metadata_of(metadata.as_ref())?;
        Ok(Self {
            id,
            text,
            title,
            metadata: metadata.filter(|m| !m.is_none()).map(Bound::unbind),
        })
    }

    /// `{"id", "text", "title", "metadata"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("text", &self.text)?;
        d.set_item("title", &self.title)?;
        d.set_item("metadata", self.metadata.as_ref().map(|m| m.clone_ref(py)))?;
        Ok(d)
    }

    fn __getnewargs__(&self, py: Python<'_>) -> (String, String, String, Option<Py<PyAny>>) {
        (
            self.id.clone(),
            self.text.clone(),
            self.title.clone(),
            self.metadata.as_ref().map(|m| m.clone_ref(py)),
        )
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.downcast::<PyDocument>() else {
            return Ok(false);
        };
        let o = other.get();
        if (&self.id, &self.text, &self.title) != (&o.id, &o.text, &o.title) {
            return Ok(false);
        }
        match (&self.metadata, &o.metadata) {
            (None, None) => Ok(true),
            (Some(a), Some(b)) => a.bind(py).eq(b.bind(py)),
            _ => Ok(false),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Document(id={:?}, title={:?}, text=<{} chars>)",
            self.id,
            self.title,
            self.text.chars().count()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// BM25

/// A BM25 (Lucene variant) index with a Snowball-stemming analyzer; incremental, persistent and
/// safe to share between threads.
#[pyclass(module = "keel._native", name = "BM25Index", frozen)]
pub struct PyBm25Index {
    pub(crate) inner: Arc<Bm25Index>,
}

pub(crate) fn document(
    id: String,
    title: String,
    text: String,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<Document> {
    Ok(Document {
        id,
        title,
        text,
        metadata: metadata_of(metadata)?,
    })
}

/// The keys a document dict may have.
const DOCUMENT_KEYS: [&str; 5] = ["id", "_id", "text", "title", "metadata"];

/// One `add_many` entry: a `keel.Document`, a dict with `id` (or BEIR's `_id`), `text` and
/// optional `title` / `metadata`, or an `(id, text)` pair. A 3-tuple is refused: `add(id, text,
/// title)` and older `add_many((id, title, text))` disagreed on its order, and guessing would index
/// titles as text without a word.
pub(crate) fn document_of(item: &Bound<'_, PyAny>) -> PyResult<Document> {
    if let Ok(d) = item.downcast::<PyDocument>() {
        let d = d.get();
        return document(
            d.id.clone(),
            d.title.clone(),
            d.text.clone(),
            d.metadata.as_ref().map(|m| m.bind(item.py())),
        );
    }
    if let Ok(d) = item.downcast::<PyDict>() {
        for key in d.keys() {
            let known = key
                .extract::<String>()
                .is_ok_and(|k| DOCUMENT_KEYS.contains(&k.as_str()));
            if !known {
                return Err(PyTypeError::new_err(format!(
                    "unknown document key {}: a document dict has 'id' (or '_id'), 'text', and \
                     optionally 'title' and 'metadata'",
                    key.repr()?
                )));
            }
        }
        let id = match d.get_item("id")? {
            Some(v) => v,
            None => d.get_item("_id")?.ok_or_else(|| {
                PyTypeError::new_err("a document dict needs an 'id' (or '_id') key")
            })?,
        };
        let id: String = id.extract()?;
        let text: String = d
            .get_item("text")?
            .ok_or_else(|| PyTypeError::new_err("a document dict needs a 'text' key"))?
            .extract()?;
        let title: String = match d.get_item("title")? {
            Some(v) if !v.is_none() => v.extract()?,
            _ => String::new(),
        };
        let meta = d.get_item("metadata")?;
        return document(id, title, text, meta.as_ref());
    }
    if let Ok(t) = item.downcast::<PyTuple>() {
        return match t.len() {
            2 => document(
                t.get_item(0)?.extract()?,
                String::new(),
                t.get_item(1)?.extract()?,
                None,
            ),
            3 => Err(PyTypeError::new_err(
                "a 3-tuple document is ambiguous ((id, text, title) or (id, title, text)?): use \
                 keel.Document(id, text, title) or a dict {'id': ..., 'text': ..., 'title': ...}",
            )),
            _ => Err(PyTypeError::new_err(
                "a document tuple is (id, text); with a title use keel.Document(id, text, title)",
            )),
        };
    }
    Err(PyTypeError::new_err(format!(
        "a document is a keel.Document, a dict with 'id', 'text', 'title', 'metadata', or an \
         (id, text) tuple, not {}",
        item.get_type().name()?
    )))
}

#[pymethods]
impl PyBm25Index {
    #[new]
    #[pyo3(signature = (k1=None, b=None, *, language=None, stemming=None, stopwords=None))]
    fn new(
        k1: Option<f32>,
        b: Option<f32>,
        language: Option<&str>,
        stemming: Option<bool>,
        stopwords: Option<bool>,
    ) -> PyResult<Self> {
        // None: the core's default (Bm25Config::default()).
        let d = Bm25Config::default();
        let config = Bm25Config {
            k1: k1.unwrap_or(d.k1),
            b: b.unwrap_or(d.b),
            analyzer: rag::AnalyzerConfig {
                language: language.map_or(d.analyzer.language, str::to_owned),
                stemming: stemming.unwrap_or(d.analyzer.stemming),
                stopwords: stopwords.unwrap_or(d.analyzer.stopwords),
            },
        };
        Ok(Self {
            inner: Arc::new(Bm25Index::new(config).map_err(rag_err)?),
        })
    }

    /// Reopens an index saved with `save`.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.traced(|| Bm25Index::open(&path)).map_err(rag_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Writes the index to `path` atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.traced(|| self.inner.save(&path)).map_err(rag_err)
    }

    #[getter]
    fn k1(&self) -> f32 {
        self.inner.config().k1
    }
    #[getter]
    fn b(&self) -> f32 {
        self.inner.config().b
    }
    #[getter]
    fn language(&self) -> &str {
        &self.inner.config().analyzer.language
    }
    #[getter]
    fn stemming(&self) -> bool {
        self.inner.config().analyzer.stemming
    }
    #[getter]
    fn stopwords(&self) -> bool {
        self.inner.config().analyzer.stopwords
    }
    /// Distinct terms in the index.
    #[getter]
    fn num_terms(&self) -> usize {
        self.inner.stats().terms
    }

    /// Adds a document; raises DuplicateDocumentError if `id` is indexed.
    #[pyo3(signature = (id, text, title="", metadata=None))]
    fn add(
        &self,
        py: Python<'_>,
        id: String,
        text: String,
        title: &str,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let doc = document(id, title.to_owned(), text, metadata)?;
        py.traced(|| self.inner.add(doc)).map_err(rag_err)
    }

    /// Adds documents (`keel.Document`s, dicts with id/text/title/metadata, or `(id, text)`
    /// pairs), analysing them on up to `threads` threads (0 = all cores; lowered to the core
    /// count; above 1024 an error); adds none if an id is indexed or repeated.
    #[pyo3(signature = (docs, threads=None))]
    fn add_many(
        &self,
        py: Python<'_>,
        docs: &Bound<'_, PyAny>,
        threads: Option<i128>,
    ) -> PyResult<()> {
        // None: the core's default (rag::DEFAULT_THREADS, one per core).
        let threads = threads.map_or(Ok(rag::DEFAULT_THREADS), |t| usize_arg("threads", t))?;
        let mut batch = Vec::new();
        for item in docs.try_iter()? {
            batch.push(document_of(&item?)?);
        }
        py.traced(|| self.inner.add_many_threads(batch, threads))
            .map_err(rag_err)
    }

    /// Replaces a document, or adds it.
    #[pyo3(signature = (id, text, title="", metadata=None))]
    fn update(
        &self,
        py: Python<'_>,
        id: String,
        text: String,
        title: &str,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let doc = document(id, title.to_owned(), text, metadata)?;
        py.traced(|| self.inner.update(doc)).map_err(rag_err)
    }

    /// Deletes a document; returns whether it was indexed.
    fn delete(&self, py: Python<'_>, id: String) -> bool {
        py.traced(|| self.inner.delete(&id))
    }

    /// The `k` best hits for `query` whose metadata passes `filter`, best first.
    #[pyo3(signature = (query, k=rag::DEFAULT_TOP_K as i128, filter=None))]
    fn search(
        &self,
        py: Python<'_>,
        query: String,
        k: i128,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyHit>> {
        let k = usize_arg("k", k)?;
        let filter = filter_of(filter)?;
        let hits = py.traced(|| self.inner.search(&query, k, filter.as_ref()));
        Ok(hits_to_py(hits))
    }

    /// `search` for each query, on up to `threads` threads (0 = all cores; lowered to the core
    /// count; above 1024 an error).
    #[pyo3(signature = (queries, k=rag::DEFAULT_TOP_K as i128, filter=None, threads=None))]
    fn search_many(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        k: i128,
        filter: Option<&Bound<'_, PyAny>>,
        threads: Option<i128>,
    ) -> PyResult<Vec<Vec<PyHit>>> {
        let k = usize_arg("k", k)?;
        // None: the core's default (rag::DEFAULT_THREADS, one per core).
        let threads = threads.map_or(Ok(rag::DEFAULT_THREADS), |t| usize_arg("threads", t))?;
        let filter = filter_of(filter)?;
        let all = py
            .traced(|| {
                self.inner
                    .search_many(&queries, k, filter.as_ref(), threads)
            })
            .map_err(rag_err)?;
        Ok(all.into_iter().map(hits_to_py).collect())
    }

    /// Number of documents.
    fn __len__(&self) -> usize {
        self.inner.stats().documents
    }

    fn __contains__(&self, id: &str) -> bool {
        self.inner.contains(id)
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "BM25Index(k1={}, b={}, language={:?}, stemming={}, stopwords={}, documents={})",
            c.k1,
            c.b,
            c.analyzer.language,
            c.analyzer.stemming,
            c.analyzer.stopwords,
            self.inner.stats().documents
        )
    }
}

// ---------------------------------------------------------------------------------------------
// fusion

fn candidates_of(list: &Bound<'_, PyAny>) -> PyResult<Vec<Candidate>> {
    let mut out = Vec::new();
    for item in list.try_iter()? {
        let item = item?;
        if let Ok(h) = item.downcast::<PyHit>() {
            let h = h.get();
            out.push(Candidate {
                passage: Arc::clone(&h.hit.passage),
                score: h.hit.score as f32,
            });
        } else {
            let (id, score): (String, f32) = item.extract().map_err(|_| {
                PyTypeError::new_err(
                    "a ranked list holds keel.Hit objects or (doc_id, score) tuples",
                )
            })?;
            out.push(Candidate {
                passage: Arc::new(Passage::whole(Document::new(id, ""))),
                score,
            });
        }
    }
    Ok(out)
}

/// Fuses ranked lists `{retriever name: [Hit or (doc_id, score), ...]}` into `limit` hits.
/// `method` is "rrf" (constant `k`, None: 60), "minmax" or "zscore" (normalised weighted sum,
/// which takes no `k`); `weights` maps a retriever name to its weight (default 1).
#[pyfunction]
#[pyo3(signature = (lists, *, method=None, k=None, weights=None, limit=rag::DEFAULT_TOP_K as i128))]
pub fn fuse(
    py: Python<'_>,
    lists: &Bound<'_, PyDict>,
    method: Option<&str>,
    k: Option<f64>,
    weights: Option<std::collections::HashMap<String, f64>>,
    limit: i128,
) -> PyResult<Vec<PyHit>> {
    let limit = usize_arg("limit", limit)?;
    // None: the core's default method (Fusion::default(), rrf).
    let fusion = method
        .map_or(Ok(Fusion::default()), str::parse::<Fusion>)
        .and_then(|f| f.with_rrf_k(k))
        .map_err(rag_err)?;
    let weights = weights.unwrap_or_default();
    let mut ranked = Vec::with_capacity(lists.len());
    for (name, list) in lists.iter() {
        let retriever: String = name.extract()?;
        let weight = weights
            .get(&retriever)
            .copied()
            .unwrap_or(RankedList::DEFAULT_WEIGHT);
        ranked.push(RankedList {
            retriever,
            weight,
            candidates: candidates_of(&list)?,
        });
    }
    let hits = py
        .traced(|| rag::fuse(&ranked, fusion, limit))
        .map_err(rag_err)?;
    Ok(hits_to_py(hits))
}

/// Reciprocal rank fusion: `fuse(lists, method="rrf", ...)`.
#[pyfunction]
#[pyo3(signature = (lists, *, k=None, weights=None, limit=rag::DEFAULT_TOP_K as i128))]
pub fn rrf(
    py: Python<'_>,
    lists: &Bound<'_, PyDict>,
    k: Option<f64>,
    weights: Option<std::collections::HashMap<String, f64>>,
    limit: i128,
) -> PyResult<Vec<PyHit>> {
    fuse(py, lists, Some("rrf"), k, weights, limit)
}

// ---------------------------------------------------------------------------------------------
// evaluation

type PyQrels = std::collections::HashMap<String, std::collections::HashMap<String, i32>>;
type PyRun = std::collections::HashMap<String, std::collections::HashMap<String, f64>>;

/// The metrics named, or the core's defaults for None.
fn metrics_of(names: Option<Vec<String>>) -> PyResult<Vec<Metric>> {
    let Some(names) = names else {
        return Ok(Metric::DEFAULTS.to_vec());
    };
    names
        .iter()
        .map(|n| Metric::parse(n).map_err(rag_err))
        .collect()
}

fn run_of(run: PyRun) -> rag::Run {
    run.into_iter()
        .map(|(q, docs)| (q, docs.into_iter().collect()))
        .collect()
}

/// Mean of each metric over the queries in both `run` and `qrels` (trec_eval definitions).
/// `qrels`: {query id: {doc id: grade}}; `run`: {query id: {doc id: score}}.
#[pyfunction]
#[pyo3(signature = (qrels, run, metrics=None))]
pub fn evaluate(
    py: Python<'_>,
    qrels: PyQrels,
    run: PyRun,
    metrics: Option<Vec<String>>,
) -> PyResult<std::collections::HashMap<String, f64>> {
    let metrics = metrics_of(metrics)?;
    let e = py
        .traced(|| rag::evaluate(&qrels, &run_of(run), &metrics))
        .map_err(rag_err)?;
    Ok(e.metrics.iter().map(Metric::name).zip(e.mean).collect())
}

/// Each query's metrics: {query id: {metric: value}}.
#[pyfunction]
#[pyo3(signature = (qrels, run, metrics=None))]
pub fn evaluate_per_query(
    py: Python<'_>,
    qrels: PyQrels,
    run: PyRun,
    metrics: Option<Vec<String>>,
) -> PyResult<std::collections::HashMap<String, std::collections::HashMap<String, f64>>> {
    let metrics = metrics_of(metrics)?;
    let e = py
        .traced(|| rag::evaluate(&qrels, &run_of(run), &metrics))
        .map_err(rag_err)?;
    let names: Vec<String> = e.metrics.iter().map(Metric::name).collect();
    Ok(e.per_query
        .into_iter()
        .map(|(q, values)| (q, names.iter().cloned().zip(values).collect()))
        .collect())
}

/// Loads a BEIR directory: `(corpus, queries, qrels)` with corpus a list of
/// {"id", "title", "text", "metadata"} dicts, queries {id: text} (only those judged in `split`)
/// and qrels {query id: {doc id: grade}}.
#[pyfunction]
#[pyo3(signature = (path, split="test"))]
pub fn load_beir<'py>(
    py: Python<'py>,
    path: PathBuf,
    split: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let ds = py
        .traced(|| rag::load_beir(&path, split))
        .map_err(rag_err)?;
    let corpus = PyList::empty(py);
    for d in ds.corpus {
        let item = PyDict::new(py);
        item.set_item("id", d.id)?;
        item.set_item("title", d.title)?;
        item.set_item("text", d.text)?;
        item.set_item(
            "metadata",
            json_loads(py, &rag::metadata_to_json(&d.metadata))?,
        )?;
        corpus.append(item)?;
    }
    let queries = PyDict::new(py);
    for (id, text) in ds.queries {
        queries.set_item(id, text)?;
    }
    let qrels = ds.qrels.into_pyobject(py)?;
    PyTuple::new(
        py,
        [corpus.into_any(), queries.into_any(), qrels.into_any()],
    )
}
