//! Streaming helpers over C: the sentence segmenter (`keel_segmenter_*`), the SSE encoder
//! (`keel_sse_encode`, `keel_sse_comment`) and the incremental SSE parser (`keel_sse_parser_*`).
//!
//! A segmenter or parser holds the state of one stream and is used by one thread at a time.
//! Results are lists owned by the caller (`keel_sentences`, `keel_sse_events`) whose strings
//! are pointer + length views, valid until the list is freed.

use std::ffi::c_char;
use std::sync::Arc;

use keel_core::stream::{
    encode_comment, encode_event, SegmenterOptions, SentenceSegmenter, SseEvent, SseParser,
};

use crate::bytes::keel_bytes;
use crate::error::{keel_result, FfiError, KEEL_ERR_INVALID_ARGUMENT};
use crate::ffi::{self, try_bytes, try_mut, try_out, try_ref, try_str};
use crate::panic::ffi_guard;

/// An incremental sentence segmenter: LLM tokens in, sentences for TTS out as soon as each is
/// certain. Concatenating every sentence returned gives back exactly the bytes pushed.
///
/// Thread-safety: not thread-safe; use one segmenter per stream, from one thread at a time
/// (it may move between threads).
pub struct keel_segmenter {
    inner: SentenceSegmenter,
}

/// Sentences returned by `keel_segmenter_push` or `keel_segmenter_flush`, in order. Read-only;
/// safe to read from several threads at once.
pub struct keel_sentences {
    items: Vec<String>,
}

/// An incremental parser of a Server-Sent Events byte stream (WHATWG rules).
///
/// Thread-safety: not thread-safe; one parser per stream, one thread at a time.
pub struct keel_sse_parser {
    inner: SseParser,
}

/// Events returned by `keel_sse_parser_feed`, in order. Read-only; safe to share.
pub struct keel_sse_events {
    items: Vec<SseEvent>,
}

/// A view of one parsed event, filled by `keel_sse_events_get`. Its pointers belong to the
/// `keel_sse_events` list and stay valid until `keel_sse_events_free`; strings are UTF-8 and
/// not NUL-terminated. Plain data; its layout is part of the ABI and never changes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_sse_event {
    /// The event type; NULL for the default type `message`.
    pub event: *const c_char,
    /// Bytes at `event`.
    pub event_len: usize,
    /// The data (its lines joined with LF); never NULL.
    pub data: *const c_char,
    /// Bytes at `data`.
    pub data_len: usize,
    /// The last event id the stream set; NULL when there is none.
    pub id: *const c_char,
    /// Bytes at `id`.
    pub id_len: usize,
    /// Whether this event's block carried a `retry` field.
    pub has_retry: bool,
    /// The reconnection time in milliseconds, when `has_retry`.
    pub retry_ms: u64,
}

const _: () = {
    const fn movable<T: Send>() {}
    const fn shareable<T: Send + Sync>() {}
    movable::<keel_segmenter>();
    movable::<keel_sse_parser>();
    shareable::<keel_sentences>();
    shareable::<keel_sse_events>();
};

fn opt_str(s: Option<&str>) -> (*const c_char, usize) {
    s.map_or((std::ptr::null(), 0), |s| (s.as_ptr().cast(), s.len()))
}

/// Creates a segmenter.
///
/// - `min_chars`: sentences shorter than this (in Unicode scalar values, trailing whitespace
///   not counted) are held and joined to the next one; 0 never joins (the default).
/// - `max_chars`: longer sentences are split at a clause mark, a space or a grapheme boundary;
///   0 means the default (300). Otherwise at least 8 and at least `min_chars`.
///
/// Returns: KEEL_OK and writes `*out_segmenter`; KEEL_ERR_STREAM_INVALID_OPTIONS.
///
/// Ownership: the caller owns the segmenter and releases it with `keel_segmenter_free`.
/// NULL: `out_segmenter` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_segmenter_new(
    min_chars: usize,
    max_chars: usize,
    out_segmenter: *mut *mut keel_segmenter,
) -> keel_result {
    ffi_guard!({
        let out_segmenter = try_out!(out_segmenter);
        let opts = SegmenterOptions::new(Some(min_chars), (max_chars != 0).then_some(max_chars))?;
        let inner = SentenceSegmenter::new(opts)?;
        out_segmenter.write(ffi::into_raw(keel_segmenter { inner }));
        Ok(())
    })
}

/// Adds the next token (`token_len` bytes of UTF-8) and returns the sentences that became
/// certain (often none). A token may end inside a multi-byte character: its remaining bytes
/// then start the next token.
///
/// Returns: KEEL_OK and writes `*out_sentences`; KEEL_ERR_STREAM_INVALID_UTF8 for bytes that
/// are not UTF-8 (nothing is consumed: the segmenter is unchanged).
///
/// Ownership: copies `token`. The caller owns `*out_sentences` and frees it with
/// `keel_sentences_free`.
/// NULL: `segmenter` or `out_sentences` NULL gives KEEL_ERR_NULL_ARG; `token` may be NULL when
/// `token_len` is 0.
/// Thread-safety: one thread at a time per segmenter.
#[no_mangle]
pub unsafe extern "C" fn keel_segmenter_push(
    segmenter: *mut keel_segmenter,
    token: *const c_char,
    token_len: usize,
    out_sentences: *mut *mut keel_sentences,
) -> keel_result {
    ffi_guard!({
        let segmenter = try_mut!(segmenter);
        // SAFETY: the contract above: `token_len` readable bytes at `token`.
        let token = unsafe { ffi::slice(token.cast::<u8>(), token_len, "token") }?;
        let out_sentences = try_out!(out_sentences);
        let items = segmenter.inner.push_bytes(token)?;
        out_sentences.write(ffi::into_raw(keel_sentences { items }));
        Ok(())
    })
}

/// Ends the stream: returns every sentence not returned yet. The segmenter is then empty and
/// may start a new stream.
///
/// Returns: KEEL_OK and writes `*out_sentences`; KEEL_ERR_STREAM_INVALID_UTF8 when the last
/// token ended inside a character (those bytes are dropped; call again for the rest).
///
/// Ownership: the caller owns `*out_sentences` and frees it with `keel_sentences_free`.
/// NULL: `segmenter` or `out_sentences` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: one thread at a time per segmenter.
#[no_mangle]
pub unsafe extern "C" fn keel_segmenter_flush(
    segmenter: *mut keel_segmenter,
    out_sentences: *mut *mut keel_sentences,
) -> keel_result {
    ffi_guard!({
        let segmenter = try_mut!(segmenter);
        let out_sentences = try_out!(out_sentences);
        let items = segmenter.inner.flush_bytes()?;
        out_sentences.write(ffi::into_raw(keel_sentences { items }));
        Ok(())
    })
}

/// Frees a segmenter. NULL is a no-op.
///
/// Thread-safety: call it once, when no other call on `segmenter` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_segmenter_free(segmenter: *mut keel_segmenter) {
    // SAFETY: per this doc, NULL or a segmenter from keel_segmenter_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(segmenter) } })
}

/// The number of sentences; 0 for NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sentences_count(sentences: *const keel_sentences) -> usize {
    // SAFETY: per this doc, NULL or a live keel_sentences.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(sentences) }.map_or(0, |s| s.items.len()) })
}

/// Sentence `i` (0-based): `*out_text` points to its `*out_len` bytes of UTF-8 (not
/// NUL-terminated), owned by `sentences` and valid until `keel_sentences_free`.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT when `i` is out of range.
/// NULL: any pointer NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_sentences`.
#[no_mangle]
pub unsafe extern "C" fn keel_sentences_get(
    sentences: *const keel_sentences,
    i: usize,
    out_text: *mut *const c_char,
    out_len: *mut usize,
) -> keel_result {
    ffi_guard!({
        let sentences = try_ref!(sentences);
        let out_text = try_out!(out_text);
        let out_len = try_out!(out_len);
        let s = sentences
            .items
            .get(i)
            .ok_or_else(|| out_of_range("sentence", i, sentences.items.len()))?;
        out_text.write(s.as_ptr().cast());
        out_len.write(s.len());
        Ok(())
    })
}

/// Frees sentences. NULL is a no-op.
///
/// Thread-safety: call it once, when no other call on `sentences` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_sentences_free(sentences: *mut keel_sentences) {
    // SAFETY: per this doc, NULL or a list from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(sentences) } })
}

fn out_of_range(what: &str, i: usize, len: usize) -> FfiError {
    FfiError::new(
        KEEL_ERR_INVALID_ARGUMENT,
        format!("{what} index {i} is out of range (there are {len})"),
    )
}

/// Encodes one server-sent event: `event:`, `id:` and `retry:` lines when set, one `data:` line
/// per line of `data` (split at CRLF, CR or LF), then the blank line that dispatches it.
///
/// - `event`, `id`: UTF-8; NULL means "not set" (an empty string is set and empty).
/// - `retry_ms`: the reconnection time in milliseconds; negative means "not set".
///
/// Returns: KEEL_OK and writes `*out_bytes` (UTF-8 text); KEEL_ERR_STREAM_SSE_FIELD when
/// `event` or `id` contains a line break, or `id` contains NUL; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: copies the inputs; the caller frees `*out_bytes` with `keel_bytes_free`.
/// NULL: `out_bytes` NULL gives KEEL_ERR_NULL_ARG; `data` may be NULL when `data_len` is 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn keel_sse_encode(
    data: *const c_char,
    data_len: usize,
    event: *const c_char,
    event_len: usize,
    id: *const c_char,
    id_len: usize,
    retry_ms: i64,
    out_bytes: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let data = try_str!(data, data_len);
        let event = if event.is_null() {
            None
        } else {
            Some(try_str!(event, event_len).to_owned())
        };
        let id = if id.is_null() {
            None
        } else {
            Some(try_str!(id, id_len).to_owned())
        };
        let out_bytes = try_out!(out_bytes);
        let wire = encode_event(&SseEvent {
            event,
            data: data.to_owned(),
            id,
            retry_ms: u64::try_from(retry_ms).ok(),
        })?;
        out_bytes.write(ffi::into_raw(keel_bytes::new(Arc::from(wire.into_bytes()))));
        Ok(())
    })
}

/// Encodes an SSE comment (`: text` per line, then a blank line): a heartbeat that clients
/// ignore. An empty `text` gives `":\n\n"`.
///
/// Returns: KEEL_OK and writes `*out_bytes`; KEEL_ERR_INVALID_UTF8.
/// Ownership: the caller frees `*out_bytes` with `keel_bytes_free`.
/// NULL: `out_bytes` NULL gives KEEL_ERR_NULL_ARG; `text` may be NULL when `text_len` is 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_comment(
    text: *const c_char,
    text_len: usize,
    out_bytes: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let text = try_str!(text, text_len);
        let out_bytes = try_out!(out_bytes);
        let wire = encode_comment(text);
        out_bytes.write(ffi::into_raw(keel_bytes::new(Arc::from(wire.into_bytes()))));
        Ok(())
    })
}

/// Creates an SSE parser that holds at most `max_event_bytes` of an unfinished line and of one
/// event's data (0 means the default, 1 MiB).
///
/// Returns: KEEL_OK and writes `*out_parser`.
/// Ownership: the caller frees the parser with `keel_sse_parser_free`.
/// NULL: `out_parser` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_parser_new(
    max_event_bytes: usize,
    out_parser: *mut *mut keel_sse_parser,
) -> keel_result {
    ffi_guard!({
        let out_parser = try_out!(out_parser);
        let inner = match max_event_bytes {
            0 => SseParser::new(),
            n => SseParser::with_max_event_bytes(n)?,
        };
        out_parser.write(ffi::into_raw(keel_sse_parser { inner }));
        Ok(())
    })
}

/// Parses the next read of the stream (`len` bytes, split anywhere, even inside a character or
/// a CRLF) and returns the events it completed. Bytes that are not UTF-8 become U+FFFD.
///
/// Returns: KEEL_OK and writes `*out_events`; KEEL_ERR_STREAM_SSE_TOO_LARGE when a line or an
/// event grew past the limit: it is dropped, the read is consumed, and the events completed in
/// this read come with the next call (`*out_events` is not written).
///
/// Ownership: copies `bytes`; the caller frees `*out_events` with `keel_sse_events_free`.
/// NULL: `parser` or `out_events` NULL gives KEEL_ERR_NULL_ARG; `bytes` may be NULL when `len`
/// is 0.
/// Thread-safety: one thread at a time per parser.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_parser_feed(
    parser: *mut keel_sse_parser,
    bytes: *const u8,
    len: usize,
    out_events: *mut *mut keel_sse_events,
) -> keel_result {
    ffi_guard!({
        let parser = try_mut!(parser);
        let bytes = try_bytes!(bytes, len);
        let out_events = try_out!(out_events);
        let items = parser.inner.feed(bytes)?;
        out_events.write(ffi::into_raw(keel_sse_events { items }));
        Ok(())
    })
}

/// Frees a parser. NULL is a no-op.
///
/// Thread-safety: call it once, when no other call on `parser` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_parser_free(parser: *mut keel_sse_parser) {
    // SAFETY: per this doc, NULL or a parser from keel_sse_parser_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(parser) } })
}

/// The number of events; 0 for NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_events_count(events: *const keel_sse_events) -> usize {
    // SAFETY: per this doc, NULL or a live keel_sse_events.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(events) }.map_or(0, |e| e.items.len()) })
}

/// Event `i` (0-based) as a view into `events` (see `keel_sse_event`).
///
/// Returns: KEEL_OK and writes `*out_event`; KEEL_ERR_INVALID_ARGUMENT when `i` is out of range.
/// NULL: `events` or `out_event` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_sse_events`.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_events_get(
    events: *const keel_sse_events,
    i: usize,
    out_event: *mut keel_sse_event,
) -> keel_result {
    ffi_guard!({
        let events = try_ref!(events);
        let out_event = try_out!(out_event);
        let e = events
            .items
            .get(i)
            .ok_or_else(|| out_of_range("event", i, events.items.len()))?;
        let (event, event_len) = opt_str(e.event.as_deref());
        let (id, id_len) = opt_str(e.id.as_deref());
        out_event.write(keel_sse_event {
            event,
            event_len,
            data: e.data.as_ptr().cast(),
            data_len: e.data.len(),
            id,
            id_len,
            has_retry: e.retry_ms.is_some(),
            retry_ms: e.retry_ms.unwrap_or(0),
        });
        Ok(())
    })
}

/// Frees events. NULL is a no-op.
///
/// Thread-safety: call it once, when no other call on `events` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_sse_events_free(events: *mut keel_sse_events) {
    // SAFETY: per this doc, NULL or a list from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(events) } })
}

#[cfg(test)]
mod tests {
    use crate::error::*;
    use keel_core::{Error, StreamError};

    #[test]
    fn every_stream_error_maps_to_its_code() {
        let cases = [
            (
                StreamError::InvalidOptions("x".into()),
                KEEL_ERR_STREAM_INVALID_OPTIONS,
            ),
            (
                StreamError::InvalidSseField {
                    field: "id",
                    what: "NUL",
                },
                KEEL_ERR_STREAM_SSE_FIELD,
            ),
            (
                StreamError::SseTooLarge { limit: 1 },
                KEEL_ERR_STREAM_SSE_TOO_LARGE,
            ),
            (
                StreamError::InvalidUtf8("x".into()),
                KEEL_ERR_STREAM_INVALID_UTF8,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(result_code(&Error::Stream(err)), code);
        }
    }
}
