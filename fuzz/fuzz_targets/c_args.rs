//! The C door's argument layer (`bindings/c`: pointer + length strings and buffers, caller-owned
//! output buffers, out-parameters, result lists read back by index), driven the way a C caller
//! would: the input is a sequence of operations, each with its own bytes (often not UTF-8, with
//! NULs and line breaks), lengths (zero, small, larger than the data) and NULL pointers.
//!
//! Checked on every call: no crash, no panic (libFuzzer aborts on one; a panic inside the C ABI
//! would also be a KEEL_ERR_PANIC result, which is refused below), no out-of-bounds read or write
//! (the target is built with AddressSanitizer), only documented result codes, every returned
//! (pointer, length) readable, list reads past the end refused, a failed call leaving its
//! out-parameter untouched, and `keel_last_error_message` set after each failure.
//!
//! The body is fuzz/bodies/c_args.rs, shared with the corpus replay in the test suite.
#![no_main]

mod body {
    use keel_capi as c;
    include!("../bodies/c_args.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
