//! The knowledge base over C: `keel_kb` owns an `Arc<KnowledgeBase>` (a folder of txt /
//! Markdown / HTML files indexed incrementally, persisted, searched with BM25 or hybrid
//! BM25 + dense + RRF, optionally reranked). Searches return the `keel_hits` of `rag.rs`.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use keel_core::rag::{KnowledgeBase, KnowledgeBaseOptions, RagError, Reranker};
use keel_core::Error;

use crate::error::{keel_result, FfiError};
use crate::ffi::{self, try_out, try_ref, try_str};
use crate::neural::{keel_cross_encoder, keel_embedder};
use crate::panic::ffi_guard;
use crate::rag::keel_hits;

/// A knowledge base. Thread-safety: every function may be called concurrently on the same
/// `keel_kb` (searches run in parallel; indexing calls take turns), except `keel_kb_free`.
pub struct keel_kb {
    inner: Arc<KnowledgeBase>,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_kb>();
};

/// What one `keel_kb_index_folder` call did. Plain data; its layout is part of the ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct keel_index_report {
    /// Files indexed for the first time.
    pub added: u64,
    /// Files whose content changed (re-chunked and re-embedded).
    pub updated: u64,
    /// Files gone from the folder, whose documents were deleted.
    pub removed: u64,
    /// Files whose content hash was unchanged.
    pub unchanged: u64,
    /// Passages (chunks) indexed by the call.
    pub chunks: u64,
}

/// Progress of `keel_kb_index_folder`: `done` of `total` files handled, reported once with
/// `done` 0, then after each indexing step, the last time with `done == total`. Return 0 to go
/// on; anything else stops indexing with KEEL_ERR_RAG_CANCELLED. Called on the indexing thread.
pub type keel_kb_progress =
    Option<unsafe extern "C" fn(done: u64, total: u64, user_data: *mut c_void) -> i32>;

fn rag_err(e: RagError) -> FfiError {
    FfiError::from(Error::Rag(e))
}

fn opt(v: u64) -> Option<usize> {
    (v > 0).then_some(v as usize)
}

/// Opens (or creates) a knowledge base.
///
/// - `path`: its directory, UTF-8, `path_len` bytes; empty (`path_len` 0) for one in memory.
///   An existing knowledge base is reopened without re-indexing.
/// - `embedder`: NULL for BM25 alone; else dense retrieval fused with BM25 by RRF. A knowledge
///   base built with an embedder must be reopened with one of the same dimension.
/// - `cross_encoder`: NULL, or the reranker of the best `rerank_top` fused hits.
/// - `chunk_size`, `chunk_overlap`: chunking in chars (0: the stored value, else 1000 and 100);
///   reopening with other chunking than the stored one is KEEL_ERR_RAG_INVALID_CONFIG.
/// - `rerank_top`: hits reranked (0: 20).
///
/// Returns: KEEL_OK and writes `*out_kb`; KEEL_ERR_RAG_INVALID_CONFIG (bad chunking, a path
/// that is not a directory, an embedder mismatch); KEEL_ERR_RAG_IO / KEEL_ERR_RAG_CORRUPT_INDEX
/// for unreadable or damaged files; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the knowledge base and frees it with `keel_kb_free`; it keeps its
/// own references to the embedder and cross-encoder, which may be freed at once.
/// NULL: `out_kb` NULL gives KEEL_ERR_NULL_ARG; `path` may be NULL when `path_len` is 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn keel_kb_open(
    path: *const c_char,
    path_len: usize,
    embedder: *const keel_embedder,
    cross_encoder: *const keel_cross_encoder,
    chunk_size: u64,
    chunk_overlap: u64,
    rerank_top: u64,
    out_kb: *mut *mut keel_kb,
) -> keel_result {
    ffi_guard!({
        let path = try_str!(path, path_len);
        let out_kb = try_out!(out_kb);
        let mut builder = KnowledgeBase::builder().options(KnowledgeBaseOptions {
            chunk_size: opt(chunk_size),
            chunk_overlap: opt(chunk_overlap),
            candidates: None,
            rerank_top: opt(rerank_top),
        });
        if !path.is_empty() {
            builder = builder.path(PathBuf::from(path));
        }
        if !embedder.is_null() {
            let embedder = try_ref!(embedder);
            builder = builder.embedder(Arc::clone(&embedder.inner));
        }
        if !cross_encoder.is_null() {
            let cross_encoder = try_ref!(cross_encoder);
            builder = builder.reranker(Arc::clone(&cross_encoder.inner) as Arc<dyn Reranker>);
        }
        let inner = builder.open().map_err(rag_err)?;
        out_kb.write(ffi::into_raw(keel_kb {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees a knowledge base (it was saved by each `keel_kb_index_folder`). NULL is a no-op.
///
/// Thread-safety: call it exactly once, when no other call on `kb` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_kb_free(kb: *mut keel_kb) {
    // SAFETY: per this doc, `kb` is NULL or from keel_kb_open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(kb) } })
}

/// Indexes the txt / Markdown / HTML files under `folder` (UTF-8, `folder_len` bytes)
/// incrementally: new and changed files (by SHA-256 of their bytes) are chunked and embedded,
/// unchanged ones skipped, files gone from the folder removed; then the knowledge base is
/// saved. Document ids are paths relative to `folder` with `/` separators.
///
/// - `progress`: NULL, or called as described at `keel_kb_progress` with `user_data`.
///
/// Returns: KEEL_OK and writes `*out_report` if not NULL; KEEL_ERR_RAG_SOURCE for a missing
/// folder or an unreadable or non-UTF-8 file (nothing is changed then; the message names the
/// path); KEEL_ERR_RAG_CANCELLED when `progress` returned nonzero (files indexed before are
/// kept and saved); KEEL_ERR_RAG_IO when saving fails; KEEL_ERR_RAG_MODEL if embedding fails.
///
/// NULL: `kb` NULL gives KEEL_ERR_NULL_ARG; `folder` NULL with `folder_len` 0 names "".
/// Thread-safety: safe to call concurrently on one knowledge base (indexing calls take turns).
#[no_mangle]
pub unsafe extern "C" fn keel_kb_index_folder(
    kb: *const keel_kb,
    folder: *const c_char,
    folder_len: usize,
    progress: keel_kb_progress,
    user_data: *mut c_void,
    out_report: *mut keel_index_report,
) -> keel_result {
    ffi_guard!({
        let kb = try_ref!(kb);
        let folder = try_str!(folder, folder_len);
        let report = kb
            .inner
            .index_folder_with_progress(folder, &mut |p| match progress {
                // SAFETY: the caller's callback, called with its own user_data, per this doc.
                Some(f) => unsafe { f(p.done as u64, p.total as u64, user_data) == 0 },
                None => true,
            })
            .map_err(rag_err)?;
        if !out_report.is_null() {
            let out_report = try_out!(out_report);
            out_report.write(keel_index_report {
                added: report.added as u64,
                updated: report.updated as u64,
                removed: report.removed as u64,
                unchanged: report.unchanged as u64,
                chunks: report.chunks as u64,
            });
        }
        Ok(())
    })
}

/// The `k` (at least 1) best passages for `query` (UTF-8), best first, each citing its
/// document id, chunk id, offsets in the document's text, title and metadata (read them with
/// `keel_hits_get` / `keel_hits_text`).
///
/// Returns: KEEL_OK and writes `*out_hits`; KEEL_ERR_RAG_INVALID_CONFIG for `k` 0;
/// KEEL_ERR_RAG_MODEL if embedding the query fails; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller frees `*out_hits` with `keel_hits_free`.
/// NULL: `kb` or `out_hits` NULL gives KEEL_ERR_NULL_ARG; `query` may be NULL when
/// `query_len` is 0.
/// Thread-safety: safe to call concurrently on one knowledge base.
#[no_mangle]
pub unsafe extern "C" fn keel_kb_search(
    kb: *const keel_kb,
    query: *const c_char,
    query_len: usize,
    k: usize,
    out_hits: *mut *mut keel_hits,
) -> keel_result {
    ffi_guard!({
        let kb = try_ref!(kb);
        let query = try_str!(query, query_len);
        let out_hits = try_out!(out_hits);
        let hits = kb.inner.search(query, k).map_err(rag_err)?;
        out_hits.write(ffi::into_raw(keel_hits::from_hits(hits)));
        Ok(())
    })
}

/// Documents indexed in the knowledge base.
///
/// Returns: KEEL_OK and writes `*out_len`.
/// NULL: `kb` or `out_len` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one knowledge base.
#[no_mangle]
pub unsafe extern "C" fn keel_kb_documents(kb: *const keel_kb, out_len: *mut u64) -> keel_result {
    ffi_guard!({
        let kb = try_ref!(kb);
        let out_len = try_out!(out_len);
        out_len.write(kb.inner.documents() as u64);
        Ok(())
    })
}
