//! Field decryption on arbitrary ciphertexts and associated data: never panics, and anything it
//! accepts is a ciphertext this keyring sealed for exactly that place (so a random input never
//! decrypts; a sealed value re-checked here always round-trips).
//!
//! The body is fuzz/bodies/decrypt.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    include!("../bodies/decrypt.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
