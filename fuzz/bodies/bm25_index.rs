// Opening a BM25 index file of arbitrary bytes: never panics and never allocates from an
// unchecked length. The first byte chooses whether a valid CRC-32 trailer is appended, so the
// fuzzer also reaches the body parser of checksummed formats (2 and 3), not only format 1.
// Anything that opens can be searched and saved again.

use keel::rag::Bm25Index;

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut file = body.to_vec();
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(&crc.to_le_bytes());
    }
    let dir = std::env::temp_dir().join(format!("keel-fuzz-bm25-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("in.idx");
    std::fs::write(&path, &file).unwrap();
    if let Ok(index) = Bm25Index::open(&path) {
        let _ = index.search("wing lift pressure", 5, None);
        index.save(&dir.join("out.idx")).unwrap();
        let again = Bm25Index::open(&dir.join("out.idx")).unwrap();
        assert_eq!(again.stats(), index.stats());
    }
}
