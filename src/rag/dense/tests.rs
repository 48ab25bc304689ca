//! Dense index behaviour on synthetic vectors (no model needed): exact top-k against a naive
//! sort, ties, upsert/delete, filters, persistence, int8 recall and typed errors.

use super::*;
use crate::rag::{Document, Metadata};

fn rng(seed: &mut u64) -> f32 {
    // xorshift64*: deterministic vectors without a dependency.
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    let x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| rng(&mut s)).collect();
            normalize(&mut v);
            v
        })
        .collect()
}

fn passage(doc: &str, chunk: u32, year: i64) -> Passage {
    let mut m = Metadata::new();
    m.insert("y".into(), year.into());
    let mut p = Passage::whole(Document::new(doc, format!("text of {doc}")));
    p.chunk_id = chunk;
    p.metadata = Arc::new(m);
    p
}

fn index(n: usize, dim: usize, precision: Precision) -> (DenseIndex, Vec<Vec<f32>>) {
    let idx = DenseIndex::with_dim(dim, precision).unwrap();
    let vs = vectors(n, dim, 7);
    let ps = (0..n)
        .map(|i| passage(&format!("d{i}"), 0, 1900 + (i % 100) as i64))
        .collect();
    idx.upsert_vectors(ps, vs.clone()).unwrap();
    (idx, vs)
}

fn naive(vs: &[Vec<f32>], q: &[f32], k: usize) -> Vec<String> {
    let mut s: Vec<(f32, usize)> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter()
        .take(k)
        .map(|(_, i)| format!("d{i}"))
        .collect()
}

fn ids(c: &[Candidate]) -> Vec<String> {
    c.iter().map(|c| c.passage.doc_id.clone()).collect()
}

#[test]
fn exact_top_k_matches_a_naive_sort_serial_and_parallel() {
    for n in [10, 1000, 3 * BLOCK_ROWS + 17] {
        let (idx, _) = index(n, 50, Precision::F32);
        let stored: Vec<Vec<f32>> = vectors(n, 50, 7);
        for q in vectors(5, 50, 99) {
            let got = idx.search_vector(&q, 10, None).unwrap();
            assert_eq!(ids(&got), naive(&stored, &q, 10), "n = {n}");
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}

#[test]
fn dot_products_match_scalar_sums_for_every_tail_length() {
    for dim in [1, 15, 16, 17, 384, 385] {
        let v = vectors(2, dim, 3);
        let scalar: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
        assert!((dot_f32(&v[0], &v[1]) - scalar).abs() < 1e-5);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        quantize(&v[0], &mut a);
        quantize(&v[1], &mut b);
        let exact: i32 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
        assert_eq!(dot_i8(&a, &b), exact);
    }
}

#[test]
fn ties_rank_the_earlier_row_first() {
    let idx = DenseIndex::with_dim(2, Precision::F32).unwrap();
    let ps = (0..5).map(|i| passage(&format!("d{i}"), 0, 0)).collect();
    idx.upsert_vectors(ps, vec![vec![1.0, 0.0]; 5]).unwrap();
    let got = idx.search_vector(&[1.0, 0.0], 3, None).unwrap();
    assert_eq!(ids(&got), ["d0", "d1", "d2"]);
}

#[test]
fn upsert_replaces_a_documents_passages_and_delete_removes_them() {
    let idx = DenseIndex::with_dim(2, Precision::F32).unwrap();
    let ps = vec![passage("a", 0, 0), passage("a", 1, 0), passage("b", 0, 0)];
    idx.upsert_vectors(ps, vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.7, 0.7]])
        .unwrap();
    assert_eq!(idx.len(), 3);
    idx.upsert_vectors(vec![passage("a", 0, 0)], vec![vec![-1.0, 0.0]])
        .unwrap();
    assert_eq!(idx.len(), 2);
    let top = idx.search_vector(&[1.0, 0.0], 1, None).unwrap();
    assert_eq!(ids(&top), ["b"]);
    assert!(idx.delete("b"));
    assert!(!idx.delete("b"));
    let all = idx.search_vector(&[1.0, 0.0], 10, None).unwrap();
    assert_eq!(ids(&all), ["a"]);
    assert!(
        (all[0].score + 1.0).abs() < 1e-6,
        "stored vectors are normalised"
    );
}

#[test]
fn filters_restrict_candidates() {
    let (idx, _) = index(300, 16, Precision::F32);
    let f = Filter::parse(r#"{"y": 1905}"#).unwrap();
    let got = idx
        .search_vector(&vectors(1, 16, 5)[0], 10, Some(&f))
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|c| c.passage.metadata["y"] == 1905));
}

#[test]
fn int8_recall_at_10_against_f32_is_at_least_0_9() {
    let (exact, _) = index(5000, 384, Precision::F32);
    let (approx, _) = index(5000, 384, Precision::Int8);
    assert!(approx.vector_bytes() * 3 < exact.vector_bytes());
    let mut hit = 0;
    let queries = vectors(50, 384, 1234);
    for q in &queries {
        let want: HashSet<String> = ids(&exact.search_vector(q, 10, None).unwrap())
            .into_iter()
            .collect();
        hit += ids(&approx.search_vector(q, 10, None).unwrap())
            .iter()
            .filter(|d| want.contains(*d))
            .count();
    }
    let recall = hit as f64 / (10 * queries.len()) as f64;
    assert!(recall >= 0.9, "int8 recall@10 = {recall}");
}

#[test]
fn save_and_open_round_trip_both_precisions() {
    let dir = std::env::temp_dir().join(format!("keel-dense-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for precision in [Precision::F32, Precision::Int8] {
        let (idx, _) = index(200, 24, precision);
        let path = dir.join("dense.idx");
        idx.save(&path).unwrap();
        let back = DenseIndex::open(&path, None).unwrap();
        assert_eq!(back.len(), 200);
        assert_eq!(back.precision(), precision);
        let q = &vectors(1, 24, 77)[0];
        let (a, b) = (
            idx.search_vector(q, 5, None).unwrap(),
            back.search_vector(q, 5, None).unwrap(),
        );
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a[0].passage, b[0].passage);
        // A damaged file is a typed error.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            DenseIndex::open(&path, None),
            Err(RagError::CorruptIndex(_))
        ));
        std::fs::write(&path, b"not an index").unwrap();
        assert!(matches!(
            DenseIndex::open(&path, None),
            Err(RagError::CorruptIndex(_))
        ));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert!(matches!(
        DenseIndex::with_dim(0, Precision::F32),
        Err(RagError::InvalidConfig(_))
    ));
    let idx = DenseIndex::with_dim(3, Precision::F32).unwrap();
    let cases: Vec<(Vec<Passage>, Vec<Vec<f32>>)> = vec![
        (vec![passage("a", 0, 0)], vec![]),
        (vec![passage("a", 0, 0)], vec![vec![1.0, 2.0]]),
        (vec![passage("a", 0, 0)], vec![vec![f32::NAN, 0.0, 0.0]]),
    ];
    for (p, v) in cases {
        assert!(matches!(
            idx.upsert_vectors(p, v),
            Err(RagError::InvalidConfig(_))
        ));
    }
    assert!(idx.search_vector(&[1.0], 1, None).is_err());
    assert!(idx
        .search_vector(&[f32::INFINITY, 0.0, 0.0], 1, None)
        .is_err());
    assert!(matches!(
        idx.search("text needs an embedder", 1, None),
        Err(RagError::InvalidConfig(_))
    ));
    assert!(idx
        .search_vector(&[1.0, 0.0, 0.0], 0, None)
        .unwrap()
        .is_empty());
}
