//! Sentence embeddings with a transformer exported to ONNX (e.g. all-MiniLM-L6-v2).
//!
//! A model directory holds `model.onnx` and `tokenizer.json`, optionally sentence-transformers'
//! `sentence_bert_config.json` (max length) and `1_Pooling/config.json` (mean or CLS pooling).
//! Texts are encoded in batches of `batch_size`, sorted by length so each batch pads only to
//! its own longest text, truncated to the model's max length, pooled (mean over the attention
//! mask by default) and L2-normalised, so a dot product between two embeddings is their cosine.
//!
//! Invariants: output `i` is the embedding of input `i`; memory held at once is one batch of
//! tokens and hidden states plus the result; every vector has length [`Embedder::dim`] and unit
//! norm (an all-zero vector, which cannot occur with a real model, stays zero).

use std::path::Path;

use super::model::{by_length, read_json, Model};
use super::RagError;
use crate::telemetry::metrics;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token states under the attention mask (sentence-transformers' default).
    Mean,
    /// The first token's state ([CLS]).
    Cls,
}

/// Settings for [`Embedder::open`].
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// ONNX Runtime intra-op threads (0: the runtime's default, one per core; others as
    /// [`crate::rag::resolve_threads`]: lowered to the core count, above
    /// [`crate::rag::MAX_THREADS`] an error).
    pub threads: usize,
    /// Texts per inference call (bounds memory: batch × max length × hidden size floats).
    pub batch_size: usize,
    /// Truncation length in tokens (None: the directory's `sentence_bert_config.json`, else the
    /// tokenizer's, else 512).
    pub max_length: Option<usize>,
    /// Pooling (None: the directory's `1_Pooling/config.json`, else mean).
    pub pooling: Option<Pooling>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            batch_size: 32,
            max_length: None,
            pooling: None,
        }
    }
}

/// A sentence-embedding model; `Send + Sync`, calls from several threads take turns on the model.
pub struct Embedder {
    model: Model,
    pooling: Pooling,
    batch_size: usize,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .field("pooling", &self.pooling)
            .field("max_length", &self.model.max_length())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

fn pooling_of(dir: &Path) -> Result<Pooling, RagError> {
    let Some(cfg) = read_json(dir, "1_Pooling/config.json")? else {
        return Ok(Pooling::Mean);
    };
    let on = |k: &str| cfg.get(k).and_then(serde_json::Value::as_bool) == Some(true);
    if on("pooling_mode_mean_tokens") {
        Ok(Pooling::Mean)
    } else if on("pooling_mode_cls_token") {
        Ok(Pooling::Cls)
    } else {
        Err(RagError::Model(format!(
            "model directory {}: 1_Pooling/config.json asks for a pooling mode keel does not \
             support (mean and cls are)",
            dir.display()
        )))
    }
}

/// Pools `[rows, seq, dim]` hidden states (or takes `[rows, dim]` as pooled) into `out`, then
/// L2-normalises each row.
fn pool(
    shape: &[i64],
    data: &[f32],
    mask: &ndarray::Array2<i64>,
    pooling: Pooling,
    out: &mut [Vec<f32>],
) -> Result<(), RagError> {
    let rows = out.len();
    let bad = || {
        RagError::Model(format!(
            "unexpected output shape {shape:?} for {rows} inputs"
        ))
    };
    match *shape {
        [r, d] if r as usize == rows => {
            let d = d as usize;
            for (i, v) in out.iter_mut().enumerate() {
                v.clear();
                v.extend_from_slice(&data[i * d..(i + 1) * d]);
            }
        }
        [r, s, d] if r as usize == rows && s as usize == mask.ncols() && d > 0 => {
            let (s, d) = (s as usize, d as usize);
            for (i, v) in out.iter_mut().enumerate() {
                v.clear();
                v.resize(d, 0.0);
                let row = &data[i * s * d..(i + 1) * s * d];
                match pooling {
                    Pooling::Cls => v.copy_from_slice(&row[..d]),
                    Pooling::Mean => {
                        let mut n = 0.0f32;
                        for (t, state) in row.chunks_exact(d).enumerate() {
                            if mask[[i, t]] != 0 {
                                n += 1.0;
                                for (acc, x) in v.iter_mut().zip(state) {
                                    *acc += x;
                                }
                            }
                        }
                        let inv = 1.0 / n.max(1e-9);
                        v.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            }
        }
        _ => return Err(bad()),
    }
    for v in out.iter_mut() {
        normalize(v);
    }
    Ok(())
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

impl Embedder {
    /// Loads the model in `dir` (see the module docs for the layout).
    pub fn open(dir: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self, RagError> {
        let dir = dir.as_ref();
        let _span = tracing::info_span!("rag.embed.open").entered();
        if options.batch_size == 0 {
            return Err(RagError::InvalidConfig(
                "batch_size must be at least 1".into(),
            ));
        }
        let threads = super::threads::intra_op_threads(options.threads)?;
        let pooling = match options.pooling {
            Some(p) => p,
            None => pooling_of(dir)?,
        };
        let model = Model::open(
            dir,
            threads,
            options.max_length,
            &[
                "last_hidden_state",
                "token_embeddings",
                "sentence_embedding",
            ],
        )?;
        let mut this = Self {
            model,
            pooling,
            batch_size: options.batch_size,
            dim: 0,
        };
        // One tiny run checks that model and tokenizer fit together and reveals the dimension.
        let probe = this.embed_batch(&["probe"])?;
        this.dim = probe.first().map_or(0, Vec::len);
        if this.dim == 0 {
            return Err(RagError::Model(format!(
                "model directory {}: the model produced empty embeddings",
                dir.display()
            )));
        }
        Ok(this)
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The truncation length in tokens.
    pub fn max_length(&self) -> usize {
        self.model.max_length()
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError> {
        let started = metrics::stage_start();
        let out = self.embed_batch_measured(texts);
        metrics::model_batch(metrics::Model::Embedder, texts.len(), started);
        metrics::stage_result(metrics::Stage::Embed, started, out)
    }

    fn embed_batch_measured(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError> {
        let batch = self.model.encode(texts.to_vec())?;
        let mut out = vec![Vec::new(); texts.len()];
        self.model.run(&batch, |shape, data| {
            pool(shape, data, &batch.mask, self.pooling, &mut out)
        })?;
        Ok(out)
    }

    /// One unit vector per text, in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError> {
        let _span = tracing::info_span!(
            "rag.embed",
            rag.texts = texts.len() as i64,
            rag.batch_size = self.batch_size as i64,
            gen_ai.operation.name = "embeddings",
            gen_ai.request.model = self.model.name()
        )
        .entered();
        let order = by_length(texts.iter().map(|t| t.len()));
        let mut out = vec![Vec::new(); texts.len()];
        for idx in order.chunks(self.batch_size) {
            let batch: Vec<&str> = idx.iter().map(|&i| texts[i]).collect();
            for (&i, v) in idx.iter().zip(self.embed_batch(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The embedding of one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, RagError> {
        Ok(self.embed_batch(&[text])?.pop().unwrap_or_default())
    }
}
