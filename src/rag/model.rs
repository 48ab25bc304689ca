//! A transformer model directory (model.onnx + tokenizer.json) shared by the embedder and the
//! cross-encoder: validation with clear errors, tokenizer set up for batch-longest padding and
//! truncation to the model's max length, and one inference call on a batch.
//!
//! Invariants: a directory is checked (files present, tokenizer parseable, inputs named
//! `input_ids` and `attention_mask`) before ONNX Runtime is touched, so a bad directory says what
//! is wrong even where the runtime is missing; every batch is padded only to its longest member.
//! `ort` runs a session through `&mut`, so the model holds a [`SessionPool`] of sessions of the
//! same file (sharing their pre-packed weights): up to `sessions` calls run at once, each on its
//! own session with its own `threads` intra-op threads (see [`super::threads::pool_shape`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use ndarray::Array2;
use ort::session::Session;
use ort::value::TensorRef;
use tokenizers::{
    EncodeInput, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use super::pool::SessionPool;
use super::threads::PoolShape;
use super::{runtime, RagError};

/// Used when neither the caller, the directory nor the tokenizer gives a max length (BERT's).
const DEFAULT_MAX_LENGTH: usize = 512;

/// Token ids, attention mask and token type ids of one padded batch, `[batch, seq]`.
pub(crate) struct Batch {
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    pub types: Array2<i64>,
}

pub(crate) struct Model {
    pool: SessionPool,
    threads: usize,
    runs: AtomicU64,
    tokenizer: Tokenizer,
    max_length: usize,
    token_type_ids: bool,
    output: String,
    /// The model directory's name (`gen_ai.request.model` of the spans).
    name: String,
}

fn model_err(dir: &Path, what: impl std::fmt::Display) -> RagError {
    RagError::Model(format!("model directory {}: {what}", dir.display()))
}

/// `max_seq_length` from sentence-transformers' `sentence_bert_config.json`, if present.
fn configured_max_length(dir: &Path) -> Result<Option<usize>, RagError> {
    let path = dir.join("sentence_bert_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| model_err(dir, "sentence_bert_config.json is not valid JSON"))?;
    Ok(value
        .get("max_seq_length")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize))
}

/// Reads a JSON config file of the directory (None when absent).
pub(crate) fn read_json(dir: &Path, name: &str) -> Result<Option<serde_json::Value>, RagError> {
    let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|_| model_err(dir, format!("{name} is not valid JSON")))
}

impl Model {
    /// Opens `dir`; `outputs` lists preferred output names (else the first output is used).
    /// The model directory's name, e.g. `all-MiniLM-L6-v2`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn open(
        dir: &Path,
        shape: PoolShape,
        max_length: Option<usize>,
        outputs: &[&str],
    ) -> Result<Self, RagError> {
        if !dir.is_dir() {
            return Err(model_err(dir, "does not exist or is not a directory"));
        }
        let model_path: PathBuf = dir.join("model.onnx");
        if !model_path.is_file() {
            return Err(model_err(dir, "has no model.onnx"));
        }
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(model_err(dir, "has no tokenizer.json"));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|_| model_err(dir, "tokenizer.json is malformed"))?;
        let max_length = match max_length {
            Some(0) => {
                return Err(RagError::InvalidConfig(
                    "max_length must be at least 1".into(),
                ))
            }
            Some(n) => n,
            None => configured_max_length(dir)?
                .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
                .unwrap_or(DEFAULT_MAX_LENGTH),
        };
        // The tokenizer.json may carry fixed padding / another truncation: replace both.
        let (pad_id, pad_type_id, pad_token) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id, p.pad_token.clone()),
            None => (
                tokenizer.token_to_id("[PAD]").unwrap_or(0),
                0,
                "[PAD]".to_owned(),
            ),
        };
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id,
            pad_token,
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|_| model_err(dir, "tokenizer rejects truncation settings"))?;

        // Load the runtime first: creating the weights container calls into it (and panics
        // when it is missing, where `environment` is a typed error).
        runtime::environment()?;
        let weights = ort::session::builder::PrepackedWeights::new();
        let sessions = (0..shape.sessions)
            .map(|_| runtime::session(&model_path, shape.threads, &weights))
            .collect::<Result<Vec<Session>, RagError>>()?;
        let pool = SessionPool::new(sessions);
        let (token_type_ids, output) = pool.with_first(|s| Self::check_io(dir, s, outputs))?;
        Ok(Self {
            pool,
            threads: shape.threads,
            runs: AtomicU64::new(0),
            tokenizer,
            max_length,
            token_type_ids,
            output,
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    /// Checks the model's inputs; returns whether it takes token type ids and the output to read.
    fn check_io(
        dir: &Path,
        session: &Session,
        outputs: &[&str],
    ) -> Result<(bool, String), RagError> {
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for needed in ["input_ids", "attention_mask"] {
            if !inputs.contains(&needed) {
                return Err(model_err(
                    dir,
                    format!("model.onnx has no input named {needed}"),
                ));
            }
        }
        if let Some(extra) = inputs
            .iter()
            .find(|n| !["input_ids", "attention_mask", "token_type_ids"].contains(n))
        {
            return Err(model_err(
                dir,
                format!("model.onnx has an unsupported input {extra}"),
            ));
        }
        let token_type_ids = inputs.contains(&"token_type_ids");
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let output = outputs
            .iter()
            .find(|o| names.contains(o))
            .or(names.first())
            .ok_or_else(|| model_err(dir, "model.onnx has no output"))?
            .to_string();
        Ok((token_type_ids, output))
    }

    /// The session pool (size, idle sessions, release hook).
    pub(crate) fn pool(&self) -> &SessionPool {
        &self.pool
    }

    /// Intra-op threads per session.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    pub(crate) fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes a batch: padded to its longest member, truncated to the max length.
    ///
    /// Sequentially on purpose: `encode_batch` would tokenize on rayon's pool, which competes
    /// with ONNX Runtime's spinning intra-op threads for the same cores (measured: ~3% slower
    /// end to end on 2 cores), while tokenizing a batch costs ~1% of running the model on it.
    pub(crate) fn encode<'s, E: Into<EncodeInput<'s>>>(
        &self,
        inputs: Vec<E>,
    ) -> Result<Batch, RagError> {
        let fail = |_| RagError::Model("tokenization failed".into());
        let mut encodings = inputs
            .into_iter()
            .map(|i| self.tokenizer.encode_fast(i, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        if let Some(params) = self.tokenizer.get_padding() {
            tokenizers::pad_encodings(&mut encodings, params).map_err(fail)?;
        }
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.len());
        let mut ids = Array2::<i64>::zeros((rows, cols));
        let mut mask = Array2::<i64>::zeros((rows, cols));
        let mut types = Array2::<i64>::zeros((rows, cols));
        for (r, e) in encodings.iter().enumerate() {
            for (c, ((&i, &m), &t)) in e
                .get_ids()
                .iter()
                .zip(e.get_attention_mask())
                .zip(e.get_type_ids())
                .enumerate()
                .take(cols)
            {
                ids[[r, c]] = i64::from(i);
                mask[[r, c]] = i64::from(m);
                types[[r, c]] = i64::from(t);
            }
        }
        Ok(Batch { ids, mask, types })
    }

    /// Runs the model on `batch`, on a session leased from the pool (waiting for one if all are
    /// busy), and hands the chosen output (shape, row-major data) to `f`.
    pub(crate) fn run<R>(
        &self,
        batch: &Batch,
        f: impl FnOnce(&[i64], &[f32]) -> Result<R, RagError>,
    ) -> Result<R, RagError> {
        let mut session = self.pool.lease();
        self.run_on(&mut session, batch, f)
    }

    /// Runs the model on `batch` with `session` (one of this model's, already leased).
    pub(crate) fn run_on<R>(
        &self,
        session: &mut Session,
        batch: &Batch,
        f: impl FnOnce(&[i64], &[f32]) -> Result<R, RagError>,
    ) -> Result<R, RagError> {
        let fail = |e: ort::Error| RagError::Model(format!("inference failed: {e}"));
        let ids = TensorRef::from_array_view(&batch.ids).map_err(fail)?;
        let mask = TensorRef::from_array_view(&batch.mask).map_err(fail)?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        let outputs = if self.token_type_ids {
            let types = TensorRef::from_array_view(&batch.types).map_err(fail)?;
            session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])
        } else {
            session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
        }
        .map_err(fail)?;
        let (shape, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|_| RagError::Model("the model's output is not a float32 tensor".into()))?;
        f(shape, data)
    }

    /// Inference calls made so far (each one batch on one session).
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The rows per sub-batch for `n` inputs of one call: `batch_size`, or fewer so that the
    /// call spreads over the sessions idle right now (a lone caller's 20 pairs on 2 idle
    /// sessions: 10 each). Under load no session is idle and the call keeps `batch_size`.
    pub(crate) fn chunk_len(&self, n: usize, batch_size: usize) -> usize {
        let idle = if n > 1 && self.pool.size() > 1 {
            self.pool.idle()
        } else {
            1
        };
        n.div_ceil(idle.max(1)).clamp(1, batch_size)
    }
}

/// `run(chunk)` for every chunk, results in chunk order; with more than one chunk and sessions
/// idle, the chunks are shared out to up to that many workers (the calling thread and scoped
/// threads), each leasing its own session per chunk, so a lone caller uses every core.
pub(crate) fn run_chunks<'c, T, F>(
    model: &Model,
    chunks: Vec<&'c [usize]>,
    run: F,
) -> Result<Vec<T>, RagError>
where
    T: Send + Sync,
    F: Fn(&'c [usize]) -> Result<T, RagError> + Sync,
{
    let workers = chunks.len().min(model.pool.idle()).max(1);
    if workers == 1 {
        return chunks.into_iter().map(run).collect();
    }
    let next = AtomicUsize::new(0);
    let span = tracing::Span::current();
    let slots: Vec<OnceLock<Result<T, RagError>>> =
        chunks.iter().map(|_| OnceLock::new()).collect();
    let work = || loop {
        let _in_span = span.enter();
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(chunk) = chunks.get(i) else { break };
        let out = run(chunk);
        let failed = out.is_err();
        let _ = slots[i].set(out);
        if failed {
            // Stop handing out chunks: the call fails with the first error anyway.
            next.store(chunks.len(), Ordering::Relaxed);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(work);
        }
        work();
    });
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot.into_inner() {
            Some(r) => out.push(r?),
            None => break,
        }
    }
    Ok(out)
}

/// Indices of `lens` ordered by length, so batches pad little; the original order is restored
/// by writing each result at its index.
pub(crate) fn by_length(lens: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut order: Vec<(usize, usize)> = lens.enumerate().map(|(i, l)| (l, i)).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i).collect()
}
