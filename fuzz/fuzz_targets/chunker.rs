//! The chunker on arbitrary text and sizes: never panics, every chunk is exactly the source at
//! its offsets (bytes and characters), chunks are in order, within the size bound, and together
//! cover the text (only whitespace may fall between chunks).
//!
//! The body is fuzz/bodies/chunker.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/chunker.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
