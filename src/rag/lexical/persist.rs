//! The on-disk format of a BM25 index, in the shared index-file codec ([`crate::rag::codec`]:
//! header, passage records, checksum trailer, atomic write).
//!
//! Body: the settings (k1, b, language, stemming, stopwords), the vocabulary (term strings by
//! id), then each live passage (the codec's passage record) with its analysed term counts.
//! Postings are rebuilt on open from the term counts, which is linear and needs no re-analysis.
//! Formats 1 and 2 (before the shared codec) have the same body, so they read the same way.

use std::path::Path;
use std::sync::Arc;

use super::analyzer::AnalyzerConfig;
use super::{Bm25Config, Inner};
use crate::rag::codec::{self, corrupt};
use crate::rag::RagError;

const MAGIC: &[u8; 8] = b"KEELBM25";

pub(crate) fn save(path: &Path, config: &Bm25Config, inner: &Inner) -> Result<(), RagError> {
    codec::save(path, MAGIC, |w| {
        w.f32(config.k1)?;
        w.f32(config.b)?;
        w.string(&config.analyzer.language)?;
        w.u32(u32::from(config.analyzer.stemming))?;
        w.u32(u32::from(config.analyzer.stopwords))?;
        w.u64(inner.terms.len() as u64)?;
        for t in &inner.terms {
            w.string(t)?;
        }
        w.u64(inner.live as u64)?;
        for slot in inner.slots.iter().flatten() {
            w.passage(&slot.passage)?;
            let len: u64 = slot.terms.iter().map(|&(_, tf)| u64::from(tf)).sum();
            w.u64(len)?;
            w.u64(slot.terms.len() as u64)?;
            for &(t, tf) in &slot.terms {
                w.u32(t)?;
                w.u32(tf)?;
            }
        }
        Ok(())
    })
}

pub(crate) fn load(path: &Path) -> Result<(Bm25Config, Inner), RagError> {
    codec::load(path, MAGIC, "BM25 index", |r| {
        let k1 = r.f32()?;
        let b = r.f32()?;
        let language = r.string()?;
        let stemming = r.u32()? != 0;
        let stopwords = r.u32()? != 0;
        let config = Bm25Config {
            k1,
            b,
            analyzer: AnalyzerConfig {
                language,
                stemming,
                stopwords,
            },
        };
        let mut inner = Inner::default();
        let n_terms = r.count(8)?;
        for id in 0..n_terms {
            let t = r.string()?;
            if inner.vocab.insert(t.clone(), id as u32).is_some() {
                return Err(corrupt("duplicate term"));
            }
            inner.terms.push(t);
        }
        inner.postings = vec![Vec::new(); n_terms];
        inner.df = vec![0; n_terms];
        let n_passages = r.count(8)?;
        for _ in 0..n_passages {
            let passage = r.passage()?;
            let len = r.usize()?;
            let n = r.count(8)?;
            let mut terms = Vec::with_capacity(n);
            let mut sum = 0usize;
            let mut prev = None;
            for _ in 0..n {
                let t = r.u32()?;
                let tf = r.u32()?;
                if t as usize >= n_terms || tf == 0 || prev.is_some_and(|p| p >= t) {
                    return Err(corrupt("bad term entry"));
                }
                prev = Some(t);
                sum += tf as usize;
                terms.push((t, tf));
            }
            if sum != len {
                return Err(corrupt("passage length mismatch"));
            }
            let duplicate = inner.by_doc.get(&passage.doc_id).is_some_and(|s| {
                s.iter().any(|&x| {
                    inner.slots[x as usize]
                        .as_ref()
                        .is_some_and(|y| y.passage.chunk_id == passage.chunk_id)
                })
            });
            if duplicate {
                return Err(corrupt("duplicate passage"));
            }
            inner.place(Arc::new(passage), terms, len);
        }
        Ok((config, inner))
    })
}
