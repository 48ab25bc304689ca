// The C door's argument layer (`bindings/c`: pointer + length strings and buffers, caller-owned
// output buffers, out-parameters, result lists read back by index), driven the way a C caller
// would: the input is a sequence of operations, each with its own bytes (often not UTF-8, with
// NULs and line breaks), lengths (zero, small, larger than the data) and NULL pointers.
//
// Checked on every call: no crash, no panic (libFuzzer aborts on one; a panic inside the C ABI
// would also be a KEEL_ERR_PANIC result, which is refused below), no out-of-bounds read or write
// (the target is built with AddressSanitizer), only documented result codes, every returned
// (pointer, length) readable, list reads past the end refused, a failed call leaving its
// out-parameter untouched, and `keel_last_error_message` set after each failure.

use std::ffi::CStr;
use std::ptr;

/// The input, read front to back; runs dry into zeros and empty slices.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    /// A length-prefixed slice (at most 255 bytes).
    fn bytes(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// Reads `len` bytes at `ptr` (ASan reports it if they are not all readable).
fn touch(ptr: *const u8, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    assert!(!ptr.is_null(), "a non-empty result must not be NULL");
    // SAFETY: the API promises `len` readable bytes; ASan checks the promise.
    let s = unsafe { std::slice::from_raw_parts(ptr, len) };
    s.iter().map(|&b| b as u64).sum()
}

/// A failure must be a real error code with a message, and never a panic or an internal error.
fn check_failure(rc: c::keel_result) {
    assert_ne!(rc, c::KEEL_ERR_PANIC, "a panic crossed into the C ABI");
    assert_ne!(rc, c::KEEL_ERR_INTERNAL, "an internal error for caller input");
    // SAFETY: always a valid NUL-terminated string.
    let name = unsafe { CStr::from_ptr(c::keel_result_name(rc)) };
    assert_ne!(name.to_bytes(), b"KEEL_ERR_UNKNOWN", "undocumented result code {rc}");
    let msg = c::keel_last_error_message();
    assert!(!msg.is_null());
    // SAFETY: NUL-terminated, valid until the next failing call on this thread.
    assert!(!unsafe { CStr::from_ptr(msg) }.to_bytes().is_empty());
}

/// The pointer to pass for a buffer: sometimes NULL (then the call must refuse any non-zero
/// length with KEEL_ERR_NULL_ARG).
fn arg(bytes: &[u8], null: bool) -> *const u8 {
    if null {
        ptr::null()
    } else {
        bytes.as_ptr()
    }
}

fn expect_null_arg(rc: c::keel_result, null: bool, len: usize) -> bool {
    if null && len > 0 {
        assert_eq!(rc, c::KEEL_ERR_NULL_ARG, "NULL with a length must be refused");
        return true;
    }
    false
}

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let mut cache = ptr::null_mut();
    assert_eq!(unsafe { c::keel_cache_new(64, 0, 0, &mut cache) }, c::KEEL_OK);
    let mut parser = ptr::null_mut();
    let max_event = input.byte() as usize * 8;
    let rc = unsafe { c::keel_sse_parser_new(max_event, &mut parser) };
    if rc != c::KEEL_OK {
        check_failure(rc);
        assert!(parser.is_null(), "a failed constructor wrote its out-parameter");
    }
    let mut segmenter = ptr::null_mut();
    let (min, max) = (input.byte() as usize, input.byte() as usize * 4);
    let rc = unsafe { c::keel_segmenter_new(min, max, &mut segmenter) };
    if rc != c::KEEL_OK {
        check_failure(rc);
        assert!(segmenter.is_null(), "a failed constructor wrote its out-parameter");
    }

    for _ in 0..64 {
        if input.0.is_empty() {
            break;
        }
        let op = input.byte();
        let null = op & 0x80 != 0;
        let a = input.bytes();
        match op % 7 {
            0 => {
                let b = input.bytes();
                let rc = unsafe { c::keel_cache_set(cache, arg(a, null), a.len(), b.as_ptr(), b.len(), 0) };
                if expect_null_arg(rc, null, a.len()) {
                    continue;
                }
                assert_eq!(rc, c::KEEL_OK);
                let mut out = ptr::null_mut();
                assert_eq!(unsafe { c::keel_cache_get(cache, a.as_ptr(), a.len(), &mut out) }, c::KEEL_OK);
                assert!(!out.is_null(), "a value just set is present (64 entries, one key)");
                let got = unsafe { std::slice::from_raw_parts(c::keel_bytes_data(out), c::keel_bytes_len(out)) };
                assert_eq!(got, b, "the cache returned other bytes than were set");
                unsafe { c::keel_bytes_free(out) };
                assert_eq!(unsafe { c::keel_cache_remove(cache, a.as_ptr(), a.len()) }, c::KEEL_OK);
            }
            1 if !parser.is_null() => {
                let sentinel = std::ptr::dangling_mut::<c::keel_sse_events>();
                let mut events = sentinel;
                let rc = unsafe { c::keel_sse_parser_feed(parser, arg(a, null), a.len(), &mut events) };
                if expect_null_arg(rc, null, a.len()) {
                    assert_eq!(events, sentinel, "a failed call wrote its out-parameter");
                    continue;
                }
                if rc != c::KEEL_OK {
                    check_failure(rc);
                    assert_eq!(events, sentinel, "a failed call wrote its out-parameter");
                    continue;
                }
                let n = unsafe { c::keel_sse_events_count(events) };
                for i in 0..=n {
                    let mut ev = std::mem::MaybeUninit::<c::keel_sse_event>::zeroed();
                    let rc = unsafe { c::keel_sse_events_get(events, i, ev.as_mut_ptr()) };
                    if i == n {
                        assert_ne!(rc, c::KEEL_OK, "a read past the end succeeded");
                        check_failure(rc);
                        continue;
                    }
                    assert_eq!(rc, c::KEEL_OK);
                    let ev = unsafe { ev.assume_init() };
                    touch(ev.event.cast(), ev.event_len);
                    touch(ev.data.cast(), ev.data_len);
                    touch(ev.id.cast(), ev.id_len);
                }
                unsafe { c::keel_sse_events_free(events) };
            }
            2 if !segmenter.is_null() => {
                let mut out = ptr::null_mut();
                let rc = unsafe { c::keel_segmenter_push(segmenter, arg(a, null).cast(), a.len(), &mut out) };
                if expect_null_arg(rc, null, a.len()) {
                    continue;
                }
                // A token may end inside a character (its last bytes start the next token), so
                // only bytes that cannot be UTF-8 are refused, with the stream's own code.
                if rc != c::KEEL_OK {
                    assert_eq!(rc, c::KEEL_ERR_STREAM_INVALID_UTF8, "segmenter push");
                    check_failure(rc);
                    continue;
                }
                let n = unsafe { c::keel_sentences_count(out) };
                for i in 0..=n {
                    let (mut p, mut len) = (ptr::null(), 0usize);
                    let rc = unsafe { c::keel_sentences_get(out, i, &mut p, &mut len) };
                    if i == n {
                        assert_ne!(rc, c::KEEL_OK, "a read past the end succeeded");
                        continue;
                    }
                    assert_eq!(rc, c::KEEL_OK);
                    touch(p.cast(), len);
                    let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
                    assert!(std::str::from_utf8(s).is_ok(), "a sentence is not UTF-8");
                }
                unsafe { c::keel_sentences_free(out) };
            }
            3 => {
                let (event, id) = (input.bytes(), input.bytes());
                let flags = input.byte();
                let ev = if flags & 1 != 0 { event.as_ptr() } else { ptr::null() };
                let id_p = if flags & 2 != 0 { id.as_ptr() } else { ptr::null() };
                let retry = if flags & 4 != 0 { i64::from(input.byte()) * 1000 } else { -1 };
                let mut out = ptr::null_mut();
                let rc = unsafe {
                    c::keel_sse_encode(
                        arg(a, null).cast(),
                        a.len(),
                        ev.cast(),
                        if ev.is_null() { 0 } else { event.len() },
                        id_p.cast(),
                        if id_p.is_null() { 0 } else { id.len() },
                        retry,
                        &mut out,
                    )
                };
                if expect_null_arg(rc, null, a.len()) {
                    continue;
                }
                if rc != c::KEEL_OK {
                    check_failure(rc);
                    assert!(out.is_null(), "a failed call wrote its out-parameter");
                    continue;
                }
                let text = unsafe { std::slice::from_raw_parts(c::keel_bytes_data(out), c::keel_bytes_len(out)) };
                assert!(text.ends_with(b"\n\n"), "an encoded event ends with a blank line");
                // What the encoder writes, a fresh parser reads back as exactly one event with
                // the same data (line breaks normalised to LF, as the SSE format defines).
                let mut p = ptr::null_mut();
                assert_eq!(unsafe { c::keel_sse_parser_new(0, &mut p) }, c::KEEL_OK);
                let mut events = ptr::null_mut();
                assert_eq!(unsafe { c::keel_sse_parser_feed(p, text.as_ptr(), text.len(), &mut events) }, c::KEEL_OK);
                let n = unsafe { c::keel_sse_events_count(events) };
                if !a.is_empty() || flags & 3 != 0 {
                    assert_eq!(n, 1, "one encoded event did not parse as one event");
                    let mut got = std::mem::MaybeUninit::<c::keel_sse_event>::zeroed();
                    assert_eq!(unsafe { c::keel_sse_events_get(events, 0, got.as_mut_ptr()) }, c::KEEL_OK);
                    let got = unsafe { got.assume_init() };
                    let data = unsafe { std::slice::from_raw_parts(got.data.cast::<u8>(), got.data_len) };
                    let want = String::from_utf8_lossy(a).replace("\r\n", "\n").replace('\r', "\n");
                    assert_eq!(data, want.as_bytes(), "data changed in an encode/parse round trip");
                }
                unsafe {
                    c::keel_sse_events_free(events);
                    c::keel_sse_parser_free(p);
                    c::keel_bytes_free(out);
                }
            }
            4 => {
                let mut kr = ptr::null_mut();
                let rc = unsafe { c::keel_keyring_parse(arg(a, null).cast(), a.len(), &mut kr) };
                if expect_null_arg(rc, null, a.len()) {
                    continue;
                }
                if rc == c::KEEL_OK {
                    assert!(!kr.is_null());
                    unsafe { c::keel_keyring_free(kr) };
                } else {
                    check_failure(rc);
                    assert!(kr.is_null(), "a failed call wrote its out-parameter");
                }
            }
            5 => {
                // A caller-owned output buffer of any size, with guard bytes after it.
                let len = input.byte() as usize;
                let mut buf = vec![0xA5u8; len + 16];
                let mut out_len = usize::MAX;
                let p = if null { ptr::null_mut() } else { buf.as_mut_ptr().cast() };
                let rc = unsafe { c::keel_keyring_generate_key(p, len, &mut out_len) };
                if null {
                    assert_eq!(rc, c::KEEL_ERR_NULL_ARG);
                } else if len < c::KEEL_GENERATED_KEY_LEN + 1 {
                    assert_eq!(rc, c::KEEL_ERR_BUFFER_TOO_SMALL);
                    check_failure(rc);
                    assert_eq!(out_len, usize::MAX, "a failed call wrote its out-parameter");
                    assert!(buf.iter().all(|&b| b == 0xA5), "a refused call wrote into the buffer");
                } else {
                    assert_eq!(rc, c::KEEL_OK);
                    assert_eq!(out_len, c::KEEL_GENERATED_KEY_LEN);
                    assert_eq!(buf[out_len], 0, "the text is NUL-terminated");
                    assert!(buf[len..].iter().all(|&b| b == 0xA5), "written past the buffer");
                }
            }
            _ => {
                let (max_len, overlap) = (input.byte() as usize, input.byte() as usize);
                let mut chunks = ptr::null_mut();
                let rc = unsafe { c::keel_chunk_text(arg(a, null).cast(), a.len(), max_len, overlap, &mut chunks) };
                if expect_null_arg(rc, null, a.len()) {
                    continue;
                }
                if rc != c::KEEL_OK {
                    check_failure(rc);
                    assert!(chunks.is_null(), "a failed call wrote its out-parameter");
                    continue;
                }
                let text = std::str::from_utf8(a).expect("chunked text that is not UTF-8");
                let n = unsafe { c::keel_chunks_count(chunks) };
                for i in 0..=n {
                    let mut span = std::mem::MaybeUninit::<c::keel_span>::zeroed();
                    let rc = unsafe { c::keel_chunks_get(chunks, i, span.as_mut_ptr()) };
                    if i == n {
                        assert_ne!(rc, c::KEEL_OK, "a read past the end succeeded");
                        continue;
                    }
                    assert_eq!(rc, c::KEEL_OK);
                    let span = unsafe { span.assume_init() };
                    let (s, e) = (span.byte_start as usize, span.byte_end as usize);
                    assert!(s <= e && e <= a.len(), "a chunk outside the text");
                    assert!(text.is_char_boundary(s) && text.is_char_boundary(e), "a chunk splits a character");
                }
                unsafe { c::keel_chunks_free(chunks) };
            }
        }
    }
    unsafe {
        c::keel_cache_free(cache);
        c::keel_sse_parser_free(parser);
        c::keel_segmenter_free(segmenter);
    }
}
