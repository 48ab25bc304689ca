//! The committed corpus of the C argument-layer fuzz target (fuzz/corpus/c_args), replayed
//! through the target's own body (fuzz/bodies/c_args.rs) on the stable toolchain, as part of
//! `make test`. The fuzzing itself is `make fuzz`; see tests/fuzz_corpora.rs for the others.

mod body {
    use keel as c;
    include!("../../../fuzz/bodies/c_args.rs");
}

#[test]
fn replay_c_args() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/c_args");
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
        body::run(&std::fs::read(file).unwrap());
    }
}
