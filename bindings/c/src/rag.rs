//! Retrieval over C: a BM25 index handle, search results, and text chunking.
//!
//! `keel_bm25` owns an `Arc<Bm25Index>`: every function may be called on it from any number of
//! threads at once (searches share a read lock, changes take the write lock). A search returns a
//! `keel_hits` that owns its results (the passages are shared with the index, so they stay valid
//! after the document is deleted or the index freed). Strings cross as UTF-8 pointer + length;
//! metadata and filters as JSON text. `keel_chunks` holds only offsets into the caller's text.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use keel_core::rag::{
    self, AnalyzerConfig, Bm25Config, Bm25Index, Chunker, Document, Filter, Hit, Span,
};
use keel_core::Error;

use crate::error::{keel_result, FfiError, KEEL_ERR_INVALID_ARGUMENT, KEEL_ERR_NOT_FOUND};
use crate::ffi::{self, try_out, try_ref, try_str};
use crate::panic::ffi_guard;

/// A BM25 (Lucene variant) index of documents, with Unicode word segmentation, lowercasing,
/// stopword removal and Snowball stemming.
///
/// Thread-safety: every function may be called concurrently on the same `keel_bm25`, except
/// `keel_bm25_free`, which must be called once no other call on it is in flight.
pub struct keel_bm25 {
    pub(crate) inner: Arc<Bm25Index>,
}

/// The results of one search, best first. Read-only; safe to read from several threads at once.
pub struct keel_hits {
    hits: Vec<Hit>,
    /// Each hit's metadata as JSON, made on first request (most callers never ask).
    metadata_json: Vec<OnceLock<String>>,
}

impl keel_hits {
    /// Results of a search (BM25 here, the dense index and the reranker in `neural.rs`).
    pub(crate) fn from_hits(hits: Vec<Hit>) -> Self {
        let metadata_json = hits.iter().map(|_| OnceLock::new()).collect();
        Self {
            hits,
            metadata_json,
        }
    }

    /// The hits, best first.
    pub(crate) fn hits(&self) -> &[Hit] {
        &self.hits
    }
}

/// The chunks of one text: only offsets into the caller's text. Read-only; safe to share.
pub struct keel_chunks {
    spans: Vec<Span>,
}

/// Where a chunk or a hit lies in its source text: bytes `[byte_start, byte_end)` of the UTF-8
/// text, and the same bounds counted in Unicode scalar values (chars). Plain data; its layout is
/// part of the ABI and never changes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct keel_span {
    /// Byte offset of the first byte.
    pub byte_start: u64,
    /// Byte offset one past the last byte.
    pub byte_end: u64,
    /// Char offset of the first char.
    pub char_start: u64,
    /// Char offset one past the last char.
    pub char_end: u64,
}

impl From<Span> for keel_span {
    fn from(s: Span) -> Self {
        Self {
            byte_start: s.byte_start as u64,
            byte_end: s.byte_end as u64,
            char_start: s.char_start as u64,
            char_end: s.char_end as u64,
        }
    }
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_bm25>();
    shareable::<keel_hits>();
    shareable::<keel_chunks>();
};

fn rag_err(e: rag::RagError) -> FfiError {
    FfiError::from(Error::Rag(e))
}

/// A document from its C arguments (metadata as JSON text, empty for none).
pub(crate) fn document(
    id: &str,
    title: &str,
    text: &str,
    metadata_json: &str,
) -> Result<Document, FfiError> {
    Ok(Document {
        id: id.to_owned(),
        title: title.to_owned(),
        text: text.to_owned(),
        metadata: rag::metadata_from_json(metadata_json).map_err(rag_err)?,
    })
}

/// A metadata filter from JSON text; empty (or blank) text is no filter.
pub(crate) fn filter(json: &str) -> Result<Option<Filter>, FfiError> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    Filter::parse(json).map(Some).map_err(rag_err)
}

/// Creates an empty BM25 index.
///
/// - `k1`: term-frequency saturation, finite and >= 0 (Lucene: 1.2).
/// - `b`: length normalisation in [0, 1] (Lucene: 0.75).
/// - `language`: ISO 639-1 code of the analyzer ("en", "fr", "de", ...), UTF-8, `language_len`
///   bytes; an empty language means "en".
/// - `stemming`: apply the language's Snowball stemmer; `stopwords`: drop its stopwords.
///
/// Returns: KEEL_OK and writes `*out_index`; KEEL_ERR_RAG_INVALID_CONFIG for a bad k1 or b, or a
/// language without a stemmer (when stemming) or stopword list (when removing stopwords).
///
/// Ownership: the caller owns the index and releases it with `keel_bm25_free`.
/// NULL: `out_index` NULL gives KEEL_ERR_NULL_ARG; `language` may be NULL when `language_len` is 0.
/// Thread-safety: the new index may be used by any number of threads at once.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_new(
    k1: f32,
    b: f32,
    language: *const c_char,
    language_len: usize,
    stemming: bool,
    stopwords: bool,
    out_index: *mut *mut keel_bm25,
) -> keel_result {
    ffi_guard!({
        let language = try_str!(language, language_len);
        let out_index = try_out!(out_index);
        let config = Bm25Config {
            k1,
            b,
            analyzer: AnalyzerConfig {
                // An empty language is the C door's "core default".
                language: if language.is_empty() {
                    AnalyzerConfig::default().language
                } else {
                    language.to_owned()
                },
                stemming,
                stopwords,
            },
        };
        let inner = Bm25Index::new(config).map_err(rag_err)?;
        out_index.write(ffi::into_raw(keel_bm25 {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Reopens an index written by `keel_bm25_save` (no text is re-analysed).
///
/// - `path`: a file path, UTF-8, `path_len` bytes.
///
/// Returns: KEEL_OK and writes `*out_index`; KEEL_ERR_RAG_IO if the file cannot be read;
/// KEEL_ERR_RAG_CORRUPT_INDEX if it is not a keel index, is damaged, or of another version.
///
/// Ownership: the caller owns the index and releases it with `keel_bm25_free`.
/// NULL: `path` or `out_index` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_open(
    path: *const c_char,
    path_len: usize,
    out_index: *mut *mut keel_bm25,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        let path = PathBuf::from(try_str!(path, path_len));
        let out_index = try_out!(out_index);
        let inner = Bm25Index::open(&path).map_err(rag_err)?;
        out_index.write(ffi::into_raw(keel_bm25 {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Writes the index to `path` atomically: a temporary file in the same directory, flushed, then
/// renamed over `path`, so readers see the old file or the new one, never a torn one.
///
/// Returns: KEEL_OK; KEEL_ERR_RAG_IO if the file cannot be written.
///
/// NULL: `index` or `path` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently with searches and changes (it saves a consistent
/// snapshot).
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_save(
    index: *const keel_bm25,
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

/// Frees an index. NULL is a no-op. `keel_hits` obtained from it stay valid.
///
/// Thread-safety: call it exactly once, when no other call on `index` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_free(index: *mut keel_bm25) {
    // SAFETY: per this doc, `index` is NULL or a keel_bm25 from keel_bm25_new/open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(index) } })
}

/// Adds a document: `id`, `title` and `text` are UTF-8 (pointer + length); `metadata_json` is a
/// JSON object as UTF-8 text, or empty for none. Title and text are both searched.
///
/// Returns: KEEL_OK; KEEL_ERR_RAG_DUPLICATE_DOCUMENT if `id` is already indexed;
/// KEEL_ERR_RAG_INVALID_METADATA if the metadata is not a JSON object; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: every buffer is copied; the caller keeps them.
/// NULL: `index` NULL gives KEEL_ERR_NULL_ARG; a buffer may be NULL only when its length is 0.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_add(
    index: *const keel_bm25,
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
        index.inner.add(doc).map_err(rag_err)
    })
}

/// Replaces the document `id` (or adds it if absent). Arguments as `keel_bm25_add`.
///
/// Returns: KEEL_OK; KEEL_ERR_RAG_INVALID_METADATA; KEEL_ERR_INVALID_UTF8.
/// NULL: as `keel_bm25_add`.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_update(
    index: *const keel_bm25,
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
        index.inner.update(doc).map_err(rag_err)
    })
}

/// Deletes the document `id`.
///
/// Returns: KEEL_OK if it was indexed; KEEL_ERR_NOT_FOUND if not.
/// NULL: `index` NULL gives KEEL_ERR_NULL_ARG; `id` may be NULL when `id_len` is 0.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_delete(
    index: *const keel_bm25,
    id: *const c_char,
    id_len: usize,
) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let id = try_str!(id, id_len);
        if index.inner.delete(id) {
            Ok(())
        } else {
            Err(FfiError::new(
                KEEL_ERR_NOT_FOUND,
                "no document with this id",
            ))
        }
    })
}

/// The number of documents indexed.
///
/// Returns: KEEL_OK and writes `*out_len`.
/// NULL: `index` or `out_len` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_len(index: *const keel_bm25, out_len: *mut u64) -> keel_result {
    ffi_guard!({
        let index = try_ref!(index);
        let out_len = try_out!(out_len);
        out_len.write(index.inner.stats().documents as u64);
        Ok(())
    })
}

/// Searches for the `k` best documents for `query` (UTF-8) whose metadata passes
/// `filter_json` (a JSON filter such as `{"lang": "en", "year": {"$gte": 2020}}`, or empty for
/// none). Ties in score are broken by document id, ascending.
///
/// Returns: KEEL_OK and writes `*out_hits` (possibly with 0 hits);
/// KEEL_ERR_RAG_INVALID_METADATA for a malformed filter; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the results and frees them with `keel_hits_free`.
/// NULL: `index` or `out_hits` NULL gives KEEL_ERR_NULL_ARG; `query` and `filter_json` may be
/// NULL when their length is 0.
/// Thread-safety: safe to call concurrently on one index.
#[no_mangle]
pub unsafe extern "C" fn keel_bm25_search(
    index: *const keel_bm25,
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
        let hits = index.inner.search(query, k, filter.as_ref());
        out_hits.write(ffi::into_raw(keel_hits::from_hits(hits)));
        Ok(())
    })
}

/// Frees search results. NULL is a no-op; strings read from them become invalid.
///
/// Thread-safety: call it once, when no other call on `hits` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_hits_free(hits: *mut keel_hits) {
    // SAFETY: per this doc, `hits` is NULL or came from keel_bm25_search, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(hits) } })
}

/// The number of hits; 0 for NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_hits_count(hits: *const keel_hits) -> usize {
    // SAFETY: per this doc, NULL or a live keel_hits.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(hits) }.map_or(0, |h| h.hits.len()) })
}

fn hit_at(hits: &keel_hits, i: usize) -> Result<&Hit, FfiError> {
    hits.hits.get(i).ok_or_else(|| {
        FfiError::new(
            KEEL_ERR_INVALID_ARGUMENT,
            format!(
                "hit index {i} is out of range (there are {})",
                hits.hits.len()
            ),
        )
    })
}

/// Reads hit `i` (0-based, best first): its document id, chunk id, score and offsets.
///
/// - `*out_doc_id` / `*out_doc_id_len`: the document id, UTF-8, not NUL-terminated, owned by
///   `hits` and valid until `keel_hits_free`.
/// - `*out_chunk_id`: the chunk's position in its document (0 for an unchunked document).
/// - `*out_score`: the BM25 score (higher is better).
/// - `*out_span`: the passage's offsets in the document's text.
///
/// Returns: KEEL_OK and writes every out-parameter; KEEL_ERR_INVALID_ARGUMENT when `i` is not
/// below `keel_hits_count(hits)` (nothing is written).
/// NULL: any argument NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_hits`.
#[no_mangle]
pub unsafe extern "C" fn keel_hits_get(
    hits: *const keel_hits,
    i: usize,
    out_doc_id: *mut *const c_char,
    out_doc_id_len: *mut usize,
    out_chunk_id: *mut u32,
    out_score: *mut f64,
    out_span: *mut keel_span,
) -> keel_result {
    ffi_guard!({
        let hits = try_ref!(hits);
        let (out_doc_id, out_doc_id_len) = (try_out!(out_doc_id), try_out!(out_doc_id_len));
        let (out_chunk_id, out_score, out_span) = (
            try_out!(out_chunk_id),
            try_out!(out_score),
            try_out!(out_span),
        );
        let hit = hit_at(hits, i)?;
        out_doc_id.write(hit.passage.doc_id.as_ptr().cast::<c_char>());
        out_doc_id_len.write(hit.passage.doc_id.len());
        out_chunk_id.write(hit.passage.chunk_id);
        out_score.write(hit.score);
        out_span.write(hit.passage.span.into());
        Ok(())
    })
}

/// Selects a text field of a hit for `keel_hits_text`.
pub type keel_hit_field = u32;
/// The document's title.
pub const KEEL_HIT_TITLE: keel_hit_field = 0;
/// The passage text (the whole document text for an unchunked document).
pub const KEEL_HIT_TEXT: keel_hit_field = 1;
/// The document's metadata as a JSON object ("{}" when it has none).
pub const KEEL_HIT_METADATA: keel_hit_field = 2;

/// Reads a text field of hit `i`: `KEEL_HIT_TITLE`, `KEEL_HIT_TEXT` or `KEEL_HIT_METADATA`.
///
/// Returns: KEEL_OK and writes `*out_data` / `*out_len` (UTF-8, not NUL-terminated, owned by
/// `hits` and valid until `keel_hits_free`); KEEL_ERR_INVALID_ARGUMENT for an index out of range
/// or an unknown field.
/// NULL: any pointer argument NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_hits`.
#[no_mangle]
pub unsafe extern "C" fn keel_hits_text(
    hits: *const keel_hits,
    i: usize,
    field: keel_hit_field,
    out_data: *mut *const c_char,
    out_len: *mut usize,
) -> keel_result {
    ffi_guard!({
        let hits = try_ref!(hits);
        let (out_data, out_len) = (try_out!(out_data), try_out!(out_len));
        let hit = hit_at(hits, i)?;
        let s = match field {
            KEEL_HIT_TITLE => &hit.passage.title,
            KEEL_HIT_TEXT => &hit.passage.text,
            KEEL_HIT_METADATA => {
                hits.metadata_json[i].get_or_init(|| rag::metadata_to_json(&hit.passage.metadata))
            }
            other => {
                return Err(FfiError::new(
                    KEEL_ERR_INVALID_ARGUMENT,
                    format!("unknown hit field {other}"),
                ));
            }
        };
        out_data.write(s.as_ptr().cast::<c_char>());
        out_len.write(s.len());
        Ok(())
    })
}

/// Splits `text` (UTF-8) into chunks of at most `max_len` chars on the largest natural boundary
/// that fits (paragraph, line, sentence, word, grapheme), each sharing at most `overlap` chars
/// with the previous one. Chunks carry no surrounding whitespace; a chunk is longer than
/// `max_len` only if it is a single grapheme.
///
/// Returns: KEEL_OK and writes `*out_chunks`; KEEL_ERR_RAG_INVALID_CONFIG when `max_len` is 0 or
/// `overlap >= max_len`; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the chunks and frees them with `keel_chunks_free`; they hold only
/// offsets into `text`, which the caller keeps.
/// NULL: `out_chunks` NULL gives KEEL_ERR_NULL_ARG; `text` may be NULL when `text_len` is 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_chunk_text(
    text: *const c_char,
    text_len: usize,
    max_len: usize,
    overlap: usize,
    out_chunks: *mut *mut keel_chunks,
) -> keel_result {
    ffi_guard!({
        let text = try_str!(text, text_len);
        let out_chunks = try_out!(out_chunks);
        let chunker = Chunker::new(max_len, overlap).map_err(rag_err)?;
        let spans = chunker.chunks(text).iter().map(|c| c.span).collect();
        out_chunks.write(ffi::into_raw(keel_chunks { spans }));
        Ok(())
    })
}

/// The number of chunks; 0 for NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_chunks_count(chunks: *const keel_chunks) -> usize {
    // SAFETY: per this doc, NULL or a live keel_chunks.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(chunks) }.map_or(0, |c| c.spans.len()) })
}

/// The offsets of chunk `i` (0-based, in order) in the text given to `keel_chunk_text`.
///
/// Returns: KEEL_OK and writes `*out_span`; KEEL_ERR_INVALID_ARGUMENT when `i` is out of range.
/// NULL: `chunks` or `out_span` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_chunks`.
#[no_mangle]
pub unsafe extern "C" fn keel_chunks_get(
    chunks: *const keel_chunks,
    i: usize,
    out_span: *mut keel_span,
) -> keel_result {
    ffi_guard!({
        let chunks = try_ref!(chunks);
        let out_span = try_out!(out_span);
        let span = chunks.spans.get(i).ok_or_else(|| {
            FfiError::new(
                KEEL_ERR_INVALID_ARGUMENT,
                format!(
                    "chunk index {i} is out of range (there are {})",
                    chunks.spans.len()
                ),
            )
        })?;
        out_span.write((*span).into());
        Ok(())
    })
}

/// Frees chunks. NULL is a no-op.
///
/// Thread-safety: call it once, when no other call on `chunks` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_chunks_free(chunks: *mut keel_chunks) {
    // SAFETY: per this doc, `chunks` is NULL or came from keel_chunk_text, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(chunks) } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;

    #[test]
    fn every_rag_error_maps_to_its_code() {
        use rag::RagError as E;
        let cases = [
            (E::InvalidConfig("x".into()), KEEL_ERR_RAG_INVALID_CONFIG),
            (E::DuplicateDocument, KEEL_ERR_RAG_DUPLICATE_DOCUMENT),
            (
                E::InvalidMetadata("x".into()),
                KEEL_ERR_RAG_INVALID_METADATA,
            ),
            (E::Io("x".into()), KEEL_ERR_RAG_IO),
            (E::CorruptIndex("x".into()), KEEL_ERR_RAG_CORRUPT_INDEX),
            (E::InvalidData("x".into()), KEEL_ERR_RAG_INVALID_DATA),
        ];
        for (err, code) in cases {
            assert_eq!(result_code(&Error::Rag(err.clone())), code, "{err:?}");
        }
    }
}
