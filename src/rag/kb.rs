//! A knowledge base in one call: a folder of text, Markdown and HTML files becomes a persisted,
//! incrementally updated hybrid index that answers `search(query, k)` with citable hits.
//!
//! It is a [`Pipeline`] assembled with fixed parts: a [`Chunker`] (chars), a [`Bm25Index`],
//! with an embedder a dense index fused with BM25 by reciprocal rank fusion, and with a
//! reranker a rerank of the best `rerank_top` fused hits. Without an embedder it is BM25 alone.
//!
//! Files: `*.txt`, `*.text`, `*.md`, `*.markdown` are indexed as they are (so a hit's offsets
//! index the file's own text); `*.html`, `*.htm` are converted to plain text with `html2text`
//! (offsets then index that text). Hidden files and folders (a name starting with `.`) and
//! other extensions are skipped; symbolic links to folders are not followed. A document's id
//! is its path relative to the indexed folder, with `/` separators; its title is the first
//! Markdown `# ` heading, the HTML `<title>`, or else the file name without its extension; its
//! metadata is `{"path": id, "format": "txt" | "md" | "html"}`.
//!
//! Incremental re-index: the knowledge base keeps a SHA-256 of each indexed file's bytes (in
//! its manifest, with the folder it came from). [`KnowledgeBase::index_folder`] reads every
//! file, skips those whose hash is unchanged, re-chunks and re-embeds only new and changed
//! ones, and deletes the documents of files that are gone from that folder.
//!
//! Persistence: with a path, the knowledge base is a directory holding `manifest.kb`,
//! `bm25.idx` and (with an embedder) `dense.idx`, all written atomically in keel's index-file
//! codec (checksummed). `index_folder` saves at its end; [`KnowledgeBase::add`] and
//! [`KnowledgeBase::delete`] change memory only until [`KnowledgeBase::save`]. Reopening reads
//! the files back without re-indexing; the chunking stored in the manifest is used unless other
//! chunking is asked for, which is an error (re-index into a new path instead).
//!
//! ```
//! use keel::rag::KnowledgeBase;
//!
//! # fn main() -> Result<(), keel::rag::RagError> {
//! # let root = std::env::temp_dir().join(format!("keel-doc-kb-{}", std::process::id()));
//! # let docs = root.join("docs");
//! # std::fs::create_dir_all(&docs).unwrap();
//! # std::fs::write(docs.join("wings.md"), "# Wings\n\nLift grows with incidence.").unwrap();
//! // `.embedder(Arc::new(embedder))` for hybrid search, `.reranker(...)` to rerank.
//! let kb = KnowledgeBase::builder().path(root.join("kb")).open()?;
//! let report = kb.index_folder(&docs)?; // run again later: only changed files are re-indexed
//! assert_eq!(report.added, 1);
//! let hits = kb.search("what makes lift?", 5)?;
//! assert_eq!((hits[0].doc_id(), hits[0].passage.title.as_str()), ("wings.md", "Wings"));
//! # std::fs::remove_dir_all(&root).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! Invariants: searches run concurrently with each other and with indexing (each index has its
//! own lock); changes (index, add, delete, save) take turns; errors name paths and settings,
//! never document or query text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::chunk::Chunker;
use super::cite::{Document, Hit, Metadata};
use super::codec;
use super::filter::Filter;
use super::fuse::Fusion;
use super::lexical::{Bm25Config, Bm25Index};
use super::pipeline::{Pipeline, Reranker, Retriever};
use super::RagError;
#[cfg(feature = "neural")]
use super::{dense::DenseIndex, embed::Embedder, Precision};

const MANIFEST: &str = "manifest.kb";
const BM25_FILE: &str = "bm25.idx";
#[cfg(feature = "neural")]
const DENSE_FILE: &str = "dense.idx";
const MANIFEST_MAGIC: &[u8; 8] = b"KEELKBM1";
/// Passages embedded per indexing step (files are grouped until they reach this many).
const STEP_PASSAGES: usize = 64;

/// Settings of a [`KnowledgeBase`]; `None` takes the stored value when reopening, else the
/// default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnowledgeBaseOptions {
    /// Largest chunk in chars (default [`KnowledgeBase::DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: Option<usize>,
    /// Largest overlap between consecutive chunks in chars (default
    /// [`KnowledgeBase::DEFAULT_CHUNK_OVERLAP`]).
    pub chunk_overlap: Option<usize>,
    /// Candidates each retriever contributes to fusion (default
    /// [`KnowledgeBase::DEFAULT_CANDIDATES`]; at least the `k` asked for).
    pub candidates: Option<usize>,
    /// Fused hits the reranker reorders (default [`KnowledgeBase::DEFAULT_RERANK_TOP`]).
    pub rerank_top: Option<usize>,
}

/// What one [`KnowledgeBase::index_folder`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Files indexed for the first time.
    pub added: usize,
    /// Files whose content changed, re-chunked and re-embedded.
    pub updated: usize,
    /// Files gone from the folder, whose documents were deleted.
    pub removed: usize,
    /// Files whose content hash was unchanged (not touched).
    pub unchanged: usize,
    /// Passages (chunks) indexed by this call: those of added and updated files.
    pub chunks: usize,
}

/// Progress of [`KnowledgeBase::index_folder_with_progress`]: `done` of `total` files handled
/// (unchanged files count as handled at once). Reported once with `done == 0` when the folder
/// has been read, then after each indexing step, the last time with `done == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexProgress {
    /// Files handled so far.
    pub done: usize,
    /// Files found.
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileRecord {
    /// The folder it was indexed from (as given, made absolute).
    folder: String,
    /// SHA-256 of the file's bytes, hex.
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Manifest {
    chunk_size: usize,
    chunk_overlap: usize,
    /// The embedding dimension, when built with an embedder.
    dense_dim: Option<usize>,
    /// Indexed files by document id.
    files: BTreeMap<String, FileRecord>,
}

/// A persisted hybrid retrieval index over folders of documents: see the module docs.
pub struct KnowledgeBase {
    dir: Option<PathBuf>,
    bm25: Arc<Bm25Index>,
    #[cfg(feature = "neural")]
    dense: Option<Arc<DenseIndex>>,
    pipeline: Pipeline,
    reranked: bool,
    /// The manifest; its lock also serialises changes.
    state: Mutex<Manifest>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("path", &self.dir)
            .field("hybrid", &self.is_hybrid())
            .field("reranked", &self.reranked)
            .finish()
    }
}

/// Builds a [`KnowledgeBase`]: `KnowledgeBase::builder().path(p).embedder(e).open()`.
#[derive(Default)]
pub struct KnowledgeBaseBuilder {
    path: Option<PathBuf>,
    #[cfg(feature = "neural")]
    embedder: Option<Arc<Embedder>>,
    reranker: Option<Arc<dyn Reranker>>,
    options: KnowledgeBaseOptions,
}

impl KnowledgeBaseBuilder {
    /// Persists in (and reopens from) the directory `path`.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Adds dense retrieval with `embedder`, fused with BM25 by RRF.
    #[cfg(feature = "neural")]
    pub fn embedder(mut self, embedder: Arc<Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Reranks the best fused hits with `reranker` (e.g. a [`super::CrossEncoder`]).
    pub fn reranker(mut self, reranker: Arc<dyn Reranker>) -> Self {
        self.reranker = Some(reranker);
        self
    }

    /// Chunking, candidates and rerank depth.
    pub fn options(mut self, options: KnowledgeBaseOptions) -> Self {
        self.options = options;
        self
    }

    /// Opens the knowledge base at the path (creating the directory if needed), or an
    /// in-memory one without a path.
    pub fn open(self) -> Result<KnowledgeBase, RagError> {
        KnowledgeBase::open_with(self)
    }
}

fn io_err(path: &Path, e: &std::io::Error) -> RagError {
    RagError::Io(format!("{}: {}", path.display(), e.kind()))
}

fn source_err(path: &Path, reason: impl Into<String>) -> RagError {
    RagError::Source {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn check_setting(
    name: &str,
    given: Option<usize>,
    stored: usize,
    dir: &Path,
) -> Result<(), RagError> {
    match given {
        Some(v) if v != stored => Err(RagError::InvalidConfig(format!(
            "the knowledge base {} was built with {name} = {stored}, not {v}: re-index into a new path to change it",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

impl KnowledgeBase {
    /// Default largest chunk, in chars.
    pub const DEFAULT_CHUNK_SIZE: usize = 1000;
    /// Default overlap between chunks, in chars.
    pub const DEFAULT_CHUNK_OVERLAP: usize = 100;
    /// Default candidates per retriever.
    pub const DEFAULT_CANDIDATES: usize = 100;
    /// Default number of fused hits reranked.
    pub const DEFAULT_RERANK_TOP: usize = 20;
    /// The file extensions indexed (lowercase).
    pub const EXTENSIONS: [&'static str; 6] = ["txt", "text", "md", "markdown", "html", "htm"];

    /// A builder: path, embedder, reranker, options.
    pub fn builder() -> KnowledgeBaseBuilder {
        KnowledgeBaseBuilder::default()
    }

    /// An in-memory BM25-only knowledge base with default settings.
    pub fn in_memory() -> Result<Self, RagError> {
        Self::builder().open()
    }

    fn open_with(b: KnowledgeBaseBuilder) -> Result<Self, RagError> {
        let _span = tracing::info_span!("rag.kb.open").entered();
        let o = &b.options;
        #[cfg(feature = "neural")]
        let dim = b.embedder.as_ref().map(|e| e.dim());
        #[cfg(not(feature = "neural"))]
        let dim: Option<usize> = None;
        let stored = match &b.path {
            Some(dir) => Self::read_dir(dir)?,
            None => None,
        };
        let mut bm25 = None;
        let manifest = match (&b.path, stored) {
            (Some(dir), Some(m)) => {
                check_setting("chunk_size", o.chunk_size, m.chunk_size, dir)?;
                check_setting("chunk_overlap", o.chunk_overlap, m.chunk_overlap, dir)?;
                match (m.dense_dim, dim) {
                    (Some(d), None) => {
                        return Err(RagError::InvalidConfig(format!(
                            "the knowledge base {} was built with an embedder (dimension {d}): open it with one",
                            dir.display()
                        )))
                    }
                    (None, Some(_)) => {
                        return Err(RagError::InvalidConfig(format!(
                            "the knowledge base {} was built without an embedder: index into a new path for hybrid search",
                            dir.display()
                        )))
                    }
                    _ => {}
                }
                bm25 = Some(Bm25Index::open(&dir.join(BM25_FILE))?);
                m
            }
            _ => Manifest {
                chunk_size: o.chunk_size.unwrap_or(Self::DEFAULT_CHUNK_SIZE),
                chunk_overlap: o.chunk_overlap.unwrap_or(Self::DEFAULT_CHUNK_OVERLAP),
                dense_dim: dim,
                files: BTreeMap::new(),
            },
        };
        let chunker = Chunker::new(manifest.chunk_size, manifest.chunk_overlap)?;
        let candidates = o.candidates.unwrap_or(Self::DEFAULT_CANDIDATES);
        if candidates == 0 {
            return Err(RagError::InvalidConfig(
                "candidates must be at least 1 (got 0)".into(),
            ));
        }
        let rerank_top = o.rerank_top.unwrap_or(Self::DEFAULT_RERANK_TOP);
        if rerank_top == 0 {
            return Err(RagError::InvalidConfig(
                "rerank_top must be at least 1 (got 0)".into(),
            ));
        }
        let bm25 = Arc::new(match bm25 {
            Some(i) => i,
            None => Bm25Index::new(Bm25Config::default())?,
        });
        let mut pipeline = Pipeline::new()
            .with_chunker(chunker)
            .with_candidates(candidates)
            .with_fusion(Fusion::default())
            .with_retriever(Arc::clone(&bm25) as Arc<dyn Retriever>, 1.0)?;
        #[cfg(feature = "neural")]
        let dense = match &b.embedder {
            None => None,
            Some(e) => {
                let file = b.path.as_ref().map(|d| d.join(DENSE_FILE));
                let index = match file {
                    Some(f) if f.is_file() => DenseIndex::open(&f, Some(Arc::clone(e)))?,
                    _ => DenseIndex::new(Arc::clone(e), Precision::F32),
                };
                let index = Arc::new(index);
                pipeline =
                    pipeline.with_retriever(Arc::clone(&index) as Arc<dyn Retriever>, 1.0)?;
                Some(index)
            }
        };
        let reranked = b.reranker.is_some();
        if let Some(r) = b.reranker {
            pipeline = pipeline.with_reranker(r, rerank_top);
        }
        let kb = Self {
            dir: b.path,
            bm25,
            #[cfg(feature = "neural")]
            dense,
            pipeline,
            reranked,
            state: Mutex::new(manifest),
        };
        if let Some(dir) = &kb.dir {
            if !dir.join(MANIFEST).is_file() {
                let state = kb.lock();
                kb.save_locked(&state)?;
            }
        }
        Ok(kb)
    }

    /// The stored manifest of the knowledge base directory, if it has one.
    fn read_dir(dir: &Path) -> Result<Option<Manifest>, RagError> {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(RagError::InvalidConfig(format!(
                    "knowledge base path {} is not a directory",
                    dir.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| io_err(dir, &e))?;
                return Ok(None);
            }
            Err(e) => return Err(io_err(dir, &e)),
        }
        let file = dir.join(MANIFEST);
        if !file.is_file() {
            return Ok(None);
        }
        let json = codec::load(&file, MANIFEST_MAGIC, "knowledge base manifest", |r| {
            r.string()
        })?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| codec::corrupt(format!("{}: {e}", file.display())))
    }

    fn lock(&self) -> MutexGuard<'_, Manifest> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The directory the knowledge base persists in, if any.
    pub fn path(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether dense retrieval is fused with BM25.
    pub fn is_hybrid(&self) -> bool {
        #[cfg(feature = "neural")]
        return self.dense.is_some();
        #[cfg(not(feature = "neural"))]
        return false;
    }

    /// Whether hits are reranked.
    pub fn is_reranked(&self) -> bool {
        self.reranked
    }

    /// Documents indexed.
    pub fn documents(&self) -> usize {
        self.bm25.stats().documents
    }

    /// Passages (chunks) indexed.
    pub fn passages(&self) -> usize {
        self.bm25.stats().passages
    }

    /// Ids of the documents indexed from files, with the content hash kept for each.
    pub fn files(&self) -> Vec<(String, String)> {
        self.lock()
            .files
            .iter()
            .map(|(id, r)| (id.clone(), r.sha256.clone()))
            .collect()
    }

    /// Writes the indexes and the manifest (no-op without a path).
    pub fn save(&self) -> Result<(), RagError> {
        let state = self.lock();
        self.save_locked(&state)
    }

    fn save_locked(&self, state: &Manifest) -> Result<(), RagError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let _span = tracing::info_span!("rag.kb.save").entered();
        // Indexes first, manifest last: a crash in between leaves a manifest that at worst
        // re-indexes some files next time.
        self.bm25.save(&dir.join(BM25_FILE))?;
        #[cfg(feature = "neural")]
        if let Some(d) = &self.dense {
            d.save(&dir.join(DENSE_FILE))?;
        }
        let json = serde_json::to_string(state)
            .map_err(|e| RagError::Io(format!("manifest encoding: {e}")))?;
        codec::save(&dir.join(MANIFEST), MANIFEST_MAGIC, |w| w.string(&json))
    }

    /// Adds or replaces a document (not tied to a file; kept until deleted). Call
    /// [`Self::save`] to persist it.
    pub fn add(&self, doc: Document) -> Result<usize, RagError> {
        let _state = self.lock();
        self.upsert(vec![doc])
    }

    /// Deletes a document; returns whether it was indexed. Call [`Self::save`] to persist it.
    pub fn delete(&self, doc_id: &str) -> Result<bool, RagError> {
        let mut state = self.lock();
        state.files.remove(doc_id);
        self.pipeline.delete(doc_id)
    }

    /// Chunks and indexes documents; returns the passages indexed.
    fn upsert(&self, docs: Vec<Document>) -> Result<usize, RagError> {
        let mut passages = Vec::new();
        for d in docs {
            let id = d.id.clone();
            let p = self.pipeline.passages(d);
            if p.is_empty() {
                // An empty document replaces whatever the id held with nothing.
                self.pipeline.delete(&id)?;
            }
            passages.extend(p);
        }
        let n = passages.len();
        if n > 0 {
            self.pipeline.upsert_passages(passages)?;
        }
        Ok(n)
    }

    /// The `k` best hits for `query`, best first. A hit's score is BM25's score when BM25 is
    /// alone, the RRF score (`sum of 1 / (60 + rank)`) when hybrid, and the reranker's score
    /// for reranked hits. `k` must be at least 1.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, RagError> {
        self.search_filtered(query, k, None)
    }

    /// [`Self::search`] restricted to passages whose metadata pass `filter`.
    pub fn search_filtered(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Hit>, RagError> {
        if k == 0 {
            return Err(RagError::InvalidConfig(
                "k must be at least 1 (got 0)".into(),
            ));
        }
        let _span = tracing::info_span!("rag.kb.search", rag.k = k).entered();
        let mut hits = self.pipeline.search(query, k, filter)?;
        if !self.is_hybrid() && !self.reranked {
            // One list fused alone: report BM25's own score (the order is the same).
            for h in &mut hits {
                if let [s] = h.sources.as_slice() {
                    h.score = f64::from(s.score);
                }
            }
        }
        Ok(hits)
    }

    /// Indexes the folder's txt / Markdown / HTML files incrementally: see the module docs.
    pub fn index_folder(&self, folder: impl AsRef<Path>) -> Result<IndexReport, RagError> {
        self.index_folder_with_progress(folder, &mut |_| true)
    }

    /// [`Self::index_folder`], reporting progress to `progress`; returning `false` from it
    /// stops indexing with [`RagError::Cancelled`] (what was indexed so far is kept and saved).
    ///
    /// Every file is read and hashed before anything changes, so a missing folder or an
    /// unreadable or non-UTF-8 file ([`RagError::Source`], naming it) leaves the knowledge
    /// base untouched.
    pub fn index_folder_with_progress(
        &self,
        folder: impl AsRef<Path>,
        progress: &mut dyn FnMut(IndexProgress) -> bool,
    ) -> Result<IndexReport, RagError> {
        let folder = folder.as_ref();
        let _span = tracing::info_span!("rag.kb.index_folder").entered();
        let root = folder_root(folder)?;
        let root_key = root.display().to_string();
        let mut files = Vec::new();
        walk(&root, &root, &mut files)?;
        let total = files.len();

        let mut state = self.lock();
        let mut report = IndexReport::default();
        let mut todo: Vec<(String, String, Document, bool)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, path) in files {
            let bytes =
                std::fs::read(&path).map_err(|e| source_err(&path, e.kind().to_string()))?;
            let sha = hex(&Sha256::digest(&bytes));
            seen.insert(id.clone());
            match state.files.get(&id) {
                Some(r) if r.sha256 == sha && r.folder == root_key => {
                    report.unchanged += 1;
                    continue;
                }
                prev => {
                    let doc = document(&id, &path, bytes)?;
                    todo.push((id, sha, doc, prev.is_some()));
                }
            }
        }
        let gone: Vec<String> = state
            .files
            .iter()
            .filter(|(id, r)| r.folder == root_key && !seen.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();

        let mut done = report.unchanged;
        let mut result = Ok(());
        if !progress(IndexProgress { done: 0, total }) {
            result = Err(RagError::Cancelled { done: 0, total });
        } else if done > 0 && !progress(IndexProgress { done, total }) {
            result = Err(RagError::Cancelled { done, total });
        }
        if result.is_ok() {
            for id in &gone {
                self.pipeline.delete(id)?;
                state.files.remove(id);
                report.removed += 1;
            }
        }
        let mut todo = todo.into_iter().peekable();
        while result.is_ok() && todo.peek().is_some() {
            let mut step = Vec::new();
            let mut passages = Vec::new();
            for (id, sha, doc, existed) in todo.by_ref() {
                let p = self.pipeline.passages(doc);
                if p.is_empty() {
                    self.pipeline.delete(&id)?;
                }
                passages.extend(p);
                step.push((id, sha, existed));
                if passages.len() >= STEP_PASSAGES {
                    break;
                }
            }
            report.chunks += passages.len();
            if !passages.is_empty() {
                self.pipeline.upsert_passages(passages)?;
            }
            for (id, sha, existed) in step {
                if existed {
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
                done += 1;
                state.files.insert(
                    id,
                    FileRecord {
                        folder: root_key.clone(),
                        sha256: sha,
                    },
                );
            }
            if !progress(IndexProgress { done, total }) {
                result = Err(RagError::Cancelled { done, total });
            }
        }
        self.save_locked(&state)?;
        result.map(|()| report)
    }
}

/// The folder made absolute, or `RagError::Source` if it is missing or not a folder.
fn folder_root(folder: &Path) -> Result<PathBuf, RagError> {
    match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(source_err(folder, "not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(source_err(folder, "no such folder"))
        }
        Err(e) => return Err(source_err(folder, e.kind().to_string())),
    }
    // Rebuilt from its components: "docs", "docs/" and "./docs" name the same folder.
    std::path::absolute(folder)
        .map(|p| p.components().collect())
        .map_err(|e| source_err(folder, e.kind().to_string()))
}

fn extension(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    KnowledgeBase::EXTENSIONS
        .iter()
        .find(|e| **e == ext)
        .copied()
}

/// The indexable files under `dir`, as (document id, path), sorted by id.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), RagError> {
    let entries = std::fs::read_dir(dir).map_err(|e| source_err(dir, e.kind().to_string()))?;
    let mut list = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| source_err(dir, e.kind().to_string()))?;
        list.push(entry);
    }
    list.sort_by_key(|e| e.file_name());
    for entry in list {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| source_err(&path, e.kind().to_string()))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        // A symbolic link counts when it leads to a file.
        if !(kind.is_file() || (kind.is_symlink() && path.is_file())) || extension(&path).is_none()
        {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let Some(id) = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
        else {
            return Err(source_err(&path, "the file name is not UTF-8"));
        };
        out.push((id.join("/"), path));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The document a file becomes: see the module docs.
fn document(id: &str, path: &Path, bytes: Vec<u8>) -> Result<Document, RagError> {
    let ext = extension(path).unwrap_or("txt");
    let text = String::from_utf8(bytes).map_err(|e| {
        source_err(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (format, title, text) = match ext {
        "md" | "markdown" => ("md", markdown_title(&text), text),
        "html" | "htm" => {
            let title = html_title(&text);
            ("html", title, html_to_text(path, &text)?)
        }
        _ => ("txt", None, text),
    };
    let mut metadata = Metadata::new();
    metadata.insert("path".into(), id.into());
    metadata.insert("format".into(), format.into());
    Ok(Document {
        id: id.to_owned(),
        title: title.unwrap_or(stem),
        text,
        metadata,
    })
}

fn markdown_title(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix("# "))
        .map(|t| t.trim().trim_end_matches('#').trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let raw = &html[open_end..close];
    let title = html_to_text(Path::new(""), raw).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// HTML to plain text (no decoration, no link footnotes, lines unwrapped).
pub fn html_to_text(path: &Path, html: &str) -> Result<String, RagError> {
    html2text::config::plain_no_decorate()
        .link_footnotes(false)
        .string_from_read(html.as_bytes(), usize::MAX / 4)
        .map_err(|e| source_err(path, format!("HTML could not be converted: {e}")))
}

#[cfg(test)]
mod tests;
