//! Neural retrieval over C: a sentence embedder and a cross-encoder reranker, each loaded from a
//! model directory (model.onnx + tokenizer.json).
//!
//! ONNX Runtime is found at run time (the path named with `keel_onnxruntime_set_path`, else
//! `ORT_DYLIB_PATH`, else next to the executable, else the system loader); when it is missing,
//! opening a model returns KEEL_ERR_RAG_RUNTIME with a message that says how to install it. Embeddings and scores are written into caller-provided
//! float buffers; a dense index returns `keel_hits`, read with the same functions as BM25's.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use keel_core::rag::{
    rerank_hits, runtime, CrossEncoder, CrossEncoderOptions, DenseIndex, Embedder, EmbedderOptions,
    Passage, Precision, RagError,
};
use keel_core::Error;

use crate::error::{keel_result, FfiError, KEEL_ERR_BUFFER_TOO_SMALL};
use crate::ffi::{self, try_array, try_out, try_ref, try_str};
use crate::panic::ffi_guard;
use crate::rag::{document, filter, keel_hits};

/// A sentence-embedding model. Thread-safety: every function may be called concurrently on the
/// same `keel_embedder` (up to `sessions` calls run at once, the others wait for a session;
/// concurrent one-text calls are batched together), except `keel_embedder_free`.
pub struct keel_embedder {
    pub(crate) inner: Arc<Embedder>,
}

/// A cross-encoder reranker. Thread-safety: as `keel_embedder`.
pub struct keel_cross_encoder {
    pub(crate) inner: Arc<CrossEncoder>,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_embedder>();
    shareable::<keel_cross_encoder>();
};

fn rag_err(e: RagError) -> FfiError {
    FfiError::from(Error::Rag(e))
}

/// `count` UTF-8 strings given as parallel arrays of pointers and lengths.
///
/// # Safety
/// `ptrs` and `lens` each hold `count` readable elements; each `ptrs[i]` has `lens[i]` bytes.
unsafe fn strings<'a>(
    ptrs: &'a [*const c_char],
    lens: &'a [usize],
    name: &'static str,
) -> Result<Vec<&'a str>, FfiError> {
    ptrs.iter()
        .zip(lens)
        .map(|(&p, &n)| {
            // SAFETY: per this function's contract.
            unsafe { ffi::str_arg(p, n, name) }
        })
        .collect()
}

/// Names the ONNX Runtime shared library (`libonnxruntime.so*`, version 1.31 or newer) that
/// every model in this process loads, ahead of `ORT_DYLIB_PATH` and the system loader. Call it
/// before the first model is opened (`keel_embedder_new`, `keel_cross_encoder_new`, or an
/// engine's neural accessors); an engine configuration's `retrieval.onnxruntime` does the same.
/// Without it the library comes from `ORT_DYLIB_PATH`, else next to the executable, else the
/// system loader. The path is only recorded here: a file that does not load makes the first
/// model open fail with KEEL_ERR_RAG_RUNTIME naming it.
///
/// - `path`: UTF-8, `path_len` bytes.
///
/// Returns: KEEL_OK when this path is the one in effect; KEEL_ERR_RAG_RUNTIME when another path
/// was named first or ONNX Runtime is already loaded (the message says which); KEEL_ERR_INVALID_UTF8.
/// NULL: `path` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread; the first call wins.
#[no_mangle]
pub unsafe extern "C" fn keel_onnxruntime_set_path(
    path: *const c_char,
    path_len: usize,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = try_str!(path, path_len);
        if runtime::set_library_path(path) {
            Ok(())
        } else {
            Err(rag_err(RagError::Runtime(format!(
                "{path} was not applied: another ONNX Runtime library was named first or one \
                 is already loaded"
            ))))
        }
    })
}

/// Opens a sentence-embedding model directory: model.onnx and tokenizer.json, optionally
/// sentence_bert_config.json (max length) and 1_Pooling/config.json (mean or CLS pooling).
///
/// - `path`: the directory, UTF-8, `path_len` bytes.
/// - `threads`: ONNX Runtime intra-op threads (0: one per core; a value above the core count
///   is lowered to it; above 1024 is KEEL_ERR_RAG_INVALID_CONFIG).
/// - `batch_size`: texts per inference call, at least 1 (bounds memory).
/// - `max_length`: truncation in tokens (0: from the directory, else the tokenizer, else 512).
///
/// Returns: KEEL_OK and writes `*out_embedder`; KEEL_ERR_RAG_MODEL for a missing or malformed
/// directory; KEEL_ERR_RAG_RUNTIME when ONNX Runtime cannot be found or started;
/// KEEL_ERR_RAG_INVALID_CONFIG for a batch size of 0 or more than 1024 threads (checked before
/// the directory is read).
///
/// Ownership: the caller owns the embedder and releases it with `keel_embedder_free`.
/// NULL: `path` or `out_embedder` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_new(
    path: *const c_char,
    path_len: usize,
    threads: u32,
    batch_size: u32,
    max_length: u32,
    out_embedder: *mut *mut keel_embedder,
) -> keel_result {
    // SAFETY: the caller's pointers, passed on under the same contract.
    unsafe {
        keel_embedder_new_pooled(
            path,
            path_len,
            threads,
            0,
            batch_size,
            max_length,
            out_embedder,
        )
    }
}

/// `keel_embedder_new` with the size of the model's session pool: `sessions` ONNX Runtime
/// sessions run up to that many calls at once, each with `threads` intra-op threads.
///
/// - `sessions`: 0 lets keel choose (one per core divided by `threads`); above 64 is
///   KEEL_ERR_RAG_INVALID_CONFIG naming the value.
/// - `threads`: intra-op threads per session (0: the cores divided by the sessions; a value
///   above that is lowered to it; above 1024 is KEEL_ERR_RAG_INVALID_CONFIG).
/// - the other arguments, returns, ownership and NULL: as `keel_embedder_new`.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_new_pooled(
    path: *const c_char,
    path_len: usize,
    threads: u32,
    sessions: u32,
    batch_size: u32,
    max_length: u32,
    out_embedder: *mut *mut keel_embedder,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(try_str!(path, path_len));
        let out_embedder = try_out!(out_embedder);
        let options = EmbedderOptions {
            threads: threads as usize,
            batch_size: batch_size as usize,
            max_length: (max_length > 0).then_some(max_length as usize),
            pooling: None,
            sessions: (sessions > 0).then_some(sessions as usize),
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

/// The number of ONNX Runtime sessions of `embedder` (calls that run at once), or 0 if it is
/// NULL.
///
/// Thread-safety: safe to call concurrently.
#[no_mangle]
pub unsafe extern "C" fn keel_embedder_sessions(embedder: *const keel_embedder) -> usize {
    // SAFETY: per the handle contract, NULL or a live keel_embedder.
    ffi_guard!(or 0, {
        unsafe { ffi::ref_or_none(embedder) }.map_or(0, |e| e.inner.sessions())
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
    texts: *const *const c_char,
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
/// - `threads`: ONNX Runtime intra-op threads (0: one per core; a value above the core count
///   is lowered to it; above 1024 is KEEL_ERR_RAG_INVALID_CONFIG).
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
    path: *const c_char,
    path_len: usize,
    threads: u32,
    batch_size: u32,
    max_length: u32,
    out_model: *mut *mut keel_cross_encoder,
) -> keel_result {
    // SAFETY: the caller's pointers, passed on under the same contract.
    unsafe {
        keel_cross_encoder_new_pooled(
            path, path_len, threads, 0, batch_size, max_length, out_model,
        )
    }
}

/// `keel_cross_encoder_new` with the size of the model's session pool (`sessions`, `threads`:
/// as `keel_embedder_new_pooled`); the other arguments, returns, ownership and NULL: as
/// `keel_cross_encoder_new`.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_new_pooled(
    path: *const c_char,
    path_len: usize,
    threads: u32,
    sessions: u32,
    batch_size: u32,
    max_length: u32,
    out_model: *mut *mut keel_cross_encoder,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(try_str!(path, path_len));
        let out_model = try_out!(out_model);
        let options = CrossEncoderOptions {
            threads: threads as usize,
            batch_size: batch_size as usize,
            max_length: (max_length > 0).then_some(max_length as usize),
            sessions: (sessions > 0).then_some(sessions as usize),
        };
        let inner = CrossEncoder::open(&path, options).map_err(rag_err)?;
        out_model.write(ffi::into_raw(keel_cross_encoder {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// The number of ONNX Runtime sessions of `model` (calls that run at once), or 0 if it is NULL.
///
/// Thread-safety: safe to call concurrently.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_sessions(model: *const keel_cross_encoder) -> usize {
    // SAFETY: per the handle contract, NULL or a live keel_cross_encoder.
    ffi_guard!(or 0, {
        unsafe { ffi::ref_or_none(model) }.map_or(0, |m| m.inner.sessions())
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
    query: *const c_char,
    query_len: usize,
    passages: *const *const c_char,
    passage_lens: *const usize,
    count: usize,
    out_scores: *mut f32,
    out_len: usize,
) -> keel_result {
    ffi_guard!({
        let model = try_ref!(model);
        let query = try_str!(query, query_len);
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

/// Reranks search results: the first `top` hits of `hits` (all of them when `top` is at least
/// `keel_hits_count(hits)`, e.g. SIZE_MAX) are reordered by this cross-encoder's score for
/// `query` (UTF-8); the rest follow in their order. Each reranked hit's score becomes the
/// cross-encoder's, and tied scores break by document id, then chunk id, ascending (the same
/// order as the Rust and Python reranks). `hits` is not changed.
///
/// Returns: KEEL_OK and writes `*out_hits` (new results, read with the `keel_hits_*` functions);
/// KEEL_ERR_INVALID_UTF8; KEEL_ERR_RAG_MODEL if inference fails.
/// Ownership: the caller owns `*out_hits` and frees it with `keel_hits_free`; `hits` stays the
/// caller's.
/// NULL: `model`, `hits` or `out_hits` NULL gives KEEL_ERR_NULL_ARG; `query` may be NULL when
/// `query_len` is 0.
/// Thread-safety: safe to call concurrently on the same model and the same `hits`.
#[no_mangle]
pub unsafe extern "C" fn keel_cross_encoder_rerank(
    model: *const keel_cross_encoder,
    query: *const c_char,
    query_len: usize,
    hits: *const keel_hits,
    top: usize,
    out_hits: *mut *mut keel_hits,
) -> keel_result {
    ffi_guard!({
        let model = try_ref!(model);
        let query = try_str!(query, query_len);
        let hits = try_ref!(hits);
        let out_hits = try_out!(out_hits);
        let reranked =
            rerank_hits(&*model.inner, query, hits.hits().to_vec(), top).map_err(rag_err)?;
        out_hits.write(ffi::into_raw(keel_hits::from_hits(reranked)));
        Ok(())
    })
}

/// An exact (brute-force cosine) index of document embeddings, f32 or int8. Thread-safety:
/// every function may be called concurrently on the same `keel_dense` (searches share a read
/// lock, changes take the write lock), except `keel_dense_free`.
pub struct keel_dense {
    pub(crate) inner: Arc<DenseIndex>,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_dense>();
};

/// Creates an empty dense index that embeds documents and queries with `embedder` (which it
/// keeps alive: the embedder may be freed before the index).
///
/// - `int8`: store 1 byte per dimension plus a per-row scale (4x less memory, approximate
///   scores) instead of 4-byte floats.
///
/// Returns: KEEL_OK and writes `*out_index`.
/// Ownership: the caller owns the index and releases it with `keel_dense_free`.
/// NULL: `embedder` or `out_index` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_new(
    embedder: *const keel_embedder,
    int8: bool,
    out_index: *mut *mut keel_dense,
) -> keel_result {
    ffi_guard!({
        let embedder = try_ref!(embedder);
        let out_index = try_out!(out_index);
        let precision = if int8 {
            Precision::Int8
        } else {
            Precision::F32
        };
        let inner = DenseIndex::new(Arc::clone(&embedder.inner), precision);
        out_index.write(ffi::into_raw(keel_dense {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Reopens an index written by `keel_dense_save`, searching with `embedder`, whose dimension
/// must match the file's.
///
/// Returns: KEEL_OK and writes `*out_index`; KEEL_ERR_RAG_IO if the file cannot be read;
/// KEEL_ERR_RAG_CORRUPT_INDEX if it is damaged or not a keel dense index;
/// KEEL_ERR_RAG_INVALID_CONFIG if the dimensions differ.
/// Ownership: the caller owns the index and releases it with `keel_dense_free`.
/// NULL: `path`, `embedder` or `out_index` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_open(
    path: *const c_char,
    path_len: usize,
    embedder: *const keel_embedder,
    out_index: *mut *mut keel_dense,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(try_str!(path, path_len));
        let embedder = try_ref!(embedder);
        let out_index = try_out!(out_index);
        let inner = DenseIndex::open(&path, Some(Arc::clone(&embedder.inner))).map_err(rag_err)?;
        out_index.write(ffi::into_raw(keel_dense {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Writes the index (passages and vectors) to `path` atomically (temporary file + rename).
///
/// Returns: KEEL_OK; KEEL_ERR_RAG_IO if the file cannot be written.
/// NULL: `index` or `path` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently with searches and changes.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_save(
    index: *const keel_dense,
    path: *const c_char,
    path_len: usize,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(try_str!(path, path_len));
        index.inner.save(&path).map_err(rag_err)
    })
}

/// Frees a dense index. NULL is a no-op. `keel_hits` obtained from it stay valid.
///
/// Thread-safety: call it exactly once, when no other call on `index` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_free(index: *mut keel_dense) {
    // SAFETY: per this doc, `index` is NULL or from keel_dense_new/open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(index) } })
}

/// Embeds and adds a document, replacing any document with the same id: `id`, `title` and
/// `text` are UTF-8 (pointer + length; title and text are embedded together); `metadata_json`
/// is a JSON object as UTF-8 text, or empty for none.
///
/// Returns: KEEL_OK; KEEL_ERR_RAG_INVALID_METADATA for bad metadata; KEEL_ERR_INVALID_UTF8;
/// KEEL_ERR_RAG_MODEL if inference fails.
/// NULL: `index` NULL gives KEEL_ERR_NULL_ARG; the strings may be NULL when their length is 0.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_add(
    index: *const keel_dense,
    id: *const c_char,
    id_len: usize,
    title: *const c_char,
    title_len: usize,
    text: *const c_char,
    text_len: usize,
    metadata_json: *const c_char,
    metadata_json_len: usize,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let doc = document(
            try_str!(id, id_len),
            try_str!(title, title_len),
            try_str!(text, text_len),
            try_str!(metadata_json, metadata_json_len),
        )?;
        index
            .inner
            .upsert(vec![Passage::whole(doc)])
            .map_err(rag_err)
    })
}

/// Deletes a document; writes whether it was indexed to `*out_deleted`.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_UTF8.
/// NULL: `index` or `out_deleted` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_delete(
    index: *const keel_dense,
    id: *const c_char,
    id_len: usize,
    out_deleted: *mut bool,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let id = try_str!(id, id_len);
        let out_deleted = try_out!(out_deleted);
        out_deleted.write(index.inner.delete(id));
        Ok(())
    })
}

/// Writes the number of indexed passages to `*out_len`.
///
/// NULL: `index` or `out_len` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_len(
    index: *const keel_dense,
    out_len: *mut u64,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let out_len = try_out!(out_len);
        out_len.write(index.inner.len() as u64);
        Ok(())
    })
}

/// Searches for the `k` documents most similar to `query` (UTF-8) whose metadata passes
/// `filter_json` (as in `keel_bm25_search`; empty for none). Hit scores are cosines; ties go to
/// the earlier-added passage. Read results with the `keel_hits_*` functions.
///
/// Returns: KEEL_OK and writes `*out_hits`; KEEL_ERR_RAG_INVALID_METADATA for a malformed
/// filter; KEEL_ERR_INVALID_UTF8; KEEL_ERR_RAG_MODEL if inference fails.
/// Ownership: the caller owns the results and frees them with `keel_hits_free`.
/// NULL: `index` or `out_hits` NULL gives KEEL_ERR_NULL_ARG; `query` and `filter_json` may be
/// NULL when their length is 0.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_dense_search(
    index: *const keel_dense,
    query: *const c_char,
    query_len: usize,
    k: usize,
    filter_json: *const c_char,
    filter_json_len: usize,
    out_hits: *mut *mut keel_hits,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let query = try_str!(query, query_len);
        let filter = filter(try_str!(filter_json, filter_json_len))?;
        let out_hits = try_out!(out_hits);
        let hits = index
            .inner
            .search_hits(query, k, filter.as_ref())
            .map_err(rag_err)?;
        out_hits.write(ffi::into_raw(keel_hits::from_hits(hits)));
        Ok(())
    })
}
