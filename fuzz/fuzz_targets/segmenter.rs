//! The sentence segmenter on arbitrary text and options: never panics, loses nothing, bounds
//! every piece, and gives the same pieces whatever the tokenisation (the first bytes pick the
//! options and the token length).
//!
//! The body is fuzz/bodies/segmenter.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/segmenter.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
