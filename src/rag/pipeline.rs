//! The retrieval pipeline: documents → chunks → candidates from one or more retrievers →
//! fusion → optional rerank → hits with citations.
//!
//! Retrievers (BM25 here; a dense retriever later) implement [`Retriever`]; a cross-encoder
//! implements [`Reranker`]. The pipeline owns neither model nor index format: it chunks each
//! document once, hands every retriever the same passages, asks each for `candidates` results,
//! fuses them, optionally reorders the best `rerank_top` with the reranker, and returns `k` hits.

use std::sync::Arc;

use super::chunk::Chunker;
use super::cite::{Candidate, Document, Hit, Passage, SourceRank};
use super::filter::Filter;
use super::fuse::{fuse, Fusion, RankedList};
use super::RagError;

/// A source of candidates: anything that indexes passages and scores them against a query.
pub trait Retriever: Send + Sync {
    /// A short name reported in hits' sources (e.g. "bm25", "dense").
    fn name(&self) -> &str;
    /// Replaces all passages of the documents these passages belong to.
    fn upsert(&self, passages: Vec<Passage>) -> Result<(), RagError>;
    /// Deletes a document's passages; returns whether there were any.
    fn delete(&self, doc_id: &str) -> Result<bool, RagError>;
    /// The `k` best passages passing `filter`, best first.
    fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Candidate>, RagError>;
}

/// Rescoring of (query, passage) pairs, e.g. by a cross-encoder.
pub trait Reranker: Send + Sync {
    /// One score per passage, higher is better.
    fn score(&self, query: &str, passages: &[&Passage]) -> Result<Vec<f32>, RagError>;
}

/// Reorders the first `top` hits (all of them if `top` is larger) by `reranker`'s score for
/// `query`; the rest keep their order after them. Each reranked hit takes the reranker's score
/// and gains a `("rerank", rank, score)` source. Tied scores break by document id, then chunk
/// id, ascending, as everywhere in retrieval, so every front door returns the same order.
pub fn rerank_hits(
    reranker: &dyn Reranker,
    query: &str,
    mut hits: Vec<Hit>,
    top: usize,
) -> Result<Vec<Hit>, RagError> {
    let top = top.min(hits.len());
    let passages: Vec<&Passage> = hits[..top].iter().map(|h| &*h.passage).collect();
    let scores = reranker.score(query, &passages)?;
    if scores.len() != top {
        return Err(RagError::InvalidConfig(format!(
            "the reranker returned {} scores for {top} passages",
            scores.len()
        )));
    }
    let name: Arc<str> = Arc::from("rerank");
    let mut head: Vec<Hit> = hits.drain(..top).collect();
    for (h, s) in head.iter_mut().zip(scores) {
        h.sources.push(SourceRank {
            retriever: Arc::clone(&name),
            rank: 0,
            score: s,
        });
        h.score = f64::from(s);
    }
    head.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.passage.doc_id.cmp(&b.passage.doc_id))
            .then_with(|| a.passage.chunk_id.cmp(&b.passage.chunk_id))
    });
    for (i, h) in head.iter_mut().enumerate() {
        if let Some(s) = h.sources.last_mut() {
            s.rank = i + 1;
        }
    }
    head.extend(hits);
    Ok(head)
}

struct Source {
    retriever: Arc<dyn Retriever>,
    weight: f64,
}

/// Retrievers + fusion + optional reranker, behind one `add` / `search`.
pub struct Pipeline {
    chunker: Option<Chunker>,
    sources: Vec<Source>,
    fusion: Fusion,
    reranker: Option<(Arc<dyn Reranker>, usize)>,
    candidates: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field(
                "retrievers",
                &self
                    .sources
                    .iter()
                    .map(|s| s.retriever.name())
                    .collect::<Vec<_>>(),
            )
            .field("fusion", &self.fusion)
            .finish()
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline with no retriever, no chunking, RRF fusion and 100 candidates per retriever.
    pub fn new() -> Self {
        Self {
            chunker: None,
            sources: Vec::new(),
            fusion: Fusion::default(),
            reranker: None,
            candidates: 100,
        }
    }

    /// Splits documents with `chunker` before indexing (otherwise each document is one passage).
    pub fn with_chunker(mut self, chunker: Chunker) -> Self {
        self.chunker = Some(chunker);
        self
    }

    /// Adds a retriever with a fusion weight (finite, >= 0).
    pub fn with_retriever(
        mut self,
        retriever: Arc<dyn Retriever>,
        weight: f64,
    ) -> Result<Self, RagError> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(RagError::InvalidConfig(format!(
                "retriever weight must be finite and >= 0 (got {weight})"
            )));
        }
        self.sources.push(Source { retriever, weight });
        Ok(self)
    }

    /// Sets the fusion method.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Reranks the best `top` fused hits with `reranker`.
    pub fn with_reranker(mut self, reranker: Arc<dyn Reranker>, top: usize) -> Self {
        self.reranker = Some((reranker, top));
        self
    }

    /// How many candidates each retriever contributes (at least the `k` asked for).
    pub fn with_candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates;
        self
    }

    /// The passages a document becomes.
    pub fn passages(&self, doc: Document) -> Vec<Passage> {
        let Some(chunker) = &self.chunker else {
            return vec![Passage::whole(doc)];
        };
        let metadata = Arc::new(doc.metadata);
        chunker
            .chunks(&doc.text)
            .into_iter()
            .map(|c| Passage {
                doc_id: doc.id.clone(),
                chunk_id: c.index as u32,
                span: c.span,
                title: doc.title.clone(),
                text: c.text.to_owned(),
                metadata: Arc::clone(&metadata),
            })
            .collect()
    }

    /// Adds or replaces documents in every retriever.
    pub fn upsert(&self, docs: Vec<Document>) -> Result<(), RagError> {
        let passages: Vec<Passage> = docs.into_iter().flat_map(|d| self.passages(d)).collect();
        self.upsert_passages(passages)
    }

    /// Adds or replaces already-chunked passages in every retriever: each document's passages
    /// replace all of its previous ones.
    pub fn upsert_passages(&self, passages: Vec<Passage>) -> Result<(), RagError> {
        for s in &self.sources {
            s.retriever.upsert(passages.clone())?;
        }
        Ok(())
    }

    /// Deletes a document from every retriever; returns whether any had it.
    pub fn delete(&self, doc_id: &str) -> Result<bool, RagError> {
        let mut any = false;
        for s in &self.sources {
            any |= s.retriever.delete(doc_id)?;
        }
        Ok(any)
    }

    /// The `k` best hits for `query`.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Hit>, RagError> {
        let span = tracing::info_span!(
            "rag.retrieve",
            rag.k = k as i64,
            rag.retrievers = self.sources.len() as i64,
            rag.candidates = tracing::field::Empty
        )
        .entered();
        let n = self.candidates.max(k);
        let mut lists = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            lists.push(RankedList {
                retriever: s.retriever.name().to_owned(),
                weight: s.weight,
                candidates: s.retriever.search(query, n, filter)?,
            });
        }
        let mut hits = fuse(&lists, self.fusion, n)?;
        if let Some((reranker, top)) = &self.reranker {
            hits = rerank_hits(&**reranker, query, hits, *top)?;
        }
        hits.truncate(k);
        span.record("rag.candidates", hits.len() as i64);
        Ok(hits)
    }
}
