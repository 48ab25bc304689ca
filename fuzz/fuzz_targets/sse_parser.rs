//! The SSE parser on arbitrary bytes: never panics, holds at most its limit, and gives the
//! same events whatever the split of the stream into reads (the first byte picks the splits).
//!
//! The body is fuzz/bodies/sse_parser.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/sse_parser.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
