//! The committed fuzz corpora (fuzz/corpus/NAME), replayed through the fuzz targets' own bodies
//! (fuzz/bodies/NAME.rs) on the stable toolchain, as part of `make test`: every input that once
//! reached new code still passes every assertion of its target (libFuzzer's regression mode,
//! without the nightly build). The fuzzing itself is `make fuzz` (long) and `make fuzz-smoke`.
//! The C argument layer's corpus is replayed in bindings/c/tests/fuzz_corpus.rs.

use std::path::Path;

mod api_key {
    include!("../fuzz/bodies/api_key.rs");
}
mod bm25_index {
    include!("../fuzz/bodies/bm25_index.rs");
}
mod chunker {
    include!("../fuzz/bodies/chunker.rs");
}
mod decrypt {
    include!("../fuzz/bodies/decrypt.rs");
}
mod segmenter {
    include!("../fuzz/bodies/segmenter.rs");
}
mod sse_parser {
    include!("../fuzz/bodies/sse_parser.rs");
}

/// Runs every file of fuzz/corpus/`name` through `run`; the corpus must not be empty.
pub fn replay(root: &Path, name: &str, run: fn(&[u8])) {
    let dir = root.join("fuzz/corpus").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{}: an empty corpus replays nothing",
        dir.display()
    );
    for file in &files {
        run(&std::fs::read(file).unwrap());
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn replay_api_key() {
    replay(root(), "api_key", api_key::run);
}

#[test]
fn replay_bm25_index() {
    replay(root(), "bm25_index", bm25_index::run);
}

#[test]
fn replay_chunker() {
    replay(root(), "chunker", chunker::run);
}

#[test]
fn replay_decrypt() {
    replay(root(), "decrypt", decrypt::run);
}

#[test]
fn replay_segmenter() {
    replay(root(), "segmenter", segmenter::run);
}

#[test]
fn replay_sse_parser() {
    replay(root(), "sse_parser", sse_parser::run);
}
