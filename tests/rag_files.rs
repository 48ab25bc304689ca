//! Index files on disk: files written by older keel versions keep opening (fixtures under
//! `tests/fixtures/rag/`), and damage to a file is a `CorruptIndex` error naming it.
//!
//! The fixtures `bm25_v1.idx`, `dense_f32_v1.idx` and `dense_int8_v1.idx` were written by
//! `write_fixtures` below with the format-1 writer (commit f961c7f, on keel b81ea01, before
//! checksums); the `*_v2.idx` ones by the format-2 writer (keel 5dbb233, CRC-32 trailer, before
//! the shared codec). `KEEL_WRITE_RAG_FIXTURES=<dir>` makes the test write the same indexes with
//! the current writer into `<dir>` (as `*_current.idx`), to make fixtures for a future format.

use std::path::{Path, PathBuf};

use keel::rag::{
    Bm25Config, Bm25Index, DenseIndex, Document, Metadata, Passage, Precision, RagError,
};

/// The format both index files are written in (the shared codec).
const CURRENT: u32 = 3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rag")
}

fn meta(v: serde_json::Value) -> Metadata {
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn docs() -> Vec<Document> {
    vec![
        Document {
            id: "lift".into(),
            title: "Wings".into(),
            text: "the lift of a wing in a slipstream".into(),
            metadata: meta(serde_json::json!({"year": 1950, "lang": "en"})),
        },
        Document {
            id: "heat".into(),
            title: "Heat".into(),
            text: "heat transfer at supersonic speed in a boundary layer".into(),
            metadata: meta(serde_json::json!({"year": 1962})),
        },
        Document {
            id: "déjà".into(),
            title: "Ünïcode".into(),
            text: "a wing of the boundary layer, déjà vu".into(),
            metadata: Metadata::new(),
        },
    ]
}

fn vectors() -> Vec<Vec<f32>> {
    vec![
        vec![1.0, 0.0, 0.5, -0.25],
        vec![0.0, 1.0, -0.5, 0.75],
        vec![0.5, 0.5, 0.5, 0.5],
    ]
}

fn dense(precision: Precision) -> DenseIndex {
    let idx = DenseIndex::with_dim(4, precision).unwrap();
    let passages = docs().into_iter().map(Passage::whole).collect();
    idx.upsert_vectors(passages, vectors()).unwrap();
    idx
}

fn bm25() -> Bm25Index {
    let idx = Bm25Index::new(Bm25Config {
        k1: 0.9,
        b: 0.4,
        ..Bm25Config::default()
    })
    .unwrap();
    idx.add_many(docs()).unwrap();
    idx
}

fn write_fixtures(dir: &Path, suffix: &str) {
    std::fs::create_dir_all(dir).unwrap();
    bm25()
        .save(&dir.join(format!("bm25_{suffix}.idx")))
        .unwrap();
    dense(Precision::F32)
        .save(&dir.join(format!("dense_f32_{suffix}.idx")))
        .unwrap();
    dense(Precision::Int8)
        .save(&dir.join(format!("dense_int8_{suffix}.idx")))
        .unwrap();
}

fn bm25_ranking(idx: &Bm25Index, query: &str) -> Vec<(String, String)> {
    idx.search(query, 10, None)
        .into_iter()
        .map(|h| (h.passage.doc_id.clone(), format!("{:.5}", h.score)))
        .collect()
}

fn dense_ranking(idx: &DenseIndex, query: &[f32]) -> Vec<(String, String)> {
    idx.search_vector(query, 10, None)
        .unwrap()
        .into_iter()
        .map(|c| (c.passage.doc_id.clone(), format!("{:.4}", c.score)))
        .collect()
}

#[test]
fn files_written_by_older_keel_still_open_with_the_same_results() {
    if let Some(dir) = std::env::var_os("KEEL_WRITE_RAG_FIXTURES") {
        write_fixtures(Path::new(&dir), "current");
    }
    for version in ["v1", "v2"] {
        older_files_open(version);
    }
}

fn older_files_open(version: &str) {
    let old = Bm25Index::open(&fixtures().join(format!("bm25_{version}.idx"))).unwrap();
    let fresh = bm25();
    assert_eq!(old.config(), fresh.config());
    for q in ["wing", "boundary layer", "déjà", "supersonic heat"] {
        assert_eq!(bm25_ranking(&old, q), bm25_ranking(&fresh, q), "{q}");
    }
    let hit = &old.search("slipstream", 1, None)[0];
    assert_eq!(hit.passage.title, "Wings");
    assert_eq!(
        hit.passage.metadata.get("year"),
        Some(&serde_json::json!(1950))
    );
    for (name, precision) in [
        (format!("dense_f32_{version}.idx"), Precision::F32),
        (format!("dense_int8_{version}.idx"), Precision::Int8),
    ] {
        let old = DenseIndex::open(&fixtures().join(&name), None).unwrap();
        let fresh = dense(precision);
        assert_eq!(old.precision(), precision);
        assert_eq!(old.len(), 3);
        for q in [[1.0, 0.0, 0.0, 0.0], [0.1, 0.9, -0.3, 0.2]] {
            assert_eq!(dense_ranking(&old, &q), dense_ranking(&fresh, &q), "{name}");
        }
    }
}

#[test]
fn a_missing_index_file_is_an_io_error_naming_the_path() {
    let missing = fixtures().join("no-such-index.idx");
    for err in [
        Bm25Index::open(&missing).err().unwrap(),
        DenseIndex::open(&missing, None).err().unwrap(),
    ] {
        assert!(matches!(err, RagError::Io(_)), "{err:?}");
        assert!(err.to_string().contains("no-such-index.idx"), "{err}");
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("keel-rag-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Bm25,
    Dense,
}

fn open(kind: Kind, path: &Path) -> Result<(), RagError> {
    match kind {
        Kind::Bm25 => Bm25Index::open(path).map(drop),
        Kind::Dense => DenseIndex::open(path, None).map(drop),
    }
}

/// Opens `bytes` with every single byte changed (by each XOR mask) and with every truncation;
/// returns how many damaged copies still opened.
fn damaged_copies_that_open(kind: Kind, bytes: &[u8], masks: &[u8], dir: &Path) -> usize {
    let path = dir.join("damaged.idx");
    let mut opened = 0;
    let mut check = |data: &[u8], what: String| {
        std::fs::write(&path, data).unwrap();
        match open(kind, &path) {
            Ok(()) => opened += 1,
            Err(RagError::CorruptIndex(msg)) => {
                assert!(msg.contains("damaged.idx"), "{what}: {msg}")
            }
            Err(e) => panic!("{what}: expected CorruptIndex, got {e:?}"),
        }
    };
    for pos in 0..bytes.len() {
        for &mask in masks {
            let mut data = bytes.to_vec();
            data[pos] ^= mask;
            check(&data, format!("byte {pos} ^ {mask:#x}"));
        }
    }
    for len in 0..bytes.len() {
        check(&bytes[..len], format!("truncated to {len}"));
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    check(&longer, "one byte appended".into());
    opened
}

#[test]
fn every_damaged_byte_of_a_current_index_file_is_a_corrupt_index_error() {
    let dir = TempDir::new("flip");
    type Save = Box<dyn Fn(&Path)>;
    let cases: [(&str, Kind, Save); 3] = [
        ("bm25", Kind::Bm25, Box::new(|p| bm25().save(p).unwrap())),
        (
            "dense f32",
            Kind::Dense,
            Box::new(|p| dense(Precision::F32).save(p).unwrap()),
        ),
        (
            "dense int8",
            Kind::Dense,
            Box::new(|p| dense(Precision::Int8).save(p).unwrap()),
        ),
    ];
    for (name, kind, save) in cases {
        let path = dir.0.join("good.idx");
        save(&path);
        open(kind, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            damaged_copies_that_open(kind, &bytes, &[0x01, 0xff], &dir.0),
            0,
            "{name}: a damaged file opened"
        );
    }
}

#[test]
fn every_damaged_byte_of_a_version_2_file_is_a_corrupt_index_error() {
    let dir = TempDir::new("flip-v2");
    for (name, kind) in [
        ("bm25_v2.idx", Kind::Bm25),
        ("dense_f32_v2.idx", Kind::Dense),
        ("dense_int8_v2.idx", Kind::Dense),
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        open(kind, &fixtures().join(name)).unwrap();
        assert_eq!(
            damaged_copies_that_open(kind, &bytes, &[0x01, 0xff], &dir.0),
            0,
            "{name}: a damaged file opened"
        );
    }
}

#[test]
fn damaged_version_1_files_never_panic_but_are_not_all_detected() {
    // Format 1 has no checksum: damage inside a string or a vector loads silently (documented in
    // docs/rag.md; saving the index again writes format 2). Structural damage is still refused.
    let dir = TempDir::new("flip-v1");
    for (name, kind) in [
        ("bm25_v1.idx", Kind::Bm25),
        ("dense_f32_v1.idx", Kind::Dense),
        ("dense_int8_v1.idx", Kind::Dense),
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let opened = damaged_copies_that_open(kind, &bytes, &[0xff], &dir.0);
        assert!(opened > 0 && opened < bytes.len(), "{name}: {opened}");
    }
}

#[test]
fn resaving_an_older_file_writes_the_current_format_with_the_checksum() {
    let dir = TempDir::new("upgrade");
    let path = dir.0.join("bm25.idx");
    Bm25Index::open(&fixtures().join("bm25_v1.idx"))
        .unwrap()
        .save(&path)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &CURRENT.to_le_bytes());
    let reopened = Bm25Index::open(&path).unwrap();
    assert_eq!(
        bm25_ranking(&reopened, "wing"),
        bm25_ranking(&bm25(), "wing")
    );
    let path = dir.0.join("dense.idx");
    DenseIndex::open(&fixtures().join("dense_int8_v1.idx"), None)
        .unwrap()
        .save(&path)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &CURRENT.to_le_bytes());
    let q = [0.1, 0.9, -0.3, 0.2];
    let reopened = DenseIndex::open(&path, None).unwrap();
    assert_eq!(
        dense_ranking(&reopened, &q),
        dense_ranking(&dense(Precision::Int8), &q)
    );
}

/// The bytes of `needle` in `haystack`, once.
fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn both_index_files_share_one_header_and_passage_record_layout() {
    let dir = TempDir::new("layout");
    let (b, d) = (dir.0.join("b.idx"), dir.0.join("d.idx"));
    bm25().save(&b).unwrap();
    dense(Precision::F32).save(&d).unwrap();
    let (b, d) = (std::fs::read(b).unwrap(), std::fs::read(d).unwrap());
    for bytes in [&b, &d] {
        assert_eq!(&bytes[8..12], &CURRENT.to_le_bytes());
        let body = &bytes[..bytes.len() - 4];
        let crc = crc32(body);
        assert_eq!(&bytes[bytes.len() - 4..], &crc.to_le_bytes());
    }
    // The record of the passage "heat" (doc id with a u64 length, chunk id, offsets, title,
    // text, metadata) is the same run of bytes in both files.
    let heat = &docs()[1];
    let string = |out: &mut Vec<u8>, x: &str| {
        out.extend((x.len() as u64).to_le_bytes());
        out.extend(x.as_bytes());
    };
    let mut record = Vec::new();
    string(&mut record, &heat.id);
    record.extend(0u32.to_le_bytes());
    for o in [0, heat.text.len(), 0, heat.text.chars().count()] {
        record.extend((o as u64).to_le_bytes());
    }
    string(&mut record, &heat.title);
    string(&mut record, &heat.text);
    string(&mut record, &serde_json::to_string(&heat.metadata).unwrap());
    assert!(
        position(&b, &record).is_some(),
        "BM25 file lacks the record"
    );
    assert!(
        position(&d, &record).is_some(),
        "dense file lacks the record"
    );
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE, reflected), independent of the codec's implementation.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
