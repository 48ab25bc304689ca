//! API-key parsing on arbitrary text: never panics; an accepted key has the documented shape,
//! its display prefix is a prefix of the key that never reaches the checksum, and an error
//! never echoes the input. Generated keys always parse.
//!
//! The body is fuzz/bodies/api_key.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/api_key.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
