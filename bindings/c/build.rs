//! Gives the shared library its SONAME, `libkeel.so.<ABI>`, where the ABI version is the
//! package's major version (`KEEL_VERSION_MAJOR`): the C ABI only grows within a major version
//! (codes are never renumbered, new behaviour comes through new function names), so programs
//! linked against `libkeel.so.0` keep working with every later 0.x library, and an incompatible
//! `libkeel.so.1` can be installed beside it. `make install` installs the real file
//! `libkeel.so.<version>` with the links `libkeel.so.<ABI>` and `libkeel.so`.

fn main() {
    let major =
        std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF platforms only (Mach-O has install names, Windows has none of this).
    if matches!(
        os.as_str(),
        "linux"
            | "android"
            | "freebsd"
            | "netbsd"
            | "openbsd"
            | "dragonfly"
            | "illumos"
            | "solaris"
    ) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkeel.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
