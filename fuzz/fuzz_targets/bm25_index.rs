//! Opening a BM25 index file of arbitrary bytes: never panics and never allocates from an
//! unchecked length. The first byte chooses whether a valid CRC-32 trailer is appended, so the
//! fuzzer also reaches the body parser of checksummed formats (2 and 3), not only format 1.
//! Anything that opens can be searched and saved again.
//!
//! The body is fuzz/bodies/bm25_index.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/bm25_index.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
