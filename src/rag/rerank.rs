//! Cross-encoder reranking: any ONNX sequence-classification model (e.g.
//! ms-marco-MiniLM-L-6-v2) with its tokenizer.json scores (query, passage) pairs.
//!
//! Pairs are scored in sub-batches of `batch_size`, sorted by length so each pads only to its
//! own longest pair, and truncated longest-first to the model's max length. The score is the
//! model's last logit (the single relevance logit of ms-marco models, the "relevant" class of a
//! two-class head), returned raw.
//!
//! Concurrency: the model runs on a pool of sessions (see [`CrossEncoderOptions::sessions`]):
//! concurrent calls run side by side, and a call spreads its sub-batches over the sessions idle
//! at that moment (a lone caller's 20 pairs run as 10 + 10 on 2 single-threaded sessions).
//!
//! Invariants: score `i` belongs to passage `i`; memory held at once is one sub-batch per
//! session, whatever the number of candidates.

use std::path::Path;

use super::cite::Passage;
use super::model::{by_length, run_chunks, Model};
use super::pipeline::Reranker;
use super::RagError;
use crate::telemetry::metrics;

/// Settings for [`CrossEncoder::open`].
#[derive(Debug, Clone)]
pub struct CrossEncoderOptions {
    /// ONNX Runtime intra-op threads per session (0: the cores divided by the sessions; a value
    /// above that is lowered to it; above [`crate::rag::MAX_THREADS`] an error). See
    /// [`crate::rag::pool_shape`].
    pub threads: usize,
    /// ONNX Runtime sessions, i.e. calls that run at once (None: one per core divided by
    /// `threads`; 0 or above [`crate::rag::MAX_SESSIONS`] an error).
    pub sessions: Option<usize>,
    /// Pairs per inference call.
    pub batch_size: usize,
    /// Truncation length in tokens of query + passage (None: the directory's
    /// `sentence_bert_config.json`, else the tokenizer's, else 512).
    pub max_length: Option<usize>,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            sessions: None,
            batch_size: 16,
            max_length: None,
        }
    }
}

/// A cross-encoder; `Send + Sync`: calls from several threads run at once on its sessions.
pub struct CrossEncoder {
    model: Model,
    batch_size: usize,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("max_length", &self.model.max_length())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl CrossEncoder {
    /// Loads the model in `dir` (model.onnx + tokenizer.json).
    pub fn open(dir: impl AsRef<Path>, options: CrossEncoderOptions) -> Result<Self, RagError> {
        let dir = dir.as_ref();
        let _span = tracing::info_span!("rag.rerank.open").entered();
        if options.batch_size == 0 {
            return Err(RagError::InvalidConfig(
                "batch_size must be at least 1".into(),
            ));
        }
        let shape = super::threads::pool_shape(options.sessions, options.threads)?;
        let model = Model::open(dir, shape, options.max_length, &["logits"])?;
        let this = Self {
            model,
            batch_size: options.batch_size,
        };
        this.score("probe", &["probe"])?;
        Ok(this)
    }

    /// The truncation length in tokens.
    pub fn max_length(&self) -> usize {
        self.model.max_length()
    }

    /// ONNX Runtime sessions, i.e. calls that run at once.
    pub fn sessions(&self) -> usize {
        self.model.pool().size()
    }

    /// ONNX Runtime intra-op threads per session.
    pub fn threads(&self) -> usize {
        self.model.threads()
    }

    /// The most sessions that ran at the same time since the model was opened (a diagnostic:
    /// above 1 proves that calls overlapped in ONNX Runtime).
    pub fn peak_concurrency(&self) -> usize {
        self.model.pool().peak_in_use()
    }

    fn score_batch(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, RagError> {
        let started = metrics::stage_start();
        let out = self.score_batch_measured(query, passages);
        metrics::model_batch(metrics::Model::CrossEncoder, passages.len(), started);
        out
    }

    fn score_batch_measured(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, RagError> {
        let pairs: Vec<(&str, &str)> = passages.iter().map(|p| (query, *p)).collect();
        let batch = self.model.encode(pairs)?;
        let rows = passages.len();
        self.model.run(&batch, |shape, data| match *shape {
            [r, c] if r as usize == rows && c >= 1 => {
                let c = c as usize;
                Ok((0..rows).map(|i| data[i * c + c - 1]).collect())
            }
            [r] if r as usize == rows => Ok(data.to_vec()),
            _ => Err(RagError::Model(format!(
                "unexpected logits shape {shape:?} for {rows} pairs"
            ))),
        })
    }

    /// One relevance score per passage for `query`, in input order (higher is more relevant).
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, RagError> {
        let started = metrics::stage_start();
        metrics::stage_result(
            metrics::Stage::Rerank,
            started,
            self.score_measured(query, passages),
        )
    }

    fn score_measured(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, RagError> {
        let _span = tracing::info_span!(
            "rag.rerank",
            rag.candidates = passages.len() as i64,
            rag.batch_size = self.batch_size as i64,
            gen_ai.request.model = self.model.name()
        )
        .entered();
        let order = by_length(passages.iter().map(|p| p.len()));
        let len = self.model.chunk_len(passages.len(), self.batch_size);
        let chunks: Vec<&[usize]> = order.chunks(len).collect();
        let scores = run_chunks(&self.model, chunks.clone(), |idx| {
            let batch: Vec<&str> = idx.iter().map(|&i| passages[i]).collect();
            self.score_batch(query, &batch)
        })?;
        let mut out = vec![0.0f32; passages.len()];
        for (idx, ss) in chunks.into_iter().zip(scores) {
            for (&i, s) in idx.iter().zip(ss) {
                out[i] = s;
            }
        }
        Ok(out)
    }
}

/// The text a model sees for a passage: its title and text, as BEIR's models are evaluated.
pub(crate) fn passage_text(p: &Passage) -> String {
    if p.title.is_empty() {
        p.text.clone()
    } else {
        format!("{} {}", p.title, p.text)
    }
}

impl Reranker for CrossEncoder {
    fn score(&self, query: &str, passages: &[&Passage]) -> Result<Vec<f32>, RagError> {
        let texts: Vec<String> = passages.iter().map(|p| passage_text(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        CrossEncoder::score(self, query, &refs)
    }
}
