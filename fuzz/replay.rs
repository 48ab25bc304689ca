// Replays a committed fuzz corpus on the stable toolchain (included by tests/fuzz_corpora.rs and
// bindings/c/tests/fuzz_corpus.rs): every file of `dir`, in name order, through `run`.

/// Runs every file of the corpus directory `dir` through `run`; the corpus must not be empty.
pub fn replay(dir: &std::path::Path, run: fn(&[u8])) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: an empty corpus replays nothing", dir.display());
    for file in &files {
        run(&std::fs::read(file).unwrap());
    }
}
