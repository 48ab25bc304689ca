//! Bulk indexing on several threads: the costly part, turning text into terms, runs in parallel
//! without the index lock; only the cheap merge (term ids, postings) takes the write lock.
//!
//! Each thread analyses a contiguous part of the batch with its own vocabulary (local term ids
//! and its own lowercased-word cache); the merge maps each part's local ids to the index's ids
//! once per distinct term, then places the passages in batch order. The result is the same index
//! as a single-threaded add of the same batch: same slots in the same order, same term counts.

use super::Map;

use super::analyzer::Analyzer;
use crate::rag::cite::Passage;

/// One analysed passage: local term ids with their counts, and its length in terms.
pub(crate) struct Analysed {
    pub(crate) passage: Passage,
    pub(crate) terms: Vec<(u32, u32)>,
    pub(crate) len: usize,
}

/// A part of a batch after analysis: its vocabulary (local id → term) and its passages.
pub(crate) struct Part {
    pub(crate) terms: Vec<String>,
    pub(crate) passages: Vec<Analysed>,
}

const STOP: u32 = u32::MAX;

/// Analyses `passages` (title, then text) with a vocabulary of its own.
pub(crate) fn analyse(analyzer: &Analyzer, passages: Vec<Passage>) -> Part {
    let mut cache: Map<String, u32> = Map::default();
    let mut ids: Map<String, u32> = Map::default();
    let mut terms: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(passages.len());
    let mut scratch: Vec<u32> = Vec::new();
    for passage in passages {
        scratch.clear();
        for field in [passage.title.as_str(), passage.text.as_str()] {
            analyzer.words(field, |w| {
                let id = match cache.get(w) {
                    Some(&id) => id,
                    None => {
                        let mut id = STOP;
                        analyzer.emit_normalized(w, &mut |term: &str| {
                            id = *ids.entry(term.to_owned()).or_insert_with(|| {
                                terms.push(term.to_owned());
                                (terms.len() - 1) as u32
                            });
                        });
                        cache.insert(w.to_owned(), id);
                        id
                    }
                };
                if id != STOP {
                    scratch.push(id);
                }
            });
        }
        let len = scratch.len();
        scratch.sort_unstable();
        let mut counts: Vec<(u32, u32)> = Vec::new();
        for &t in scratch.iter() {
            match counts.last_mut() {
                Some((last, tf)) if *last == t => *tf += 1,
                _ => counts.push((t, 1)),
            }
        }
        out.push(Analysed {
            passage,
            terms: counts,
            len,
        });
    }
    Part {
        terms,
        passages: out,
    }
}
