//! The committed corpus of the C argument-layer fuzz target (fuzz/corpus/c_args), replayed
//! through the target's own body (fuzz/bodies/c_args.rs) on the stable toolchain, as part of
//! `make test`. The fuzzing itself is `make fuzz`; see tests/fuzz_corpora.rs for the others.

mod body {
    use keel as c;
    include!("../../../fuzz/bodies/c_args.rs");
}

include!("../../../fuzz/replay.rs");

#[test]
fn replay_c_args() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    replay(&root.join("../../fuzz/corpus/c_args"), body::run);
}
