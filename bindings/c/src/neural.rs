//! Neural retrieval over C: a sentence embedder and a cross-encoder reranker, each loaded from a
//! model directory (model.onnx + tokenizer.json).
//!
//! ONNX Runtime is found at run time (`ORT_DYLIB_PATH`, else the `onnxruntime` wheel of
//! `KEEL_PYTHON` / the active virtualenv / `python3`, else next to the executable, else the
//! system loader); when it is missing, opening a model returns KEEL_ERR_RAG_RUNTIME with a
//! message that says how to install it. Results are written into caller-provided float buffers.

use std::path::PathBuf;
use std::sync::Arc;

use keel_core::rag::{CrossEncoder, CrossEncoderOptions, Embedder, EmbedderOptions, RagError};
use keel_core::Error;

use crate::error::{keel_result, FfiError, KEEL_ERR_BUFFER_TOO_SMALL, KEEL_ERR_INVALID_UTF8};
use crate::ffi::{self, try_array, try_bytes, try_out, try_ref};
use crate::panic::ffi_guard;

/// A sentence-embedding model. Thread-safety: every function may be called concurrently on the
/// same `keel_embedder` (calls take turns on the model), except `keel_embedder_free`.
pub struct keel_embedder {
    inner: Arc<Embedder>,
}

/// A cross-encoder reranker. Thread-safety: as `keel_embedder`.
pub struct keel_cross_encoder {
    inner: Arc<CrossEncoder>,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_embedder>();
    shareable::<keel_cross_encoder>();
};

fn rag_err(e: RagError) -> FfiError {
    FfiError::from(Error::Rag(e))
}

fn utf8<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, FfiError> {
    std::str::from_utf8(bytes).map_err(|_| {
        FfiError::new(
            KEEL_ERR_INVALID_UTF8,
            format!("argument `{name}` is not valid UTF-8"),
        )
    })
}

/// `count` UTF-8 strings given as parallel arrays of pointers and lengths.
///
/// # Safety
/// `ptrs` and `lens` each hold `count` readable elements; each `ptrs[i]` has `lens[i]` bytes.
unsafe fn strings<'a>(
    ptrs: &'a [*const u8],
    lens: &'a [usize],
    name: &'static str,
) -> Result<Vec<&'a str>, FfiError> {
    ptrs.iter()
        .zip(lens)
        .map(|(&p, &n)| {
            // SAFETY: per this function's contract.
            let bytes = unsafe { ffi::slice(p, n, name) }?;
            utf8(bytes, name)
        })
        .collect()
}

/// Opens a sentence-embedding model directory: model.onnx and tokenizer.json, optionally
/// sentence_bert_config.json (max length) and 1_Pooling/config.json (mean or CLS pooling).
///
/// - `path`: the directory, UTF-8, `path_len` bytes.
/// - `threads`: ONNX Runtime intra-op threads (0: one per core).
/// - `batch_size`: texts per inference call, at least 1 (bounds memory).
/// - `max_length`: truncation in tokens (0: from the directory, else the tokenizer, else 512).
///
/// Returns: KEEL_OK and writes `*out_embedder`; KEEL_ERR_RAG_MODEL for a missing or malformed
/// directory; KEEL_ERR_RAG_RUNTIME when ONNX Runtime cannot be found or started;
/// KEEL_ERR_RAG_INVALID_CONFIG for a batch size of 0.
///
/// Ownership: the caller owns the embedder and releases it with `keel_embedder_free`.
/// NULL: `path` or `out_embedder` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_new(
    path: *const u8,
    path_len: usize,
    threads: u32,
    batch_size: u32,
    max_length: u32,
    out_embedder: *mut *mut keel_embedder,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(utf8(try_bytes!(path, path_len), "path")?);
        let out_embedder = try_out!(out_embedder);
        let options = EmbedderOptions {
            threads: threads as usize,
            batch_size: batch_size as usize,
            max_length: (max_length > 0).then_some(max_length as usize),
            pooling: None,
        };
        let inner = Embedder::open(&path, options).map_err(rag_err)?;
        out_embedder.write(ffi::into_raw(keel_embedder {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees an embedder. NULL is a no-op.
///
/// Thread-safety: call it exactly once, when no other call on `embedder` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_free(embedder: *mut keel_embedder) {
    // SAFETY: per this doc, `embedder` is NULL or from keel_embedder_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(embedder) } })
}

/// The embedding dimension (e.g. 384), or 0 if `embedder` is NULL.
///
/// Thread-safety: safe to call concurrently.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_dim(embedder: *const keel_embedder) -> usize {
    // SAFETY: per the handle contract, NULL or a live keel_embedder.
    ffi_guard!(or 0, {
        unsafe { ffi::ref_or_none(embedder) }.map_or(0, |e| e.inner.dim())
    })
}

/// Embeds `count` texts (UTF-8; `texts[i]` has `text_lens[i]` bytes) into `out`, row-major:
/// row `i` (`dim` floats, unit L2 norm) is the embedding of text `i`.
///
/// Returns: KEEL_OK; KEEL_ERR_BUFFER_TOO_SMALL if `out_len` < `count * dim` (nothing written);
/// KEEL_ERR_INVALID_UTF8; KEEL_ERR_RAG_MODEL if inference fails.
///
/// Ownership: `out` (caller-owned, `out_len` floats) is written only on success.
/// NULL: any pointer NULL gives KEEL_ERR_NULL_ARG (`texts`, `text_lens` and `out` may be NULL
/// when `count` is 0).
/// Thread-safety: safe to call concurrently on the same embedder.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_embed(
    embedder: *const keel_embedder,
    texts: *const *const u8,
    text_lens: *const usize,
    count: usize,
    out: *mut f32,
    out_len: usize,
) -> keel_result {
    ffi_guard!({
        let embedder = try_ref!(embedder);
        let texts = try_array!(texts, count);
        let text_lens = try_array!(text_lens, count);
        // SAFETY: the arrays hold `count` elements, each text its length in bytes.
        let texts = unsafe { strings(texts, text_lens, "texts") }?;
        let dim = embedder.inner.dim();
        let needed = count.saturating_mul(dim);
        if out_len < needed {
            return Err(FfiError::new(
                KEEL_ERR_BUFFER_TOO_SMALL,
                format!("out holds {out_len} floats; {needed} are needed"),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        if out.is_null() {
            return Err(FfiError::null_arg("out"));
        }
        let vectors = embedder.inner.embed(&texts).map_err(rag_err)?;
        // SAFETY: `out` is non-NULL and holds `out_len` >= count * dim writable floats.
        let out = unsafe { std::slice::from_raw_parts_mut(out, needed) };
        for (row, v) in out.chunks_exact_mut(dim).zip(&vectors) {
            row.copy_from_slice(v);
        }
        Ok(())
    })
}

/// Opens a cross-encoder directory (any ONNX sequence-classification model with inputs
/// input_ids, attention_mask and optionally token_type_ids, plus its tokenizer.json).
///
/// - `threads`: ONNX Runtime intra-op threads (0: one per core).
/// - `batch_size`: pairs per inference call, at least 1 (bounds memory).
/// - `max_length`: truncation of query + passage in tokens (0: from the directory, else the
///   tokenizer, else 512).
///
/// Returns: as `keel_embedder_new`.
/// Ownership: the caller owns the model and releases it with `keel_cross_encoder_free`.
/// NULL: `path` or `out_model` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_new(
    path: *const u8,
    path_len: usize,
    threads: u32,
    batch_size: u32,
    max_length: u32,
    out_model: *mut *mut keel_cross_encoder,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(utf8(try_bytes!(path, path_len), "path")?);
        let out_model = try_out!(out_model);
        let options = CrossEncoderOptions {
            threads: threads as usize,
            batch_size: batch_size as usize,
            max_length: (max_length > 0).then_some(max_length as usize),
        };
        let inner = CrossEncoder::open(&path, options).map_err(rag_err)?;
        out_model.write(ffi::into_raw(keel_cross_encoder {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees a cross-encoder. NULL is a no-op.
///
/// Thread-safety: call it exactly once, when no other call on `model` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_free(model: *mut keel_cross_encoder) {
    // SAFETY: per this doc, `model` is NULL or from keel_cross_encoder_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(model) } })
}

/// Scores `count` passages against `query` (all UTF-8, pointer + length) into `out_scores`:
/// `out_scores[i]` is the relevance of passage `i` (higher is more relevant).
///
/// Returns: KEEL_OK; KEEL_ERR_BUFFER_TOO_SMALL if `out_len` < `count` (nothing written);
/// KEEL_ERR_INVALID_UTF8; KEEL_ERR_RAG_MODEL if inference fails.
///
/// Ownership: `out_scores` (caller-owned) is written only on success.
/// NULL: any pointer NULL gives KEEL_ERR_NULL_ARG (`passages`, `passage_lens` and `out_scores`
/// may be NULL when `count` is 0).
/// Thread-safety: safe to call concurrently on the same model.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_score(
    model: *const keel_cross_encoder,
    query: *const u8,
    query_len: usize,
    passages: *const *const u8,
    passage_lens: *const usize,
    count: usize,
    out_scores: *mut f32,
    out_len: usize,
) -> keel_result {
    ffi_guard!({
        let model = try_ref!(model);
        let query = utf8(try_bytes!(query, query_len), "query")?;
        let passages = try_array!(passages, count);
        let passage_lens = try_array!(passage_lens, count);
        // SAFETY: the arrays hold `count` elements, each passage its length in bytes.
        let passages = unsafe { strings(passages, passage_lens, "passages") }?;
        if out_len < count {
            return Err(FfiError::new(
                KEEL_ERR_BUFFER_TOO_SMALL,
                format!("out_scores holds {out_len} floats; {count} are needed"),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        if out_scores.is_null() {
            return Err(FfiError::null_arg("out_scores"));
        }
        let scores = model.inner.score(query, &passages).map_err(rag_err)?;
        // SAFETY: `out_scores` is non-NULL and holds `out_len` >= count writable floats.
        unsafe { std::slice::from_raw_parts_mut(out_scores, count) }.copy_from_slice(&scores);
        Ok(())
    })
}
