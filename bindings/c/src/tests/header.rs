//! include/keel.h is generated from this crate and committed. These tests fail when it drifts
//! from the code, and when its version macros disagree with the library.
//!
//! Regenerate it with `make header`, i.e. `KEEL_UPDATE_HEADER=1 cargo test -p keel-capi --lib tests::header`.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Once;

const UPDATE_VAR: &str = "KEEL_UPDATE_HEADER";

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/keel.h")
}

fn generate() -> String {
    let mut config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml"))
        .expect("bindings/c/cbindgen.toml is valid");
    // cbindgen cannot emit string constants: this one is written here, from the library's
    // constant (itself checked against Cargo.toml at compile time).
    config.after_includes = Some(format!(
        "\n/**\n * The version of this header as \"MAJOR.MINOR.PATCH\"; compare with keel_version().\n */\n\
         #define KEEL_VERSION_STRING \"{}\"",
        crate::KEEL_VERSION_STRING
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// The committed header's text. With KEEL_UPDATE_HEADER=1 it is first regenerated, once, so
/// that no test reads it while another writes it.
fn committed_header() -> String {
    static UPDATE: Once = Once::new();
    if std::env::var(UPDATE_VAR).as_deref() == Ok("1") {
        UPDATE.call_once(|| std::fs::write(header_path(), generate()).expect("write keel.h"));
    }
    std::fs::read_to_string(header_path()).unwrap_or_default()
}

#[test]
fn committed_header_matches_the_code() {
    let committed = committed_header();
    let generated = generate();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/keel.h is out of date (first difference at line {}). Regenerate it with \
             `make header` ({UPDATE_VAR}=1 cargo test -p keel-capi --lib tests::header) and commit it.",
            first_difference + 1,
        );
    }
}

/// The value of `#define NAME VALUE` in the committed header.
fn define<'a>(header: &'a str, name: &str) -> &'a str {
    header
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.starts_with(char::is_whitespace).then(|| rest.trim())
        })
        .unwrap_or_else(|| panic!("include/keel.h has no #define {name}"))
}

#[test]
fn header_version_macros_match_the_library() {
    let header = committed_header();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        version,
        keel_core::VERSION,
        "core and C binding versions differ"
    );

    let parts: Vec<u32> = version
        .split('.')
        .map(|p| p.parse().expect("a numeric version part"))
        .collect();
    for (name, expected) in [
        ("KEEL_VERSION_MAJOR", parts[0]),
        ("KEEL_VERSION_MINOR", parts[1]),
        ("KEEL_VERSION_PATCH", parts[2]),
    ] {
        assert_eq!(define(&header, name), expected.to_string(), "{name}");
    }
    assert_eq!(
        define(&header, "KEEL_VERSION_STRING"),
        format!("\"{version}\"")
    );

    // SAFETY: keel_version returns a static NUL-terminated string.
    let runtime = unsafe { CStr::from_ptr(crate::keel_version()) };
    assert_eq!(runtime.to_str().unwrap(), version);
    assert_eq!(
        crate::keel_version_number(),
        parts[0] * 10000 + parts[1] * 100 + parts[2]
    );
}
