//! Sentence embeddings with a transformer exported to ONNX (e.g. all-MiniLM-L6-v2).
//!
//! A model directory holds `model.onnx` and `tokenizer.json`, optionally sentence-transformers'
//! `sentence_bert_config.json` (max length) and `1_Pooling/config.json` (mean or CLS pooling).
//! Texts are encoded in batches of `batch_size`, sorted by length so each batch pads only to
//! its own longest text, truncated to the model's max length, pooled (mean over the attention
//! mask by default) and L2-normalised, so a dot product between two embeddings is their cosine.
//!
//! Concurrency: the model runs on a pool of sessions (see [`EmbedderOptions::sessions`]). A call
//! with several texts spreads its batches over the sessions idle at that moment. Calls with one
//! text (query embeddings) are micro-batched: each joins a queue; a caller that finds an idle
//! session takes everything queued (up to `batch_size` texts) and runs it as one batch, and each
//! caller gets its own row. A lone caller finds the queue empty and a session idle and runs at
//! once: no timer, no added wait; callers arriving while every session is busy are served by the
//! next run together, which costs far less than one run each.
//!
//! Invariants: output `i` is the embedding of input `i` (and a queued text's row goes back to
//! the caller that queued it); memory held at once is one batch of tokens and hidden states per
//! session plus the results; every vector has length [`Embedder::dim`] and unit norm (an
//! all-zero vector, which cannot occur with a real model, stays zero).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use ort::session::Session;

use super::model::{by_length, read_json, run_chunks, Model};
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
    /// ONNX Runtime intra-op threads per session (0: the cores divided by the sessions; a value
    /// above that is lowered to it; above [`crate::rag::MAX_THREADS`] an error). See
    /// [`crate::rag::pool_shape`].
    pub threads: usize,
    /// ONNX Runtime sessions, i.e. calls that run at once (None: one per core divided by
    /// `threads`; 0 or above [`crate::rag::MAX_SESSIONS`] an error).
    pub sessions: Option<usize>,
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
            sessions: None,
            batch_size: 32,
            max_length: None,
            pooling: None,
        }
    }
}

/// A sentence-embedding model; `Send + Sync`: calls from several threads run at once on its
/// sessions, and one-text calls are micro-batched (see the module docs).
pub struct Embedder {
    model: Model,
    pooling: Pooling,
    batch_size: usize,
    dim: usize,
    queue: Arc<Queue>,
}

/// One queued one-text call: the text, and its vector once a run has made it.
struct Request {
    text: String,
    out: OnceLock<Result<Vec<f32>, RagError>>,
}

/// One-text calls waiting for a session; `ready` is signalled when results are delivered and
/// when a session returns to the pool (the pool's release hook).
#[derive(Default)]
struct Queue {
    pending: Mutex<VecDeque<Arc<Request>>>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Request>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        // Taking the lock orders this after a waiter's check-then-wait: no lost wake-up.
        drop(self.lock());
        self.ready.notify_all();
    }
}

/// Requests taken by a leader; any still unanswered when it is dropped (a panic mid-run) get an
/// error, so their callers never wait forever.
struct Taken(Vec<Arc<Request>>);

impl Drop for Taken {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = r.out.set(Err(RagError::Model(
                "inference failed: the batch this text joined was abandoned".into(),
            )));
        }
    }
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
        let shape = super::threads::pool_shape(options.sessions, options.threads)?;
        let pooling = match options.pooling {
            Some(p) => p,
            None => pooling_of(dir)?,
        };
        let model = Model::open(
            dir,
            shape,
            options.max_length,
            &[
                "last_hidden_state",
                "token_embeddings",
                "sentence_embedding",
            ],
        )?;
        let queue = Arc::new(Queue::default());
        let hook = Arc::clone(&queue);
        model.pool().set_release_hook(Box::new(move || hook.wake()));
        let mut this = Self {
            model,
            pooling,
            batch_size: options.batch_size,
            dim: 0,
            queue,
        };
        // One tiny run checks that model and tokenizer fit together and reveals the dimension.
        let probe = this.embed_batch(None, &["probe"])?;
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

    /// Inference calls (batches) run since the model was opened, its probe included (a
    /// diagnostic: fewer than the one-text calls made proves that they were micro-batched).
    pub fn runs(&self) -> u64 {
        self.model.runs()
    }

    /// Embeds `texts` as one batch on `session` (leased by the caller), or on a session leased
    /// here.
    fn embed_batch(
        &self,
        session: Option<&mut Session>,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, RagError> {
        let started = metrics::stage_start();
        let out = self.embed_batch_measured(session, texts);
        metrics::model_batch(metrics::Model::Embedder, texts.len(), started);
        metrics::stage_result(metrics::Stage::Embed, started, out)
    }

    fn embed_batch_measured(
        &self,
        session: Option<&mut Session>,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, RagError> {
        let batch = self.model.encode(texts.to_vec())?;
        let mut out = vec![Vec::new(); texts.len()];
        let pool_into =
            |shape: &[i64], data: &[f32]| pool(shape, data, &batch.mask, self.pooling, &mut out);
        match session {
            Some(s) => self.model.run_on(s, &batch, pool_into)?,
            None => self.model.run(&batch, pool_into)?,
        }
        Ok(out)
    }

    /// One text through the micro-batching queue (see the module docs).
    fn embed_queued(&self, text: &str) -> Result<Vec<f32>, RagError> {
        let me = Arc::new(Request {
            text: text.to_owned(),
            out: OnceLock::new(),
        });
        let mut pending = self.queue.lock();
        pending.push_back(Arc::clone(&me));
        loop {
            if let Some(out) = me.out.get() {
                return out.clone();
            }
            if !pending.is_empty() {
                if let Some(mut session) = self.model.pool().try_lease() {
                    let take = pending.len().min(self.batch_size);
                    let taken = Taken(pending.drain(..take).collect());
                    drop(pending);
                    self.lead(&mut session, &taken);
                    drop(taken);
                    // Returning the session wakes every waiter (the pool's release hook).
                    drop(session);
                    pending = self.queue.lock();
                    continue;
                }
            }
            pending = self
                .queue
                .ready
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Runs the taken one-text calls as one batch and answers each with its own row.
    fn lead(&self, session: &mut Session, taken: &Taken) {
        let texts: Vec<&str> = taken.0.iter().map(|r| r.text.as_str()).collect();
        match self.embed_batch(Some(session), &texts) {
            Ok(vectors) => {
                for (r, v) in taken.0.iter().zip(vectors) {
                    let _ = r.out.set(Ok(v));
                }
            }
            Err(e) => {
                for r in &taken.0 {
                    let _ = r.out.set(Err(e.clone()));
                }
            }
        }
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
        if let [text] = texts {
            return Ok(vec![self.embed_queued(text)?]);
        }
        let order = by_length(texts.iter().map(|t| t.len()));
        let len = self.model.chunk_len(texts.len(), self.batch_size);
        let chunks: Vec<&[usize]> = order.chunks(len).collect();
        let vectors = run_chunks(&self.model, chunks.clone(), |idx| {
            let batch: Vec<&str> = idx.iter().map(|&i| texts[i]).collect();
            self.embed_batch(None, &batch)
        })?;
        let mut out = vec![Vec::new(); texts.len()];
        for (idx, vs) in chunks.into_iter().zip(vectors) {
            for (&i, v) in idx.iter().zip(vs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The embedding of one text (micro-batched with concurrent one-text calls).
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, RagError> {
        self.embed_queued(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The MiniLM model of `make models` (a failure, never a skip, when it is missing).
    fn minilm(sessions: usize) -> Arc<Embedder> {
        let dir = std::env::var_os("KEEL_TEST_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models"));
        assert!(
            dir.join("minilm/model.onnx").is_file() && std::env::var_os("ORT_DYLIB_PATH").is_some(),
            "run through `make test-rust` (models in {}, ORT_DYLIB_PATH set)",
            dir.display()
        );
        let options = EmbedderOptions {
            sessions: Some(sessions),
            threads: 1,
            ..EmbedderOptions::default()
        };
        Arc::new(Embedder::open(dir.join("minilm"), options).unwrap())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn one_text_calls_queued_behind_a_busy_pool_run_as_one_batch_and_get_their_own_row() {
        let e = minilm(1);
        let texts: Vec<String> = (0..8)
            .map(|i| format!("caller {i} asks about {}", "refunds ".repeat(i + 1)))
            .collect();
        let sequential: Vec<Vec<f32>> = texts.iter().map(|t| e.embed_one(t).unwrap()).collect();
        let runs = e.runs();
        // Hold the only session: every caller must queue.
        let held = e.model.pool().lease();
        let callers: Vec<_> = texts
            .iter()
            .map(|t| {
                let (e, t) = (Arc::clone(&e), t.clone());
                std::thread::spawn(move || e.embed_one(&t).unwrap())
            })
            .collect();
        while e.queue.lock().len() < texts.len() {
            std::thread::yield_now();
        }
        assert_eq!(e.runs(), runs, "nothing ran while the session was held");
        drop(held);
        for (i, c) in callers.into_iter().enumerate() {
            let v = c.join().unwrap();
            assert!(
                max_diff(&v, &sequential[i]) < 1e-5,
                "caller {i} got another row"
            );
        }
        assert_eq!(e.runs(), runs + 1, "the 8 queued texts ran as one batch");
    }

    #[test]
    fn a_lone_caller_runs_at_once_on_an_idle_session() {
        let e = minilm(2);
        let runs = e.runs();
        let v = e.embed_one("a lone query").unwrap();
        assert_eq!(v.len(), e.dim());
        assert_eq!(e.runs(), runs + 1);
        assert!(e.queue.lock().is_empty());
        assert_eq!(e.model.pool().idle(), 2);
    }
}
