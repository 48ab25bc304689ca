//! Version macros (compile time) and functions (run time), as sqlite3.h has them: a program can
//! compare the header it was compiled against with the library it runs with.
//!
//! The constants must be literals for cbindgen to emit them as `#define`s; the assertions below
//! stop the build as soon as they drift from Cargo.toml or from the core crate. cbindgen cannot
//! emit a string constant, so tests/header.rs writes `#define KEEL_VERSION_STRING` from
//! [`KEEL_VERSION_STRING`] itself.

use std::ffi::{c_char, CStr};

use crate::panic::ffi_guard;

/// The major version of the keel headers this file belongs to.
pub const KEEL_VERSION_MAJOR: u32 = 0;
/// The minor version.
pub const KEEL_VERSION_MINOR: u32 = 1;
/// The patch version.
pub const KEEL_VERSION_PATCH: u32 = 0;
/// The version as "MAJOR.MINOR.PATCH" (emitted into the header by tests/header.rs).
pub const KEEL_VERSION_STRING: &str = "0.1.0";
/// The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH, for `#if` comparisons.
pub const KEEL_VERSION_NUMBER: u32 =
    KEEL_VERSION_MAJOR * 10000 + KEEL_VERSION_MINOR * 100 + KEEL_VERSION_PATCH;

const _: () = {
    assert!(str_eq(KEEL_VERSION_STRING, env!("CARGO_PKG_VERSION")));
    assert!(str_eq(KEEL_VERSION_STRING, keel_core::VERSION));
    assert!(KEEL_VERSION_MAJOR == parse_u32(env!("CARGO_PKG_VERSION_MAJOR")));
    assert!(KEEL_VERSION_MINOR == parse_u32(env!("CARGO_PKG_VERSION_MINOR")));
    assert!(KEEL_VERSION_PATCH == parse_u32(env!("CARGO_PKG_VERSION_PATCH")));
    // The packed number gives each part two decimal digits.
    assert!(KEEL_VERSION_MINOR < 100 && KEEL_VERSION_PATCH < 100);
};

const VERSION_CSTR: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("the package version contains a NUL byte"),
    };

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn parse_u32(s: &str) -> u32 {
    let s = s.as_bytes();
    assert!(!s.is_empty());
    let mut n = 0u32;
    let mut i = 0;
    while i < s.len() {
        assert!(s[i].is_ascii_digit());
        n = n * 10 + (s[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// The version of the library that is running, as "MAJOR.MINOR.PATCH"; compare it with
/// `KEEL_VERSION_STRING`, the version of the header the program was compiled against.
///
/// Returns: a static NUL-terminated string, never NULL; do not free it.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub extern "C" fn keel_version() -> *const c_char {
    ffi_guard!(or VERSION_CSTR.as_ptr(), { VERSION_CSTR.as_ptr() })
}

/// The version of the library that is running, as MAJOR * 10000 + MINOR * 100 + PATCH;
/// compare it with `KEEL_VERSION_NUMBER`.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub extern "C" fn keel_version_number() -> u32 {
    ffi_guard!(or KEEL_VERSION_NUMBER, { KEEL_VERSION_NUMBER })
}
