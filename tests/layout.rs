//! The layout check of issue 9: no module of the core reaches past another module's face into
//! its internals, and the bindings reach the core only through its public paths. A path listed
//! in `INTERNALS` may be used inside its own top-level module only; everyone else goes through
//! the re-exports of that module's face (`crypto::audit::AuditWrite`, `auth::check_env`,
//! `MemoryStore::on_store`, `rag::set_onnxruntime_path`, `Store::location`...).

use std::path::{Path, PathBuf};

/// Internals of one top-level module: `(path prefix, owning top-level module)`.
const INTERNALS: &[(&str, &str)] = &[
    ("crypto::audit::backend::", "crypto"),
    ("memory::backend::", "memory"),
    ("auth::backend::sqlite", "auth"),
    ("rag::runtime::", "rag"),
    ("auth::key::", "auth"),
    ("store::migrations", "store"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/auth/keys.rs` → `auth`,
/// `src/engine.rs` → `engine`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn is_code(line: &str) -> bool {
    let t = line.trim_start();
    !(t.starts_with("//") || t.starts_with("/*") || t.starts_with('*'))
}

#[test]
fn no_module_reaches_into_another_modules_internals() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut breaks = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if !is_code(line) {
                continue;
            }
            for (internal, owner) in INTERNALS {
                if module != *owner && line.contains(&format!("crate::{internal}")) {
                    breaks.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        breaks.is_empty(),
        "modules reaching into another module's internals:\n{}",
        breaks.join("\n")
    );
}

#[test]
fn bindings_use_only_public_core_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut breaks = Vec::new();
    for (dir, krate) in [
        ("bindings/c/src", "keel_core"),
        ("bindings/python/src", "keel"),
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if !is_code(line) {
                    continue;
                }
                for (internal, _) in INTERNALS {
                    if line.contains(&format!("{krate}::{internal}")) {
                        breaks.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        breaks.is_empty(),
        "bindings reaching into core internals:\n{}",
        breaks.join("\n")
    );
}
