//! BM25 lexical search over an inverted index, with incremental add, update and delete.
//!
//! Scoring is Lucene's BM25: `idf = ln(1 + (N - df + 0.5) / (df + 0.5))` and
//! `score = sum over query terms of idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))`, where `N`,
//! `df` and `avgdl` count only live passages. A query term repeated in the query counts again.
//!
//! Invariants:
//! - scores after any sequence of adds, updates and deletes equal those of a fresh build over the
//!   same live passages: deletes only tombstone a slot, but `N`, `df` and the total length are
//!   kept exact, and tombstoned postings are skipped (and compacted away once they pile up);
//! - ranking is deterministic: score descending, then document id, then chunk id ascending, so
//!   the order never depends on insertion order;
//! - the index is `Send + Sync`: searches share a read lock, changes take the write lock.
//!
//! Each passage is indexed as its title followed by its text.

use std::cell::RefCell;
use std::collections::{BinaryHeap, HashMap};

/// The index's hash maps (terms, words, document ids): foldhash, randomly seeded per map. The
/// keys are short strings looked up on every indexed word and query term, where SipHash (the
/// std default) showed in the profile of a voice-bot turn (docs/bench-turn.md).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::cite::{hits_from_candidates, Candidate, Document, Hit, Passage};
use super::filter::Filter;
use super::pipeline::Retriever;
use super::{par, resolve_threads, RagError};

pub mod analyzer;
mod bulk;
mod persist;

use crate::telemetry::metrics;
use analyzer::{Analyzer, AnalyzerConfig};

/// Settings of a BM25 index.
#[derive(Debug, Clone, PartialEq)]
pub struct Bm25Config {
    /// Term-frequency saturation (>= 0); Lucene's default is 1.2.
    pub k1: f32,
    /// Length normalisation in [0, 1]; Lucene's default is 0.75.
    pub b: f32,
    /// How text becomes terms.
    pub analyzer: AnalyzerConfig,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Self {
            k1: 1.2,
            b: 0.75,
            analyzer: AnalyzerConfig::default(),
        }
    }
}

/// One posting: a slot holding the term `tf` times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Posting {
    pub(crate) slot: u32,
    pub(crate) tf: u32,
}

/// A live passage and its term counts (kept to undo its postings on delete).
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) passage: Arc<Passage>,
    pub(crate) terms: Vec<(u32, u32)>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Passages by slot; `None` once deleted. Slots are never reused, so postings stay sorted.
    pub(crate) slots: Vec<Option<Slot>>,
    /// Passage length in terms by slot; negative for deleted slots, so that scoring checks
    /// liveness and reads the length with one load.
    pub(crate) lens: Vec<f32>,
    /// The slots of each document's passages.
    pub(crate) by_doc: Map<String, Vec<u32>>,
    /// Term text to term id, and back.
    pub(crate) vocab: Map<String, u32>,
    pub(crate) terms: Vec<String>,
    /// Postings by term id, ascending by slot, including tombstoned slots.
    pub(crate) postings: Vec<Vec<Posting>>,
    /// Live document frequency by term id.
    pub(crate) df: Vec<u32>,
    pub(crate) live: usize,
    pub(crate) total_len: u64,
    pub(crate) dead_postings: usize,
    pub(crate) live_postings: usize,
    /// Lowercased word to term id (`u32::MAX` for a stopword): skips stemming of known words.
    word_cache: Map<String, u32>,
}

const STOP: u32 = u32::MAX;
const WORD_CACHE_LIMIT: usize = 1 << 20;

impl Inner {
    fn term_id(&mut self, analyzer: &Analyzer, lower: &str) -> u32 {
        if let Some(&id) = self.word_cache.get(lower) {
            return id;
        }
        let mut id = STOP;
        analyzer.emit_normalized(lower, &mut |term: &str| id = self.intern(term));
        if self.word_cache.len() >= WORD_CACHE_LIMIT {
            self.word_cache.clear();
        }
        self.word_cache.insert(lower.to_owned(), id);
        id
    }

    /// The id of an analysed term, added to the vocabulary if new.
    pub(crate) fn intern(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.vocab.get(term) {
            return id;
        }
        let id = self.terms.len() as u32;
        self.vocab.insert(term.to_owned(), id);
        self.terms.push(term.to_owned());
        self.postings.push(Vec::new());
        self.df.push(0);
        id
    }

    /// Fails if a passage's (doc id, chunk id) is indexed or repeated in the batch.
    fn check_new<'a>(
        &self,
        passages: impl IntoIterator<Item = &'a Passage>,
    ) -> Result<(), RagError> {
        let mut seen = std::collections::HashSet::new();
        for p in passages {
            let indexed = self.by_doc.get(&p.doc_id).is_some_and(|slots| {
                slots.iter().any(|&s| {
                    self.slots[s as usize]
                        .as_ref()
                        .is_some_and(|x| x.passage.chunk_id == p.chunk_id)
                })
            });
            if indexed || !seen.insert((p.doc_id.as_str(), p.chunk_id)) {
                return Err(RagError::DuplicateDocument);
            }
        }
        Ok(())
    }

    /// Indexes a passage whose key is known to be absent.
    fn insert(&mut self, analyzer: &Analyzer, passage: Arc<Passage>, scratch: &mut Vec<u32>) {
        scratch.clear();
        for field in [passage.title.as_str(), passage.text.as_str()] {
            analyzer.words(field, |w| {
                let id = self.term_id(analyzer, w);
                if id != STOP {
                    scratch.push(id);
                }
            });
        }
        let len = scratch.len();
        scratch.sort_unstable();
        let mut terms: Vec<(u32, u32)> = Vec::new();
        for &t in scratch.iter() {
            match terms.last_mut() {
                Some((last, tf)) if *last == t => *tf += 1,
                _ => terms.push((t, 1)),
            }
        }
        self.place(passage, terms, len);
    }

    /// Stores an analysed passage in a new slot.
    pub(crate) fn place(&mut self, passage: Arc<Passage>, terms: Vec<(u32, u32)>, len: usize) {
        let slot = self.slots.len() as u32;
        for &(t, tf) in &terms {
            self.postings[t as usize].push(Posting { slot, tf });
            self.df[t as usize] += 1;
        }
        self.live_postings += terms.len();
        self.by_doc
            .entry(passage.doc_id.clone())
            .or_default()
            .push(slot);
        self.lens.push(len as f32);
        self.total_len += len as u64;
        self.live += 1;
        self.slots.push(Some(Slot { passage, terms }));
    }

    /// Removes every passage of `doc_id`; returns how many.
    fn remove_doc(&mut self, doc_id: &str) -> usize {
        let Some(slots) = self.by_doc.remove(doc_id) else {
            return 0;
        };
        for &slot in &slots {
            if let Some(s) = self.slots[slot as usize].take() {
                for &(t, _) in &s.terms {
                    self.df[t as usize] -= 1;
                }
                self.dead_postings += s.terms.len();
                self.live_postings -= s.terms.len();
                self.total_len -= self.lens[slot as usize] as u64;
                self.lens[slot as usize] = -1.0;
                self.live -= 1;
            }
        }
        if self.dead_postings > 1024 && self.dead_postings > self.live_postings / 4 {
            self.compact_postings();
        }
        slots.len()
    }

    fn compact_postings(&mut self) {
        let slots = &self.slots;
        for list in &mut self.postings {
            list.retain(|p| slots[p.slot as usize].is_some());
        }
        self.dead_postings = 0;
    }

    fn score_into(
        &self,
        query: &[(u32, u32)],
        k1: f32,
        b: f32,
        acc: &mut Vec<f32>,
        touched: &mut Vec<u32>,
    ) {
        if self.live == 0 {
            return;
        }
        if acc.len() < self.slots.len() {
            acc.resize(self.slots.len(), 0.0);
        }
        let n = self.live as f32;
        let avgdl = (self.total_len as f64 / self.live as f64).max(f64::MIN_POSITIVE) as f32;
        let c1 = k1 * (1.0 - b);
        let c2 = k1 * b / avgdl;
        for &(t, qtf) in query {
            let df = self.df[t as usize] as f32;
            if df == 0.0 {
                continue;
            }
            let w = (1.0 + (n - df + 0.5) / (df + 0.5)).ln() * qtf as f32;
            for p in &self.postings[t as usize] {
                let s = p.slot as usize;
                let len = self.lens[s];
                if len < 0.0 {
                    continue;
                }
                let tf = p.tf as f32;
                let add = w * tf / (tf + c1 + c2 * len);
                let a = &mut acc[s];
                if *a == 0.0 {
                    touched.push(p.slot);
                }
                *a += add;
            }
        }
    }
}

thread_local! {
    /// Per-thread score accumulator and touched-slot list, reused across searches.
    static SCRATCH: RefCell<(Vec<f32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A BM25 index of passages. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Bm25Index {
    config: Bm25Config,
    analyzer: Analyzer,
    inner: RwLock<Inner>,
    /// "bm25", shared by every hit's sources.
    name: Arc<str>,
}

/// Sizes of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bm25Stats {
    /// Documents indexed.
    pub documents: usize,
    /// Passages indexed (equal to documents unless documents were chunked).
    pub passages: usize,
    /// Distinct terms seen.
    pub terms: usize,
}

fn check_config(config: &Bm25Config) -> Result<(), RagError> {
    if !(config.k1.is_finite() && config.k1 >= 0.0) {
        return Err(RagError::InvalidConfig(format!(
            "k1 must be finite and >= 0 (got {})",
            config.k1
        )));
    }
    if !(0.0..=1.0).contains(&config.b) {
        return Err(RagError::InvalidConfig(format!(
            "b must be in [0, 1] (got {})",
            config.b
        )));
    }
    Ok(())
}

/// A scored passage ordered worst-last: `a < b` when `a` ranks before `b`.
struct Ranked<'a>(f32, &'a Arc<Passage>);

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Ranked<'_> {}
impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_hits(&(self.0, self.1), &(other.0, other.1))
    }
}

fn cmp_hits(a: &(f32, &Arc<Passage>), b: &(f32, &Arc<Passage>)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0)
        .then_with(|| a.1.doc_id.cmp(&b.1.doc_id))
        .then_with(|| a.1.chunk_id.cmp(&b.1.chunk_id))
}

impl Bm25Index {
    /// An empty index.
    pub fn new(config: Bm25Config) -> Result<Self, RagError> {
        check_config(&config)?;
        let analyzer = Analyzer::new(config.analyzer.clone())?;
        Ok(Self {
            config,
            analyzer,
            inner: RwLock::new(Inner::default()),
            name: Arc::from("bm25"),
        })
    }

    pub(crate) fn from_parts(config: Bm25Config, inner: Inner) -> Result<Self, RagError> {
        let mut index = Self::new(config)?;
        index.inner = RwLock::new(inner);
        Ok(index)
    }

    /// The settings.
    pub fn config(&self) -> &Bm25Config {
        &self.config
    }

    /// The analyzer.
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    // A panic while holding the lock cannot leave the index half-changed in a way that breaks
    // memory safety, and every change is applied in one go, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a document as one passage; fails with `DuplicateDocument` if its id is indexed.
    pub fn add(&self, doc: Document) -> Result<(), RagError> {
        self.add_many(vec![doc])
    }

    /// Adds documents; fails, adding none, if an id is already indexed or repeated.
    pub fn add_many(&self, docs: Vec<Document>) -> Result<(), RagError> {
        self.add_passages(docs.into_iter().map(Passage::whole).collect())
    }

    /// Adds passages; fails, adding none, if a (doc id, chunk id) is already indexed or repeated.
    pub fn add_passages(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        let _span =
            tracing::info_span!("rag.index.add", rag.passages = passages.len() as i64).entered();
        let mut inner = self.write();
        inner.check_new(&passages)?;
        let mut scratch = Vec::new();
        for p in passages {
            inner.insert(&self.analyzer, Arc::new(p), &mut scratch);
        }
        Ok(())
    }

    /// Adds documents, analysing them on up to `threads` threads (see [`resolve_threads`]: 0 =
    /// all cores, lowered to the core count, above [`super::MAX_THREADS`] an error); the index is
    /// the same as after [`Self::add_many`]. Fails, adding none, on a duplicate id.
    pub fn add_many_threads(&self, docs: Vec<Document>, threads: usize) -> Result<(), RagError> {
        self.add_passages_threads(docs.into_iter().map(Passage::whole).collect(), threads)
    }

    /// [`Self::add_passages`] with the analysis on up to `threads` threads (see
    /// [`resolve_threads`]).
    pub fn add_passages_threads(
        &self,
        passages: Vec<Passage>,
        threads: usize,
    ) -> Result<(), RagError> {
        let threads = resolve_threads(threads)?;
        if threads == 1 || passages.len() < 2 {
            return self.add_passages(passages);
        }
        let _span = tracing::info_span!(
            "rag.index.add",
            rag.passages = passages.len() as i64,
            rag.threads = threads as i64
        )
        .entered();
        // Fail fast, before the work; checked again under the write lock below.
        self.read().check_new(&passages)?;
        let n_parts = threads.max(1);
        let per = passages.len().div_ceil(n_parts);
        let mut parts: Vec<Vec<Passage>> = Vec::with_capacity(n_parts);
        let mut rest = passages.into_iter();
        loop {
            let part: Vec<Passage> = rest.by_ref().take(per).collect();
            if part.is_empty() {
                break;
            }
            parts.push(part);
        }
        let analysed: Vec<bulk::Part> =
            par::map(threads, parts, |part| bulk::analyse(&self.analyzer, part))?;
        let mut inner = self.write();
        inner.check_new(
            analysed
                .iter()
                .flat_map(|p| p.passages.iter().map(|a| &a.passage)),
        )?;
        for part in analysed {
            let remap: Vec<u32> = part.terms.iter().map(|t| inner.intern(t)).collect();
            for a in part.passages {
                let mut terms: Vec<(u32, u32)> = a
                    .terms
                    .iter()
                    .map(|&(t, tf)| (remap[t as usize], tf))
                    .collect();
                terms.sort_unstable();
                inner.place(Arc::new(a.passage), terms, a.len);
            }
        }
        Ok(())
    }

    /// Replaces a document (or adds it if absent).
    pub fn update(&self, doc: Document) -> Result<(), RagError> {
        self.upsert_passages(vec![Passage::whole(doc)])
    }

    /// Replaces every passage of the given passages' documents by these passages.
    pub fn upsert_passages(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        let _span =
            tracing::info_span!("rag.index.upsert", rag.passages = passages.len() as i64).entered();
        let mut inner = self.write();
        let mut seen = std::collections::HashSet::new();
        for p in &passages {
            if !seen.insert((p.doc_id.as_str(), p.chunk_id)) {
                return Err(RagError::DuplicateDocument);
            }
        }
        drop(seen);
        for p in &passages {
            inner.remove_doc(&p.doc_id);
        }
        let mut scratch = Vec::new();
        for p in passages {
            inner.insert(&self.analyzer, Arc::new(p), &mut scratch);
        }
        Ok(())
    }

    /// Deletes a document and all its passages; returns whether it was indexed.
    pub fn delete(&self, doc_id: &str) -> bool {
        let _span = tracing::info_span!("rag.index.delete").entered();
        self.write().remove_doc(doc_id) > 0
    }

    /// Whether a document is indexed.
    pub fn contains(&self, doc_id: &str) -> bool {
        self.read().by_doc.contains_key(doc_id)
    }

    /// Sizes.
    pub fn stats(&self) -> Bm25Stats {
        let inner = self.read();
        Bm25Stats {
            documents: inner.by_doc.len(),
            passages: inner.live,
            terms: inner.df.iter().filter(|&&d| d > 0).count(),
        }
    }

    /// The query's term ids with their multiplicities (unknown terms dropped).
    fn query_terms(&self, inner: &Inner, query: &str) -> Vec<(u32, u32)> {
        let mut ids = Vec::new();
        self.analyzer.analyze(query, |t| {
            if let Some(&id) = inner.vocab.get(t) {
                ids.push(id);
            }
        });
        ids.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for id in ids {
            match out.last_mut() {
                Some((last, n)) if *last == id => *n += 1,
                _ => out.push((id, 1)),
            }
        }
        out
    }

    /// The `k` best passages for `query` that pass `filter`, best first.
    pub fn search_candidates(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Vec<Candidate> {
        let started = metrics::stage_start();
        let out = self.search_candidates_measured(query, k, filter);
        metrics::stage_done(metrics::Stage::Bm25, started, out.len());
        out
    }

    fn search_candidates_measured(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Vec<Candidate> {
        let span = tracing::info_span!(
            "rag.search",
            rag.retriever = "bm25",
            rag.k = k as i64,
            rag.candidates = tracing::field::Empty
        )
        .entered();
        let out = self.search_candidates_inner(query, k, filter);
        span.record("rag.candidates", out.len() as i64);
        out
    }

    fn search_candidates_inner(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Vec<Candidate> {
        if k == 0 {
            return Vec::new();
        }
        let inner = self.read();
        let terms = self.query_terms(&inner, query);
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (acc, touched) = &mut *guard;
            touched.clear();
            inner.score_into(&terms, self.config.k1, self.config.b, acc, touched);
            // Top k by a bounded heap whose top is the worst kept hit: most candidates are
            // rejected by one float comparison, and the filter runs only on those that would enter.
            let mut heap: BinaryHeap<Ranked<'_>> =
                BinaryHeap::with_capacity(k.min(touched.len()) + 1);
            for &slot in touched.iter() {
                let score = std::mem::replace(&mut acc[slot as usize], 0.0);
                if heap.len() == k && heap.peek().is_some_and(|w| score < w.0) {
                    continue;
                }
                let passage = &inner.slots[slot as usize]
                    .as_ref()
                    .expect("touched slots are live")
                    .passage;
                let cand = Ranked(score, passage);
                if heap.len() == k && heap.peek().is_some_and(|w| cand >= *w) {
                    continue;
                }
                if filter.is_some_and(|f| !f.matches(&passage.metadata)) {
                    continue;
                }
                if heap.len() == k {
                    heap.pop();
                }
                heap.push(cand);
            }
            touched.clear();
            let mut scored: Vec<(f32, &Arc<Passage>)> =
                heap.into_iter().map(|r| (r.0, r.1)).collect();
            scored.sort_unstable_by(cmp_hits);
            scored
                .into_iter()
                .map(|(score, p)| Candidate {
                    passage: Arc::clone(p),
                    score,
                })
                .collect()
        })
    }

    /// As [`Self::search_candidates`], as citable hits.
    pub fn search(&self, query: &str, k: usize, filter: Option<&Filter>) -> Vec<Hit> {
        hits_from_candidates(&self.name, self.search_candidates(query, k, filter))
    }

    /// Scores many queries, in parallel on up to `threads` threads (see [`resolve_threads`]: 0 =
    /// all cores, lowered to the core count, above [`super::MAX_THREADS`] an error).
    pub fn search_many(
        &self,
        queries: &[String],
        k: usize,
        filter: Option<&Filter>,
        threads: usize,
    ) -> Result<Vec<Vec<Hit>>, RagError> {
        let threads = resolve_threads(threads)?;
        if threads == 1 {
            return Ok(queries.iter().map(|q| self.search(q, k, filter)).collect());
        }
        par::map_ref(threads, queries, |q| self.search(q, k, filter))
    }

    /// Writes the index to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), RagError> {
        let _span = tracing::info_span!("rag.index.save").entered();
        let inner = self.read();
        persist::save(path, &self.config, &inner)
    }

    /// Reopens an index written by [`Self::save`], without re-analysing any text.
    pub fn open(path: &Path) -> Result<Self, RagError> {
        let _span = tracing::info_span!("rag.index.open").entered();
        let (config, inner) = persist::load(path)?;
        // Settings that the file holds but this keel refuses (an unknown language, a negative
        // k1) mean a damaged or foreign file.
        Self::from_parts(config, inner).map_err(|e| match e {
            RagError::InvalidConfig(what) => RagError::CorruptIndex(format!(
                "{}: invalid settings in the file: {what}",
                path.display()
            )),
            other => other,
        })
    }
}

impl Retriever for Bm25Index {
    fn name(&self) -> &str {
        "bm25"
    }

    fn upsert(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        self.upsert_passages(passages)
    }

    fn delete(&self, doc_id: &str) -> Result<bool, RagError> {
        Ok(Bm25Index::delete(self, doc_id))
    }

    fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError> {
        Ok(self.search_candidates(query, k, filter))
    }
}
