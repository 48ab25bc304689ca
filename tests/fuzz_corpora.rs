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

include!("../fuzz/replay.rs");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn replay_api_key() {
    replay(&root().join("fuzz/corpus/api_key"), api_key::run);
}

#[test]
fn replay_bm25_index() {
    replay(&root().join("fuzz/corpus/bm25_index"), bm25_index::run);
}

#[test]
fn replay_chunker() {
    replay(&root().join("fuzz/corpus/chunker"), chunker::run);
}

#[test]
fn replay_decrypt() {
    replay(&root().join("fuzz/corpus/decrypt"), decrypt::run);
}

#[test]
fn replay_segmenter() {
    replay(&root().join("fuzz/corpus/segmenter"), segmenter::run);
}

#[test]
fn replay_sse_parser() {
    replay(&root().join("fuzz/corpus/sse_parser"), sse_parser::run);
}
