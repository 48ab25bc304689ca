//! Exact dense retrieval: cosine similarity between unit vectors by brute force.
//!
//! Vectors live in one row-major matrix (`rows × dim`, f32, or i8 with a per-row scale when
//! quantized), scanned with independent accumulators that the compiler turns into SIMD, split
//! across threads for large indexes; the `k` best rows are kept in a bounded min-heap. Scores
//! are dot products, i.e. cosines, since every stored and query vector is L2-normalised.
//!
//! Invariants: row `r` of the matrix belongs to `passages[r]`; a document's passages are
//! replaced as a whole on upsert and removed as a whole on delete; ties rank the earlier row
//! first, so results are deterministic. The file written by [`DenseIndex::save`] holds the
//! passages and the vectors, and is replaced atomically.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, RwLock};

use rayon::prelude::*;

use super::cite::{hits_from_candidates, Candidate, Hit, Passage};
use super::embed::{normalize, Embedder};
use super::filter::Filter;
use super::pipeline::Retriever;
use super::rerank::passage_text;
use super::RagError;
use crate::telemetry::metrics;

mod persist;
#[cfg(test)]
mod tests;

/// The retriever name in hits' sources.
const NAME: &str = "dense";

/// Rows per parallel task; below two blocks the scan stays on the calling thread.
const BLOCK_ROWS: usize = 8192;

/// How vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 4 bytes per dimension, exact.
    #[default]
    F32,
    /// 1 byte per dimension with a per-row scale (symmetric, max-abs): 4× less memory and
    /// bandwidth, approximate scores.
    Int8,
}

#[derive(Default)]
struct Store {
    passages: Vec<Arc<Passage>>,
    f32s: Vec<f32>,
    i8s: Vec<i8>,
    scales: Vec<f32>,
}

/// A brute-force cosine index over passage embeddings; `Send + Sync` (searches run in
/// parallel, writes are exclusive).
pub struct DenseIndex {
    embedder: Option<Arc<Embedder>>,
    dim: usize,
    precision: Precision,
    store: RwLock<Store>,
}

impl std::fmt::Debug for DenseIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseIndex")
            .field("dim", &self.dim)
            .field("precision", &self.precision)
            .field("len", &self.len())
            .finish()
    }
}

#[derive(Clone, Copy)]
struct Scored {
    score: f32,
    row: usize,
}

// "Greater" means better: higher score, then the earlier row.
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.row.cmp(&self.row))
    }
}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}

/// Keeps the `k` best of what it is offered.
struct TopK {
    k: usize,
    heap: BinaryHeap<std::cmp::Reverse<Scored>>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    fn offer(&mut self, s: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(s));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if s > worst.0 {
                worst.0 = s;
            }
        }
    }
    fn merge(mut self, other: TopK) -> TopK {
        for s in other.heap {
            self.offer(s.0);
        }
        self
    }
    fn into_sorted(self) -> Vec<Scored> {
        let mut v: Vec<Scored> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }
}

/// Dot product with 16 independent lanes so it vectorises without fast-math.
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Integer dot product of i8 vectors, widened to i32.
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Symmetric max-abs quantization of one vector: `v ≈ q * scale`.
pub fn quantize(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    out.extend(
        v.iter()
            .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

impl Store {
    fn len(&self) -> usize {
        self.passages.len()
    }

    fn push(&mut self, precision: Precision, passage: Arc<Passage>, v: &[f32]) {
        self.passages.push(passage);
        match precision {
            Precision::F32 => self.f32s.extend_from_slice(v),
            Precision::Int8 => {
                let s = quantize(v, &mut self.i8s);
                self.scales.push(s);
            }
        }
    }

    /// Drops every row whose document is in `docs`, keeping the others in order.
    fn remove_docs(&mut self, dim: usize, precision: Precision, docs: &HashSet<&str>) -> usize {
        let keep: Vec<bool> = self
            .passages
            .iter()
            .map(|p| !docs.contains(p.doc_id.as_str()))
            .collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed == 0 {
            return 0;
        }
        let mut w = 0;
        for (r, &kept) in keep.iter().enumerate() {
            if !kept {
                continue;
            }
            if w != r {
                self.passages.swap(w, r);
                match precision {
                    Precision::F32 => self.f32s.copy_within(r * dim..(r + 1) * dim, w * dim),
                    Precision::Int8 => {
                        self.i8s.copy_within(r * dim..(r + 1) * dim, w * dim);
                        self.scales[w] = self.scales[r];
                    }
                }
            }
            w += 1;
        }
        self.passages.truncate(w);
        self.f32s.truncate(if precision == Precision::F32 {
            w * dim
        } else {
            0
        });
        self.i8s.truncate(if precision == Precision::Int8 {
            w * dim
        } else {
            0
        });
        self.scales
            .truncate(if precision == Precision::Int8 { w } else { 0 });
        removed
    }

    fn scan(
        &self,
        dim: usize,
        precision: Precision,
        q: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
        filter: Option<&Filter>,
    ) -> TopK {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.scan_avx2(dim, precision, q, rows, k, filter) };
        }
        self.scan_portable(dim, precision, q, rows, k, filter)
    }

    /// The same loop compiled for AVX2 (8 f32 lanes, 16-bit integer madd), chosen at run time
    /// so the default build still runs on any x86-64.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(
        &self,
        dim: usize,
        precision: Precision,
        q: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
        filter: Option<&Filter>,
    ) -> TopK {
        self.scan_portable(dim, precision, q, rows, k, filter)
    }

    #[inline(always)]
    fn scan_portable(
        &self,
        dim: usize,
        precision: Precision,
        q: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
        filter: Option<&Filter>,
    ) -> TopK {
        let mut top = TopK::new(k);
        let pass = |r: usize| filter.is_none_or(|f| f.matches(&self.passages[r].metadata));
        match precision {
            Precision::F32 => {
                for r in rows {
                    if pass(r) {
                        let score = dot_f32(&self.f32s[r * dim..(r + 1) * dim], q);
                        top.offer(Scored { score, row: r });
                    }
                }
            }
            Precision::Int8 => {
                let mut qi = Vec::with_capacity(dim);
                let qs = quantize(q, &mut qi);
                for r in rows {
                    if pass(r) {
                        let d = dot_i8(&self.i8s[r * dim..(r + 1) * dim], &qi);
                        let score = d as f32 * self.scales[r] * qs;
                        top.offer(Scored { score, row: r });
                    }
                }
            }
        }
        top
    }
}

impl DenseIndex {
    /// An empty index that embeds passages and queries with `embedder`.
    pub fn new(embedder: Arc<Embedder>, precision: Precision) -> Self {
        Self {
            dim: embedder.dim(),
            embedder: Some(embedder),
            precision,
            store: RwLock::new(Store::default()),
        }
    }

    /// An empty index of precomputed vectors of dimension `dim` (text search is unavailable).
    pub fn with_dim(dim: usize, precision: Precision) -> Result<Self, RagError> {
        if dim == 0 || dim > persist::MAX_DIM {
            return Err(RagError::InvalidConfig(format!(
                "dim must be between 1 and {} (got {dim})",
                persist::MAX_DIM
            )));
        }
        Ok(Self {
            embedder: None,
            dim,
            precision,
            store: RwLock::new(Store::default()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn embedder(&self) -> Result<&Embedder, RagError> {
        self.embedder.as_deref().ok_or_else(|| {
            RagError::InvalidConfig("this dense index has no embedder: pass vectors".into())
        })
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of indexed passages.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the vectors (not the passages).
    pub fn vector_bytes(&self) -> usize {
        let s = self.read();
        s.f32s.len() * 4 + s.i8s.len() + s.scales.len() * 4
    }

    /// Replaces the documents of `passages` with these passages and their vectors (one per
    /// passage, each normalised here).
    pub fn upsert_vectors(
        &self,
        passages: Vec<Passage>,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), RagError> {
        let _span =
            tracing::info_span!("rag.dense.upsert", rag.passages = passages.len() as i64).entered();
        if passages.len() != vectors.len() {
            return Err(RagError::InvalidConfig(format!(
                "{} passages but {} vectors",
                passages.len(),
                vectors.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dim) {
            return Err(RagError::InvalidConfig(format!(
                "vector of dimension {} in an index of dimension {}",
                v.len(),
                self.dim
            )));
        }
        if vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err(RagError::InvalidConfig("vectors must be finite".into()));
        }
        let docs: HashSet<&str> = passages.iter().map(|p| p.doc_id.as_str()).collect();
        let mut store = self.write();
        store.remove_docs(self.dim, self.precision, &docs);
        for (p, mut v) in passages.into_iter().zip(vectors) {
            normalize(&mut v);
            store.push(self.precision, Arc::new(p), &v);
        }
        Ok(())
    }

    /// Embeds and indexes passages (title and text), replacing their documents' old passages.
    pub fn upsert(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        let embedder = self.embedder()?;
        let texts: Vec<String> = passages.iter().map(passage_text).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        self.upsert_vectors(passages, vectors)
    }

    /// Removes a document's passages; returns whether there were any.
    pub fn delete(&self, doc_id: &str) -> bool {
        let _span = tracing::info_span!("rag.dense.delete").entered();
        let docs: HashSet<&str> = [doc_id].into_iter().collect();
        self.write().remove_docs(self.dim, self.precision, &docs) > 0
    }

    /// The `k` passages most similar to `query` (a vector of this index's dimension).
    pub fn search_vector(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        let started = metrics::stage_start();
        metrics::stage_result(
            metrics::Stage::Dense,
            started,
            self.search_vector_measured(query, k, filter),
        )
    }

    fn search_vector_measured(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        let span = tracing::info_span!(
            "rag.dense.search",
            rag.k = k as i64,
            rag.candidates = tracing::field::Empty
        )
        .entered();
        let out = self.search_vector_inner(query, k, filter);
        if let Ok(c) = &out {
            span.record("rag.candidates", c.len() as i64);
        }
        out
    }

    fn search_vector_inner(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        if query.len() != self.dim {
            return Err(RagError::InvalidConfig(format!(
                "query of dimension {} in an index of dimension {}",
                query.len(),
                self.dim
            )));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(RagError::InvalidConfig(
                "the query vector must be finite".into(),
            ));
        }
        let mut q = query.to_vec();
        normalize(&mut q);
        let store = self.read();
        let n = store.len();
        if k == 0 || n == 0 {
            return Ok(Vec::new());
        }
        // Never more hits than rows: a huge `k` from a caller must not size the heap.
        let k = k.min(n);
        let top = if n < 2 * BLOCK_ROWS {
            store.scan(self.dim, self.precision, &q, 0..n, k, filter)
        } else {
            (0..n.div_ceil(BLOCK_ROWS))
                .into_par_iter()
                .map(|b| {
                    let rows = b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(n);
                    store.scan(self.dim, self.precision, &q, rows, k, filter)
                })
                .reduce(|| TopK::new(k), TopK::merge)
        };
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|s| Candidate {
                passage: Arc::clone(&store.passages[s.row]),
                score: s.score,
            })
            .collect())
    }

    /// The `k` passages most similar to `query` text.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        let q = self.embedder()?.embed_one(query)?;
        self.search_vector(&q, k, filter)
    }

    /// As [`Self::search`], as citable hits (one "dense" source each; see
    /// [`hits_from_candidates`]).
    pub fn search_hits(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Hit>, RagError> {
        Ok(hits_from_candidates(NAME, self.search(query, k, filter)?))
    }

    /// As [`Self::search_vector`], as citable hits.
    pub fn search_vector_hits(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Hit>, RagError> {
        Ok(hits_from_candidates(
            NAME,
            self.search_vector(query, k, filter)?,
        ))
    }
}

impl Retriever for DenseIndex {
    fn name(&self) -> &str {
        NAME
    }
    fn upsert(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        DenseIndex::upsert(self, passages)
    }
    fn delete(&self, doc_id: &str) -> Result<bool, RagError> {
        Ok(DenseIndex::delete(self, doc_id))
    }
    fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        DenseIndex::search(self, query, k, filter)
    }
}
