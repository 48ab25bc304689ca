//! Combining ranked lists from several retrievers into one.
//!
//! - Reciprocal rank fusion: `score(p) = sum over lists of weight / (k + rank)`, rank from 1,
//!   k = 60 by default (Cormack et al. 2009). Scale-free, so it needs no score normalisation.
//! - Weighted combination of normalised scores: each list's scores are rescaled (min-max to
//!   [0, 1], or z-score), then `score(p) = sum of weight * normalised score`; a passage absent
//!   from a list contributes 0 for that list. A list whose scores are all equal normalises to 1
//!   (min-max) or 0 (z-score).
//!
//! Ties in the fused order break by document id, then chunk id, ascending. Every fused hit keeps
//! the rank and score that each list gave it.

use std::collections::HashMap;
use std::sync::Arc;

use super::cite::{Candidate, Hit, Passage, SourceRank};
use super::RagError;
use crate::telemetry::metrics;

/// How score lists are normalised before a weighted combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// `(s - min) / (max - min)`.
    MinMax,
    /// `(s - mean) / stddev` (population standard deviation).
    ZScore,
}

/// A fusion method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k`.
    Rrf {
        /// The rank offset; 60 by default.
        k: f64,
    },
    /// Weighted sum of normalised scores.
    Weighted(Normalization),
}

impl Fusion {
    /// The RRF rank offset of Cormack et al. (2009), used unless another `k` is given.
    pub const DEFAULT_RRF_K: f64 = 60.0;

    /// The method names [`Fusion::from_str`] accepts, as every front door spells them.
    pub const METHODS: [&'static str; 3] = ["rrf", "minmax", "zscore"];

    /// This method with RRF constant `k` (None: keep it). A `k` is an error for a weighted
    /// combination, which has no rank offset.
    pub fn with_rrf_k(self, k: Option<f64>) -> Result<Self, RagError> {
        match (self, k) {
            (_, None) => Ok(self),
            (Self::Rrf { .. }, Some(k)) => Ok(Self::Rrf { k }),
            (Self::Weighted(_), Some(k)) => Err(RagError::InvalidConfig(format!(
                "k = {k} applies only to rrf fusion, not to a weighted combination"
            ))),
        }
    }
}

impl Default for Fusion {
    fn default() -> Self {
        Self::Rrf {
            k: Self::DEFAULT_RRF_K,
        }
    }
}

impl std::str::FromStr for Fusion {
    type Err = RagError;

    /// "rrf" (with [`Fusion::DEFAULT_RRF_K`]), "minmax" or "zscore" (a weighted sum of min-max or
    /// z-score normalised scores); anything else is `InvalidConfig` naming the value.
    fn from_str(method: &str) -> Result<Self, RagError> {
        match method {
            "rrf" => Ok(Self::default()),
            "minmax" => Ok(Self::Weighted(Normalization::MinMax)),
            "zscore" => Ok(Self::Weighted(Normalization::ZScore)),
            other => Err(RagError::InvalidConfig(format!(
                "unknown fusion method {other:?} (use \"rrf\", \"minmax\" or \"zscore\")"
            ))),
        }
    }
}

/// One retriever's ranked list, best first, with its weight in the fusion.
#[derive(Debug, Clone)]
pub struct RankedList {
    /// The retriever's name, reported in each hit's sources.
    pub retriever: String,
    /// Its weight (finite, >= 0).
    pub weight: f64,
    /// Its candidates, best first.
    pub candidates: Vec<Candidate>,
}

impl RankedList {
    /// The weight of a list whose caller gives none.
    pub const DEFAULT_WEIGHT: f64 = 1.0;
}

fn normalize(scores: &[f32], how: Normalization) -> Vec<f64> {
    let s: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
    if s.is_empty() {
        return s;
    }
    match how {
        Normalization::MinMax => {
            let min = s.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = max - min;
            s.iter()
                .map(|x| if range > 0.0 { (x - min) / range } else { 1.0 })
                .collect()
        }
        Normalization::ZScore => {
            let n = s.len() as f64;
            let mean = s.iter().sum::<f64>() / n;
            let sd = (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            s.iter()
                .map(|x| if sd > 0.0 { (x - mean) / sd } else { 0.0 })
                .collect()
        }
    }
}

/// A passage's running fused score, the passage, and the ranks that produced it.
type Fused = (f64, Arc<Passage>, Vec<SourceRank>);

/// Fuses ranked lists into at most `k` hits, best first.
pub fn fuse(lists: &[RankedList], fusion: Fusion, k: usize) -> Result<Vec<Hit>, RagError> {
    let started = metrics::stage_start();
    metrics::stage_result(
        metrics::Stage::Fuse,
        started,
        fuse_measured(lists, fusion, k),
    )
}

fn fuse_measured(lists: &[RankedList], fusion: Fusion, k: usize) -> Result<Vec<Hit>, RagError> {
    let span = tracing::info_span!(
        "rag.fuse",
        rag.lists = lists.len() as i64,
        rag.k = k as i64,
        rag.candidates = tracing::field::Empty
    )
    .entered();
    let out = fuse_lists(lists, fusion, k);
    if let Ok(h) = &out {
        span.record("rag.candidates", h.len() as i64);
    }
    out
}

fn fuse_lists(lists: &[RankedList], fusion: Fusion, k: usize) -> Result<Vec<Hit>, RagError> {
    if let Fusion::Rrf { k: rk } = fusion {
        if !(rk.is_finite() && rk >= 0.0) {
            return Err(RagError::InvalidConfig(format!(
                "RRF k must be finite and >= 0 (got {rk})"
            )));
        }
    }
    for l in lists {
        if !(l.weight.is_finite() && l.weight >= 0.0) {
            return Err(RagError::InvalidConfig(format!(
                "fusion weights must be finite and >= 0 (got {})",
                l.weight
            )));
        }
    }
    // foldhash: one entry per candidate of every list, on every query (SipHash showed in the
    // profile of a voice-bot turn).
    let mut acc: HashMap<(&str, u32), Fused, foldhash::fast::RandomState> = HashMap::default();
    for list in lists {
        let name: Arc<str> = Arc::from(list.retriever.as_str());
        let contrib: Vec<f64> = match fusion {
            Fusion::Rrf { k: rk } => (0..list.candidates.len())
                .map(|i| list.weight / (rk + (i + 1) as f64))
                .collect(),
            Fusion::Weighted(how) => {
                let scores: Vec<f32> = list.candidates.iter().map(|c| c.score).collect();
                normalize(&scores, how)
                    .into_iter()
                    .map(|x| list.weight * x)
                    .collect()
            }
        };
        for (i, (c, add)) in list.candidates.iter().zip(contrib).enumerate() {
            let entry = acc
                .entry((c.passage.doc_id.as_str(), c.passage.chunk_id))
                .or_insert_with(|| (0.0, Arc::clone(&c.passage), Vec::new()));
            // A passage listed twice by one retriever counts once, at its best rank.
            if entry.2.iter().any(|s| *s.retriever == *list.retriever) {
                continue;
            }
            entry.0 += add;
            entry.2.push(SourceRank {
                retriever: Arc::clone(&name),
                rank: i + 1,
                score: c.score,
            });
        }
    }
    let mut hits: Vec<Hit> = acc
        .into_values()
        .map(|(score, passage, sources)| Hit {
            passage,
            score,
            sources,
        })
        .collect();
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.passage.doc_id.cmp(&b.passage.doc_id))
            .then_with(|| a.passage.chunk_id.cmp(&b.passage.chunk_id))
    });
    hits.truncate(k);
    Ok(hits)
}

/// Reciprocal rank fusion with equal weights.
pub fn rrf(lists: Vec<(String, Vec<Candidate>)>, k: usize) -> Vec<Hit> {
    let lists: Vec<RankedList> = lists
        .into_iter()
        .map(|(retriever, candidates)| RankedList {
            retriever,
            weight: 1.0,
            candidates,
        })
        .collect();
    fuse(&lists, Fusion::default(), k).expect("the default fusion with unit weights is valid")
}
