//! Tests of the retrieval module: chunk invariants (property tests on arbitrary Unicode), BM25
//! against a brute-force reference, incremental updates equal to fresh builds, persistence,
//! filters, fusion, metrics with trec_eval's definitions, and the BEIR loader on Cranfield.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use unicode_segmentation::UnicodeSegmentation;

use super::*;

// ---------------------------------------------------------------------------------------------
// chunk

fn check_chunks(text: &str, chunker: &Chunker) {
    let chunks = chunker.chunks(text);
    let mut covered = vec![false; text.len()];
    let mut prev: Option<Span> = None;
    for (i, c) in chunks.iter().enumerate() {
        let s = c.span;
        assert_eq!(c.index, i);
        assert_eq!(&text[s.byte_start..s.byte_end], c.text, "byte offsets");
        assert_eq!(
            text[..s.byte_start].chars().count(),
            s.char_start,
            "char start"
        );
        assert_eq!(text[..s.byte_end].chars().count(), s.char_end, "char end");
        assert!(!c.text.is_empty());
        assert_eq!(c.text.trim(), c.text, "no surrounding whitespace");
        let len = chunker.measure(c.text);
        assert!(
            len <= chunker.max_len() || c.text.graphemes(true).count() == 1,
            "chunk of length {len} over the limit {} is not a single grapheme",
            chunker.max_len()
        );
        if let Some(p) = prev {
            assert!(s.byte_start > p.byte_start, "starts increase");
            assert!(s.byte_end > p.byte_end, "ends increase");
            if s.byte_start < p.byte_end {
                let shared = chunker.measure(&text[s.byte_start..p.byte_end]);
                assert!(
                    shared <= chunker.overlap(),
                    "overlap {shared} > {}",
                    chunker.overlap()
                );
            }
        }
        covered[s.byte_start..s.byte_end].fill(true);
        prev = Some(s);
    }
    for (i, ch) in text.char_indices() {
        if !ch.is_whitespace() {
            assert!(covered[i], "non-whitespace char at byte {i} is in no chunk");
        }
    }
}

fn unicode_text() -> impl Strategy<Value = String> {
    // Mix arbitrary scalars with the separators that drive the boundaries.
    prop::collection::vec(
        prop_oneof![
            4 => any::<char>().prop_map(String::from),
            3 => "[a-zé]{1,8}",
            2 => Just(" ".to_owned()),
            1 => Just(". ".to_owned()),
            1 => Just("\n".to_owned()),
            1 => Just("\n\n".to_owned()),
            1 => Just("e\u{301}\u{301}".to_owned()),
            1 => Just("👩‍👩‍👧".to_owned()),
        ],
        0..200,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn chunks_keep_exact_offsets_stay_within_the_limit_and_cover_the_text(
        text in unicode_text(),
        max in 1usize..40,
        overlap_frac in 0.0f64..0.9,
    ) {
        let overlap = ((max as f64) * overlap_frac) as usize;
        let overlap = overlap.min(max - 1);
        check_chunks(&text, &Chunker::new(max, overlap).unwrap());
    }

    #[test]
    fn chunks_with_a_custom_length_keep_the_same_invariants(
        text in unicode_text(),
        max in 1usize..60,
    ) {
        // Bytes as the measure: monotone, and different from chars on non-ASCII text.
        let length = Length::Custom(Arc::new(|s: &str| s.len()));
        check_chunks(&text, &Chunker::with_length(max, max / 3, length).unwrap());
    }
}

#[test]
fn chunk_offsets_are_exact_on_repetitive_text() {
    let text = "la la la. ".repeat(200) + &"\n\nla la la la".repeat(50);
    for (max, overlap) in [(7, 0), (10, 3), (25, 10), (100, 20)] {
        let chunker = Chunker::new(max, overlap).unwrap();
        check_chunks(&text, &chunker);
    }
}

#[test]
fn chunks_prefer_the_largest_boundary_that_fits() {
    let text = "First sentence here. Second one.\n\nA new paragraph that is long enough.";
    let chunks = chunk_text(text, 40, 0).unwrap();
    let texts: Vec<&str> = chunks.iter().map(|c| c.text).collect();
    assert_eq!(
        texts,
        [
            "First sentence here. Second one.",
            "A new paragraph that is long enough."
        ]
    );
    // Too small for a paragraph: sentences.
    let texts: Vec<&str> = chunk_text(text, 25, 0)
        .unwrap()
        .iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts[0], "First sentence here.");
    assert_eq!(texts[1], "Second one.");
    // Too small for a sentence: words.
    let texts: Vec<&str> = chunk_text("alpha beta gamma", 11, 0)
        .unwrap()
        .iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts, ["alpha beta", "gamma"]);
    // Too small for a word: graphemes, never splitting one.
    let texts: Vec<&str> = chunk_text("e\u{301}e\u{301}e\u{301}", 2, 0)
        .unwrap()
        .iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts, ["e\u{301}", "e\u{301}", "e\u{301}"]);
}

#[test]
fn chunk_overlap_repeats_the_tail_of_the_previous_chunk() {
    let text = "one two three four five six seven eight nine ten";
    let chunks = chunk_text(text, 20, 10).unwrap();
    assert!(chunks.len() > 2);
    for pair in chunks.windows(2) {
        assert!(pair[1].span.byte_start < pair[0].span.byte_end, "{pair:?}");
    }
}

#[test]
fn chunk_settings_are_validated() {
    assert!(matches!(
        Chunker::new(0, 0),
        Err(RagError::InvalidConfig(_))
    ));
    assert!(matches!(
        Chunker::new(10, 10),
        Err(RagError::InvalidConfig(_))
    ));
    assert!(chunk_text("", 10, 0).unwrap().is_empty());
    assert!(chunk_text(" \n\n\t ", 10, 0).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// analyzer

#[test]
fn analyzer_segments_lowercases_drops_stopwords_and_stems() {
    let a = Analyzer::new(AnalyzerConfig::default()).unwrap();
    assert_eq!(
        a.terms("The Running DOGS, of Zürich's lakes!"),
        ["run", "dog", "zürich", "lake"]
    );
    let plain = Analyzer::new(AnalyzerConfig {
        stemming: false,
        stopwords: false,
        ..AnalyzerConfig::default()
    })
    .unwrap();
    assert_eq!(plain.terms("The Running dogs"), ["the", "running", "dogs"]);
    let fr = Analyzer::new(AnalyzerConfig {
        language: "fr".into(),
        ..AnalyzerConfig::default()
    })
    .unwrap();
    assert_eq!(fr.terms("les chevaux"), ["cheval"]);
    assert!(matches!(
        Analyzer::new(AnalyzerConfig {
            language: "xx".into(),
            ..AnalyzerConfig::default()
        }),
        Err(RagError::InvalidConfig(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// BM25

fn doc(id: &str, title: &str, text: &str, meta: serde_json::Value) -> Document {
    Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        metadata: meta.as_object().cloned().unwrap_or_default(),
    }
}

fn corpus() -> Vec<Document> {
    vec![
        doc(
            "a",
            "Wings",
            "the lift of a wing in a slipstream",
            json!({"year": 1950, "lang": "en"}),
        ),
        doc(
            "b",
            "Heat",
            "heat transfer in a slab; heat conduction",
            json!({"year": 1960, "lang": "en"}),
        ),
        doc(
            "c",
            "",
            "supersonic flow over a wing and wing tips",
            json!({"year": 1970, "lang": "de"}),
        ),
        doc(
            "d",
            "Boundary layers",
            "laminar boundary layer flow with heat transfer",
            json!({"year": 1980}),
        ),
        doc(
            "e",
            "",
            "supersonic flow over a wing and wing tips",
            json!({}),
        ),
    ]
}

/// BM25 computed from scratch, term by term, as the module docs define it.
fn reference_scores(docs: &[Document], query: &str, k1: f64, b: f64) -> Vec<(String, f64)> {
    let a = Analyzer::new(AnalyzerConfig::default()).unwrap();
    let analysed: Vec<Vec<String>> = docs
        .iter()
        .map(|d| a.terms(&format!("{} {}", d.title, d.text)))
        .collect();
    let n = docs.len() as f64;
    let avgdl = analysed.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut out = Vec::new();
    for (d, terms) in docs.iter().zip(&analysed) {
        let mut score = 0.0;
        let mut matched = false;
        for q in a.terms(query) {
            let df = analysed.iter().filter(|t| t.contains(&q)).count() as f64;
            let tf = terms.iter().filter(|t| **t == q).count() as f64;
            if tf > 0.0 {
                matched = true;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                score += idf * tf / (tf + k1 * (1.0 - b + b * terms.len() as f64 / avgdl));
            }
        }
        if matched {
            out.push((d.id.clone(), score));
        }
    }
    out.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    out
}

fn scores(hits: &[Hit]) -> Vec<(String, f64)> {
    hits.iter()
        .map(|h| (h.doc_id().to_owned(), h.score))
        .collect()
}

fn assert_close(got: &[(String, f64)], want: &[(String, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn bm25_scores_match_the_reference_formula() {
    for (k1, b) in [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0), (1.2, 0.0)] {
        let index = Bm25Index::new(Bm25Config {
            k1,
            b,
            ..Bm25Config::default()
        })
        .unwrap();
        index.add_many(corpus()).unwrap();
        for q in [
            "wing",
            "heat transfer",
            "supersonic wing flow",
            "wing wing",
            "nothing matches",
        ] {
            let hits = index.search(q, 10, None);
            assert_close(
                &scores(&hits),
                &reference_scores(&corpus(), q, f64::from(k1), f64::from(b)),
            );
        }
    }
}

#[test]
fn bm25_ties_break_by_document_id_whatever_the_insertion_order() {
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    let mut docs = corpus();
    docs.reverse();
    index.add_many(docs).unwrap();
    let hits = index.search("supersonic", 10, None);
    let ids: Vec<&str> = hits.iter().map(Hit::doc_id).collect();
    assert_eq!(ids, ["c", "e"]);
    assert_eq!(hits[0].score, hits[1].score);
    // Top-1 of a tie is still the smaller id.
    assert_eq!(index.search("supersonic", 1, None)[0].doc_id(), "c");
}

#[test]
fn bm25_updates_and_deletes_score_like_a_fresh_build() {
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    index.add_many(corpus()).unwrap();
    index
        .add(doc("f", "Extra", "wing wing heat", json!({})))
        .unwrap();
    assert!(index.delete("b"));
    assert!(!index.delete("b"));
    index
        .update(doc("c", "", "heat in a wing", json!({"year": 1999})))
        .unwrap();
    index
        .update(doc("g", "", "a brand new wing", json!({})))
        .unwrap();
    // Many deletes force a compaction of the postings.
    for i in 0..3000 {
        index
            .add(doc(&format!("tmp{i}"), "", "wing heat flow", json!({})))
            .unwrap();
    }
    for i in 0..3000 {
        assert!(index.delete(&format!("tmp{i}")));
    }
    let fresh_docs = vec![
        corpus()[0].clone(),
        doc("c", "", "heat in a wing", json!({"year": 1999})),
        corpus()[3].clone(),
        corpus()[4].clone(),
        doc("f", "Extra", "wing wing heat", json!({})),
        doc("g", "", "a brand new wing", json!({})),
    ];
    let fresh = Bm25Index::new(Bm25Config::default()).unwrap();
    fresh.add_many(fresh_docs).unwrap();
    for q in [
        "wing",
        "heat",
        "supersonic flow",
        "boundary layer heat wing",
    ] {
        let a = scores(&index.search(q, 10, None));
        let b = scores(&fresh.search(q, 10, None));
        assert_eq!(a, b, "query {q:?}");
    }
    assert_eq!(index.stats().documents, 6);
}

#[test]
fn bm25_rejects_duplicates_and_bad_settings() {
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    index.add_many(corpus()).unwrap();
    assert_eq!(
        index.add(doc("a", "", "x", json!({}))),
        Err(RagError::DuplicateDocument)
    );
    assert_eq!(
        index.add_many(vec![
            doc("n", "", "x", json!({})),
            doc("n", "", "y", json!({}))
        ]),
        Err(RagError::DuplicateDocument)
    );
    assert!(!index.contains("n"), "a failed batch adds nothing");
    for (k1, b) in [(-1.0, 0.5), (f32::NAN, 0.5), (1.2, 1.5), (1.2, -0.1)] {
        assert!(matches!(
            Bm25Index::new(Bm25Config {
                k1,
                b,
                ..Bm25Config::default()
            }),
            Err(RagError::InvalidConfig(_))
        ));
    }
    assert!(index.search("wing", 0, None).is_empty());
    // A huge k allocates nothing more than the matches need.
    assert_eq!(index.search("wing", usize::MAX, None).len(), 3);
}

#[test]
fn bm25_filters_on_metadata() {
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    index.add_many(corpus()).unwrap();
    let ids = |f: serde_json::Value| -> Vec<String> {
        let f = Filter::from_json(&f).unwrap();
        let mut v: Vec<String> = index
            .search("wing heat flow", 10, Some(&f))
            .iter()
            .map(|h| h.doc_id().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(json!({"lang": "en"})), ["a", "b"]);
    assert_eq!(ids(json!({"lang": ["de", "en"]})), ["a", "b", "c"]);
    assert_eq!(ids(json!({"year": {"$gte": 1960}})), ["b", "c", "d"]);
    assert_eq!(
        ids(json!({"year": {"$lt": 1960.5}, "lang": "en"})),
        ["a", "b"]
    );
    assert_eq!(
        ids(json!({"$or": [{"lang": "de"}, {"year": 1980.0}]})),
        ["c", "d"]
    );
    assert_eq!(ids(json!({"lang": {"$exists": false}})), ["d", "e"]);
    assert_eq!(ids(json!({"$not": {"lang": "en"}})), ["c", "d", "e"]);
    assert_eq!(ids(json!({"lang": {"$ne": "en"}})), ["c", "d", "e"]);
    for bad in [
        json!([1]),
        json!({"$xor": []}),
        json!({"f": {"$gt": 1, "$lt": 2}}),
        json!({"f": {"$in": 3}}),
    ] {
        assert!(
            matches!(Filter::from_json(&bad), Err(RagError::InvalidMetadata(_))),
            "{bad}"
        );
    }
}

#[test]
fn bm25_persists_and_reopens_with_identical_results() {
    let dir = std::env::temp_dir().join(format!("keel-rag-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.bm25");
    let index = Bm25Index::new(Bm25Config {
        k1: 0.9,
        b: 0.4,
        ..Bm25Config::default()
    })
    .unwrap();
    index.add_many(corpus()).unwrap();
    index.delete("d");
    index.save(&path).unwrap();
    let reopened = Bm25Index::open(&path).unwrap();
    assert_eq!(reopened.config(), index.config());
    for q in ["wing", "heat transfer", "supersonic"] {
        assert_eq!(
            scores(&index.search(q, 10, None)),
            scores(&reopened.search(q, 10, None))
        );
    }
    let hit = &reopened.search("slipstream", 1, None)[0];
    assert_eq!(hit.passage.title, "Wings");
    assert_eq!(hit.passage.metadata.get("year"), Some(&json!(1950)));
    // It keeps working incrementally.
    reopened
        .add(doc("z", "", "slipstream slipstream", json!({})))
        .unwrap();
    assert_eq!(reopened.search("slipstream", 1, None)[0].doc_id(), "z");
    // Damaged files are errors, never panics.
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            matches!(Bm25Index::open(&path), Err(RagError::CorruptIndex(_))),
            "cut {cut}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[8] = 99;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        Bm25Index::open(&path),
        Err(RagError::CorruptIndex(_))
    ));
    assert!(matches!(
        Bm25Index::open(&dir.join("missing")),
        Err(RagError::Io(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bm25_is_shared_between_threads() {
    let index = Arc::new(Bm25Index::new(Bm25Config::default()).unwrap());
    index.add_many(corpus()).unwrap();
    let want = scores(&index.search("wing heat", 10, None));
    std::thread::scope(|s| {
        for t in 0..4 {
            let index = &index;
            let want = &want;
            s.spawn(move || {
                for i in 0..200 {
                    // Concurrent adds change N and avgdl, so only the matching set is stable.
                    let mut ids: Vec<String> = scores(&index.search("wing heat", 10, None))
                        .into_iter()
                        .map(|x| x.0)
                        .collect();
                    ids.sort();
                    let mut want_ids: Vec<String> = want.iter().map(|x| x.0.clone()).collect();
                    want_ids.sort();
                    assert_eq!(ids, want_ids);
                    let id = format!("t{t}-{i}");
                    index
                        .add(doc(&id, "", "unrelated words only", json!({})))
                        .unwrap();
                    assert!(index.delete(&id));
                }
            });
        }
    });
    let many = index
        .search_many(&["wing".into(), "heat".into()], 3, None, 2)
        .unwrap();
    assert_eq!(scores(&many[0]), scores(&index.search("wing", 3, None)));
}

// ---------------------------------------------------------------------------------------------
// fusion and the pipeline

fn cand(id: &str, score: f32) -> Candidate {
    Candidate {
        passage: Arc::new(Passage::whole(Document::new(id, ""))),
        score,
    }
}

#[test]
fn rrf_sums_reciprocal_ranks_and_keeps_each_source_rank() {
    let a = vec![cand("x", 9.0), cand("y", 5.0), cand("z", 1.0)];
    let b = vec![cand("z", 0.9), cand("x", 0.8)];
    let hits = rrf(vec![("bm25".into(), a), ("dense".into(), b)], 10);
    let ids: Vec<&str> = hits.iter().map(Hit::doc_id).collect();
    assert_eq!(ids, ["x", "z", "y"]);
    assert!((hits[0].score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
    assert!((hits[1].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
    assert_eq!(
        hits[0].sources[1],
        SourceRank {
            retriever: "dense".into(),
            rank: 2,
            score: 0.8
        }
    );
    assert_eq!(hits[2].sources.len(), 1);
}

#[test]
fn weighted_fusion_normalises_each_list() {
    let lists = vec![
        RankedList {
            retriever: "a".into(),
            weight: 1.0,
            candidates: vec![cand("x", 10.0), cand("y", 5.0), cand("z", 0.0)],
        },
        RankedList {
            retriever: "b".into(),
            weight: 3.0,
            candidates: vec![cand("z", 2.0), cand("y", 1.0)],
        },
    ];
    let hits = fuse(&lists, Fusion::Weighted(Normalization::MinMax), 10).unwrap();
    let got: Vec<(&str, f64)> = hits.iter().map(|h| (h.doc_id(), h.score)).collect();
    assert_eq!(got, [("z", 3.0), ("x", 1.0), ("y", 0.5)]);
    let hits = fuse(&lists, Fusion::Weighted(Normalization::ZScore), 10).unwrap();
    // List a: mean 5, sd sqrt(50/3); list b: mean 1.5, sd 0.5.
    let sd = (50.0f64 / 3.0).sqrt();
    let z = |id: &str| hits.iter().find(|h| h.doc_id() == id).unwrap().score;
    assert!((z("x") - 5.0 / sd).abs() < 1e-9);
    assert!((z("z") - (-5.0 / sd + 3.0)).abs() < 1e-9);
    assert!((z("y") - (0.0 - 3.0)).abs() < 1e-9);
    let bad = vec![RankedList {
        retriever: "a".into(),
        weight: f64::NAN,
        candidates: vec![],
    }];
    assert!(matches!(
        fuse(&bad, Fusion::default(), 3),
        Err(RagError::InvalidConfig(_))
    ));
}

struct ReverseAlphabet;
impl Reranker for ReverseAlphabet {
    fn score(&self, _query: &str, passages: &[&Passage]) -> Result<Vec<f32>, RagError> {
        Ok(passages
            .iter()
            .map(|p| f32::from(p.doc_id.as_bytes()[0]))
            .collect())
    }
}

#[test]
fn the_pipeline_chunks_fuses_reranks_and_cites() {
    let bm25 = Arc::new(Bm25Index::new(Bm25Config::default()).unwrap());
    let pipeline = Pipeline::new()
        .with_chunker(Chunker::new(40, 0).unwrap())
        .with_retriever(bm25.clone(), 1.0)
        .unwrap();
    let text = "Wings lift aircraft. Engines push them forward.\n\nHeat shields protect reentry vehicles from heat.";
    pipeline
        .upsert(vec![
            doc("doc1", "Flight", text, json!({"k": 1})),
            doc("doc2", "", "heat heat heat", json!({})),
        ])
        .unwrap();
    let hits = pipeline.search("heat shields", 5, None).unwrap();
    let h = hits.iter().find(|h| h.doc_id() == "doc1").unwrap();
    assert_eq!(
        &text[h.span().byte_start..h.span().byte_end],
        h.passage.text
    );
    assert!(h.passage.text.contains("Heat shields"));
    assert!(h.chunk_id() > 0);
    assert_eq!(h.passage.title, "Flight");
    assert_eq!(h.passage.metadata.get("k"), Some(&json!(1)));
    assert_eq!(&*h.sources[0].retriever, "bm25");
    // Upsert replaces all chunks of a document.
    pipeline
        .upsert(vec![doc("doc1", "", "nothing relevant", json!({}))])
        .unwrap();
    assert!(pipeline.search("shields", 5, None).unwrap().is_empty());
    assert!(pipeline.delete("doc2").unwrap());
    // A reranker reorders the head and is reported as a source.
    let reranked = Pipeline::new()
        .with_retriever(bm25, 1.0)
        .unwrap()
        .with_reranker(Arc::new(ReverseAlphabet), 10);
    reranked
        .upsert(vec![
            doc("a", "", "x y", json!({})),
            doc("b", "", "x", json!({})),
        ])
        .unwrap();
    let hits = reranked.search("x", 2, None).unwrap();
    assert_eq!(hits[0].doc_id(), "b");
    assert_eq!(&*hits[0].sources.last().unwrap().retriever, "rerank");
}

/// Scores every passage the same.
struct Flat;
impl Reranker for Flat {
    fn score(&self, _query: &str, passages: &[&Passage]) -> Result<Vec<f32>, RagError> {
        Ok(vec![0.5; passages.len()])
    }
}

fn hit(id: &str, chunk: u32, score: f64) -> Hit {
    let mut p = Passage::whole(Document::new(id, "text"));
    p.chunk_id = chunk;
    Hit {
        passage: Arc::new(p),
        score,
        sources: Vec::new(),
    }
}

#[test]
fn rerank_ties_break_by_document_then_chunk_id_and_the_tail_keeps_its_order() {
    let hits = vec![
        hit("b", 0, 4.0),
        hit("a", 1, 3.0),
        hit("a", 0, 2.0),
        hit("z", 0, 1.0),
        hit("c", 0, 0.5),
    ];
    let out = rerank_hits(&Flat, "q", hits.clone(), 4).unwrap();
    let order: Vec<(&str, u32)> = out.iter().map(|h| (h.doc_id(), h.chunk_id())).collect();
    assert_eq!(order, [("a", 0), ("a", 1), ("b", 0), ("z", 0), ("c", 0)]);
    for (i, h) in out[..4].iter().enumerate() {
        assert_eq!(h.score, 0.5);
        let s = h.sources.last().unwrap();
        assert_eq!((&*s.retriever, s.rank, s.score), ("rerank", i + 1, 0.5));
    }
    assert!(out[4].sources.is_empty() && out[4].score == 0.5);
    // `top` beyond the list reranks everything; 0 reranks nothing.
    assert_eq!(
        rerank_hits(&Flat, "q", hits.clone(), usize::MAX).unwrap()[4].doc_id(),
        "z"
    );
    let none = rerank_hits(&Flat, "q", hits, 0).unwrap();
    assert_eq!(none[0].doc_id(), "b");
    assert!(none.iter().all(|h| h.sources.is_empty()));
}

#[test]
fn fusion_methods_parse_by_name_with_a_clear_error() {
    assert_eq!("rrf".parse::<Fusion>().unwrap(), Fusion::Rrf { k: 60.0 });
    assert_eq!(
        "minmax".parse::<Fusion>().unwrap(),
        Fusion::Weighted(Normalization::MinMax)
    );
    assert_eq!(
        "zscore".parse::<Fusion>().unwrap(),
        Fusion::Weighted(Normalization::ZScore)
    );
    for name in Fusion::METHODS {
        assert!(name.parse::<Fusion>().is_ok());
    }
    let err = "borda".parse::<Fusion>().unwrap_err();
    assert!(
        matches!(&err, RagError::InvalidConfig(m) if m.contains("\"borda\"") && m.contains("zscore")),
        "{err}"
    );
    let rrf = Fusion::default().with_rrf_k(Some(10.0)).unwrap();
    assert_eq!(rrf, Fusion::Rrf { k: 10.0 });
    assert_eq!(
        Fusion::default().with_rrf_k(None).unwrap(),
        Fusion::default()
    );
    assert!(Fusion::Weighted(Normalization::ZScore)
        .with_rrf_k(Some(60.0))
        .is_err());
}

#[test]
fn dense_and_bm25_candidates_become_hits_the_same_way() {
    let hits = hits_from_candidates("dense", vec![cand("x", 0.9), cand("y", 0.4)]);
    assert_eq!(hits[1].doc_id(), "y");
    assert_eq!(hits[1].score, f64::from(0.4f32));
    assert_eq!(
        hits[1].sources,
        [SourceRank {
            retriever: Arc::from("dense"),
            rank: 2,
            score: 0.4
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// evaluation

fn qrels(rows: &[(&str, &str, i32)]) -> Qrels {
    let mut q = Qrels::new();
    for &(qid, d, g) in rows {
        q.entry(qid.into()).or_default().insert(d.into(), g);
    }
    q
}

fn run(rows: &[(&str, &str, f64)]) -> Run {
    let mut r = Run::new();
    for &(qid, d, s) in rows {
        r.entry(qid.into()).or_default().push((d.into(), s));
    }
    r
}

#[test]
fn metrics_follow_trec_eval_definitions() {
    let q = qrels(&[("1", "a", 2), ("1", "b", 1), ("1", "c", 0), ("1", "x", 3)]);
    let r = run(&[
        ("1", "a", 0.9),
        ("1", "c", 0.8),
        ("1", "b", 0.7),
        ("1", "d", 0.1),
    ]);
    let metrics: Vec<Metric> = ["ndcg@3", "recall@2", "p@2", "map", "mrr", "map@1"]
        .iter()
        .map(|m| Metric::parse(m).unwrap())
        .collect();
    let e = evaluate(&q, &r, &metrics).unwrap();
    let l = |i: f64| (i + 1.0).log2();
    let dcg = 2.0 / l(1.0) + 0.0 + 1.0 / l(3.0);
    let idcg = 3.0 / l(1.0) + 2.0 / l(2.0) + 1.0 / l(3.0);
    let want = [
        dcg / idcg,
        1.0 / 3.0,
        0.5,
        (1.0 + 2.0 / 3.0) / 3.0,
        1.0,
        1.0 / 3.0,
    ];
    for (g, w) in e.mean.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{:?} vs {want:?}", e.mean);
    }
}

#[test]
fn metric_ties_break_by_document_id_descending_like_trec_eval() {
    // "b" and "a" tie: trec_eval ranks "b" first.
    let q = qrels(&[("1", "a", 1)]);
    let r = run(&[("1", "a", 1.0), ("1", "b", 1.0)]);
    let e = evaluate(&q, &r, &[Metric::Mrr]).unwrap();
    assert_eq!(e.mean, [0.5]);
    // Queries absent from the qrels are ignored; a query without relevant docs scores 0.
    let q = qrels(&[("1", "a", 1), ("2", "z", 0)]);
    let r = run(&[("1", "a", 1.0), ("2", "a", 1.0), ("3", "a", 1.0)]);
    let e = evaluate(&q, &r, &[Metric::Mrr, Metric::Ndcg(10)]).unwrap();
    assert_eq!(e.per_query.len(), 2);
    assert_eq!(e.mean, [0.5, 0.5]);
    assert!(matches!(
        evaluate(
            &q,
            &run(&[("1", "a", 1.0), ("1", "a", 2.0)]),
            &[Metric::Mrr]
        ),
        Err(RagError::InvalidData(_))
    ));
    for bad in ["ndcg", "ndcg@0", "foo@3", "mrr@x"] {
        assert!(Metric::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn drop_self_hits_removes_only_the_query_id() {
    let mut r = run(&[("1", "1", 3.0), ("1", "2", 2.0)]);
    eval::drop_self_hits(&mut r);
    assert_eq!(r["1"], [("2".to_owned(), 2.0)]);
}

/// The Cranfield collection, located relative to the repository; its absence is a failure.
pub(crate) fn cranfield_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cranfield");
    assert!(
        dir.join("corpus.jsonl").is_file(),
        "the Cranfield data set is missing: expected BEIR files in {} (corpus.jsonl, queries.jsonl, qrels/test.tsv)",
        dir.display()
    );
    dir
}

#[test]
fn beir_loader_reads_cranfield_and_bm25_reaches_the_quality_bar() {
    let ds = load_beir(&cranfield_dir(), "test").unwrap();
    assert_eq!(ds.corpus.len(), 1400);
    assert_eq!(ds.queries.len(), 225);
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    index.add_many(ds.corpus.clone()).unwrap();
    let mut r = Run::new();
    for (qid, text) in &ds.queries {
        let hits = index.search(text, 100, None);
        r.insert(
            qid.clone(),
            hits.iter()
                .map(|h| (h.doc_id().to_owned(), h.score))
                .collect(),
        );
    }
    let metrics = [Metric::Ndcg(10), Metric::Recall(100), Metric::Map(None)];
    let e = evaluate(&ds.qrels, &r, &metrics).unwrap();
    eprintln!(
        "cranfield: ndcg@10 {:.4} recall@100 {:.4} map {:.4}",
        e.mean[0], e.mean[1], e.mean[2]
    );
    // The best anchor measured here (bm25s, stemmed) reaches 0.369.
    assert!(
        e.mean[0] >= 0.369,
        "nDCG@10 {:.4} below the anchors' 0.369",
        e.mean[0]
    );
    assert!(matches!(
        load_beir(&cranfield_dir(), "nosuchsplit"),
        Err(RagError::InvalidData(_))
    ));
}

#[test]
fn chunks_never_split_a_grapheme_cluster() {
    // "e" + two combining accents is one grapheme of 3 chars; a limit of 4 fits one, not two.
    let text = "e\u{301}\u{301}".repeat(5);
    let chunker = Chunker::new(4, 0).unwrap();
    for c in chunker.chunks(&text) {
        assert_eq!(c.text, "e\u{301}\u{301}");
    }
}

#[test]
fn sentences_end_after_terminators_and_closing_quotes() {
    let text = "He said \"Stop.\" Then left! Really?! 終わり。次へ";
    let texts: Vec<&str> = chunk_text(text, 16, 0)
        .unwrap()
        .iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(
        texts,
        ["He said \"Stop.\"", "Then left!", "Really?! 終わり。次へ"]
    );
    let texts: Vec<&str> = chunk_text("終わり。次へ進む", 5, 0)
        .unwrap()
        .iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts, ["終わり。", "次へ進む"]);
}

#[test]
fn bm25_parallel_indexing_builds_the_same_index() {
    let ds = load_beir(&cranfield_dir(), "test").unwrap();
    let one = Bm25Index::new(Bm25Config::default()).unwrap();
    one.add_many(ds.corpus.clone()).unwrap();
    let two = Bm25Index::new(Bm25Config::default()).unwrap();
    two.add(ds.corpus[0].clone()).unwrap();
    two.add_many_threads(ds.corpus[1..].to_vec(), 2).unwrap();
    assert_eq!(one.stats(), two.stats());
    for (_, q) in ds.queries.iter().take(40) {
        assert_eq!(
            scores(&one.search(q, 20, None)),
            scores(&two.search(q, 20, None))
        );
    }
    let dup = vec![ds.corpus[5].clone(), Document::new("fresh", "x")];
    assert_eq!(
        two.add_many_threads(dup, 2),
        Err(RagError::DuplicateDocument)
    );
    assert!(!two.contains("fresh"));
}
