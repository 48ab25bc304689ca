//! The neural half of retrieval against real models: the MiniLM embedder and the test
//! cross-encoder built by `make models` into `.cache/models` (or `$KEEL_TEST_MODELS`).
//!
//! Embeddings and rerank scores are compared to 1e-4 with `golden.json`, written at the same
//! time by Python onnxruntime + tokenizers (scripts/neural_reference.py). Missing models are a
//! failure that says to run `make models`, never a skip.

use std::path::PathBuf;
use std::sync::Arc;

use keel::rag::{
    rerank_hits, runtime, Bm25Config, Bm25Index, CrossEncoder, CrossEncoderOptions, DenseIndex,
    Document, Embedder, EmbedderOptions, Hit, Passage, Pipeline, Precision, RagError,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn models() -> PathBuf {
    let dir = std::env::var_os("KEEL_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache").join("models"));
    assert!(
        dir.join("golden.json").is_file() && dir.join("minilm").join("model.onnx").is_file(),
        "test models missing in {}: run `make models`",
        dir.display()
    );
    // The core never looks for Python's onnxruntime: the tests name it, as a Rust user would.
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH is not set: run through `make test-rust`, which points it at the \
         project venv's onnxruntime wheel"
    );
    dir
}

struct Golden {
    texts: Vec<String>,
    query: String,
    embeddings: Vec<Vec<f32>>,
    rerank: Vec<f32>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(models().join("golden.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    Golden {
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect(),
        query: v["query"].as_str().unwrap().to_owned(),
        embeddings: v["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect(),
        rerank: floats(&v["rerank_scores"]),
    }
}

fn embedder(batch_size: usize) -> Embedder {
    let options = EmbedderOptions {
        batch_size,
        threads: 2,
        ..EmbedderOptions::default()
    };
    Embedder::open(models().join("minilm"), options).unwrap()
}

fn cross_encoder(batch_size: usize) -> CrossEncoder {
    let options = CrossEncoderOptions {
        batch_size,
        threads: 2,
        ..CrossEncoderOptions::default()
    };
    CrossEncoder::open(models().join("test-cross-encoder"), options).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn embeddings_match_python_onnxruntime_to_1e_4_at_any_batch_size() {
    let g = golden();
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    for batch in [1, 2, 32] {
        let e = embedder(batch);
        assert_eq!(e.dim(), 384);
        assert_eq!(e.max_length(), 256, "from sentence_bert_config.json");
        let got = e.embed(&texts).unwrap();
        for (i, (a, b)) in got.iter().zip(&g.embeddings).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-4, "text {i}, batch {batch}: max diff {d}");
            let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn embedding_is_deterministic_and_one_text_equals_its_batch_row() {
    let e = embedder(4);
    let texts = ["wing lift", "boundary layer heat transfer", "shock waves"];
    let a = e.embed(&texts).unwrap();
    let b = e.embed(&texts).unwrap();
    assert_eq!(a, b);
    for (t, v) in texts.iter().zip(&a) {
        assert!(max_diff(&e.embed_one(t).unwrap(), v) < 1e-5);
    }
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn rerank_scores_match_python_in_input_order() {
    let g = golden();
    let passages: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    for batch in [1, 4, 16] {
        let got = cross_encoder(batch).score(&g.query, &passages).unwrap();
        let d = max_diff(&got, &g.rerank);
        assert!(d < 1e-4, "batch {batch}: max diff {d}");
    }
}

#[test]
fn rerank_scores_1000_candidates_in_bounded_sub_batches() {
    let ce = cross_encoder(16);
    let passages: Vec<String> = (0..1000)
        .map(|i| format!("passage {i} about {}", "airfoil ".repeat(i % 40)))
        .collect();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let all = ce.score("airfoil lift", &refs).unwrap();
    assert_eq!(all.len(), 1000);
    // Each score is independent of its neighbours: the same as scoring alone.
    for i in [0, 517, 999] {
        let one = ce.score("airfoil lift", &refs[i..=i]).unwrap();
        assert!((one[0] - all[i]).abs() < 1e-4);
    }
}

#[test]
fn missing_or_malformed_model_directories_are_clear_errors() {
    let root = std::env::temp_dir().join(format!("keel-neural-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let minilm = models().join("minilm");
    let no_tokenizer = root.join("no-tokenizer");
    std::fs::create_dir_all(&no_tokenizer).unwrap();
    std::fs::copy(minilm.join("model.onnx"), no_tokenizer.join("model.onnx")).unwrap();
    let bad_tokenizer = root.join("bad-tokenizer");
    std::fs::create_dir_all(&bad_tokenizer).unwrap();
    std::fs::copy(minilm.join("model.onnx"), bad_tokenizer.join("model.onnx")).unwrap();
    std::fs::write(bad_tokenizer.join("tokenizer.json"), "{not json").unwrap();
    let bad_model = root.join("bad-model");
    std::fs::create_dir_all(&bad_model).unwrap();
    std::fs::write(bad_model.join("model.onnx"), b"garbage").unwrap();
    std::fs::copy(
        minilm.join("tokenizer.json"),
        bad_model.join("tokenizer.json"),
    )
    .unwrap();
    let cases = [
        (root.join("absent"), "does not exist"),
        (root.clone(), "has no model.onnx"),
        (no_tokenizer, "has no tokenizer.json"),
        (bad_tokenizer, "tokenizer.json is malformed"),
        (bad_model, "cannot load"),
    ];
    for (dir, want) in cases {
        for err in [
            Embedder::open(&dir, EmbedderOptions::default()).unwrap_err(),
            CrossEncoder::open(&dir, CrossEncoderOptions::default()).unwrap_err(),
        ] {
            assert!(
                matches!(&err, RagError::Model(m) if m.contains(want)),
                "{}: {err}",
                dir.display()
            );
        }
    }
    let zero = EmbedderOptions {
        batch_size: 0,
        ..EmbedderOptions::default()
    };
    assert!(matches!(
        Embedder::open(&minilm, zero),
        Err(RagError::InvalidConfig(_))
    ));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_library_named_by_ort_dylib_path_is_the_one_loaded() {
    let _ = models();
    let named = PathBuf::from(std::env::var_os("ORT_DYLIB_PATH").unwrap());
    let _ = embedder(1);
    assert_eq!(runtime::library().unwrap(), named);
}

/// The child half of the next test: opens a model with no ORT_DYLIB_PATH.
fn open_a_model_without_ort_dylib_path() {
    let dir = std::env::var_os("KEEL_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap();
    // Whatever the outcome (the system loader may or may not have ONNX Runtime), no panic.
    let _ = Embedder::open(dir.join("minilm"), EmbedderOptions::default());
}

#[test]
fn the_core_never_runs_python_to_find_onnx_runtime() {
    if std::env::var_os("KEEL_NEURAL_CHILD").is_some() {
        open_a_model_without_ort_dylib_path();
        return;
    }
    let models = models();
    let root = std::env::temp_dir().join(format!("keel-no-python-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Every way a Python could be found (KEEL_PYTHON, VIRTUAL_ENV, python3 on PATH) leads to a
    // fake interpreter that leaves a mark when it runs.
    let mark = root.join("python-ran");
    let fake = format!("#!/bin/sh\ntouch '{}'\nexit 1\n", mark.display());
    for name in ["python", "python3"] {
        let path = bin.join(name);
        std::fs::write(&path, &fake).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_core_never_runs_python_to_find_onnx_runtime",
            "--test-threads=1",
        ])
        .env("KEEL_NEURAL_CHILD", "1")
        .env("KEEL_TEST_MODELS", &models)
        .env_remove("ORT_DYLIB_PATH")
        .env("KEEL_PYTHON", bin.join("python3"))
        .env("VIRTUAL_ENV", &root)
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success(), "the child test failed: {status}");
    let ran = mark.exists();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(
        !ran,
        "the core ran a Python interpreter to look for ONNX Runtime"
    );
}

fn docs() -> Vec<Document> {
    [
        (
            "lift",
            "Wing lift",
            "the lift of a wing increases with the angle of attack",
        ),
        (
            "heat",
            "Heat",
            "heat transfer through a laminar boundary layer on a flat plate",
        ),
        (
            "shock",
            "Shocks",
            "shock waves form in supersonic flow around a blunt body",
        ),
        (
            "buckle",
            "Shells",
            "buckling of thin cylindrical shells under axial compression",
        ),
    ]
    .into_iter()
    .map(|(id, title, text)| Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        ..Document::default()
    })
    .collect()
}

#[test]
fn dense_retrieval_finds_paraphrases_and_follows_deletes() {
    let e = Arc::new(embedder(8));
    for precision in [Precision::F32, Precision::Int8] {
        let idx = DenseIndex::new(Arc::clone(&e), precision);
        idx.upsert(docs().into_iter().map(Passage::whole).collect())
            .unwrap();
        let top = idx.search("aerofoil upward force", 2, None).unwrap();
        assert_eq!(top[0].passage.doc_id, "lift");
        let top = idx
            .search("hypersonic compression fronts", 1, None)
            .unwrap();
        assert_eq!(top[0].passage.doc_id, "shock");
        assert!(idx.delete("shock"));
        let top = idx
            .search("hypersonic compression fronts", 4, None)
            .unwrap();
        assert!(top.iter().all(|c| c.passage.doc_id != "shock"));
        assert_eq!(top.len(), 3);
    }
}

#[test]
fn hybrid_pipeline_fuses_bm25_and_dense_then_reranks() {
    let bm25 = Arc::new(Bm25Index::new(Bm25Config::default()).unwrap());
    let dense = Arc::new(DenseIndex::new(Arc::new(embedder(8)), Precision::F32));
    let pipeline = Pipeline::new()
        .with_retriever(bm25, 1.0)
        .unwrap()
        .with_retriever(dense, 1.0)
        .unwrap()
        .with_reranker(Arc::new(cross_encoder(8)), 3);
    pipeline.upsert(docs()).unwrap();
    let hits = pipeline.search("lift of a wing", 3, None).unwrap();
    assert_eq!(hits.len(), 3);
    let sources: Vec<&str> = hits[0].sources.iter().map(|s| &*s.retriever).collect();
    assert!(
        sources.contains(&"dense") && sources.contains(&"rerank"),
        "{sources:?}"
    );
    // The reranked order is the cross-encoder's.
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(pipeline.delete("lift").unwrap());
    let hits = pipeline.search("lift of a wing", 4, None).unwrap();
    assert!(hits.iter().all(|h| h.doc_id() != "lift"));
}

/// The documents of the tie test, shared with tests/c/test_neural.c and
/// tests/python/test_neural.py: two twins with the same title and text (so dense search and the
/// cross-encoder score them identically), added "b" first, and one unrelated document.
const TWINS: [(&str, &str); 3] = [
    (
        "twin-b",
        "the lift of a wing grows with its angle of attack",
    ),
    (
        "twin-a",
        "the lift of a wing grows with its angle of attack",
    ),
    (
        "shells",
        "buckling of thin cylindrical shells under axial compression",
    ),
];

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(Hit::doc_id).collect()
}

#[test]
fn tied_rerank_scores_come_back_in_document_id_order_in_every_door() {
    let dense = DenseIndex::new(Arc::new(embedder(8)), Precision::F32);
    for (id, text) in TWINS {
        dense
            .upsert(vec![Passage::whole(Document {
                id: id.into(),
                title: "Lift".into(),
                text: text.into(),
                ..Document::default()
            })])
            .unwrap();
    }
    // Dense ties go to the earlier row: twin-b, added first.
    let hits = dense.search_hits("wing lift", 3, None).unwrap();
    assert_eq!(ids(&hits), ["twin-b", "twin-a", "shells"]);
    assert_eq!(hits[0].score, hits[1].score);
    assert_eq!(&*hits[1].sources[0].retriever, "dense");
    assert_eq!(hits[1].sources[0].rank, 2);
    // The cross-encoder ties them too; the tie breaks by document id.
    let reranked = rerank_hits(&cross_encoder(8), "wing lift", hits, 3).unwrap();
    assert_eq!(ids(&reranked), ["twin-a", "twin-b", "shells"]);
    assert_eq!(reranked[0].score, reranked[1].score);
    assert_eq!(reranked[0].sources.last().unwrap().rank, 1);
    assert_eq!(reranked[1].sources.last().unwrap().rank, 2);
}

/// The knowledge base with an embedder and a cross-encoder: hybrid BM25 + dense (RRF) finds a
/// passage sharing no word with the query, the best fused hits are reranked, and the dense
/// index is persisted and reopened (with the same embedder) without re-embedding.
#[test]
fn knowledge_base_is_hybrid_reranked_and_reopens() {
    use keel::rag::{KnowledgeBase, KnowledgeBaseOptions, Reranker};
    let root = std::env::temp_dir().join(format!("keel-neural-kb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for (name, text) in [
        (
            "garage.txt",
            "How to repair a broken automobile engine at home.",
        ),
        ("cake.txt", "Baking a chocolate cake with butter and sugar."),
        (
            "meeting.txt",
            "The car park is full: move the meeting to Tuesday.",
        ),
    ] {
        std::fs::write(docs.join(name), text).unwrap();
    }
    let e = Arc::new(embedder(8));
    let open = |reranker: Option<Arc<dyn Reranker>>| {
        let mut b = KnowledgeBase::builder()
            .path(root.join("kb"))
            .embedder(Arc::clone(&e))
            .options(KnowledgeBaseOptions {
                rerank_top: Some(2),
                ..KnowledgeBaseOptions::default()
            });
        if let Some(r) = reranker {
            b = b.reranker(r);
        }
        b.open().unwrap()
    };
    let kb = open(None);
    assert!(kb.is_hybrid());
    assert_eq!(kb.index_folder(&docs).unwrap().chunks, 3);
    let query = "mending a damaged car motor";
    let hits = kb.search(query, 3).unwrap();
    let garage = hits.iter().find(|h| h.doc_id() == "garage.txt").unwrap();
    assert_eq!(&*garage.sources[0].retriever, "dense");
    assert_eq!(garage.sources.len(), 1);
    drop(kb);

    let kb = open(Some(Arc::new(cross_encoder(4))));
    assert_eq!(kb.index_folder(&docs).unwrap().chunks, 0);
    let reranked = kb.search(query, 3).unwrap();
    assert_eq!(&*reranked[0].sources.last().unwrap().retriever, "rerank");
    // Only the best two were reranked; the third keeps its fused sources.
    assert_eq!(reranked.len(), 3);
    assert!(reranked[2]
        .sources
        .iter()
        .all(|s| &*s.retriever != "rerank"));
    std::fs::remove_dir_all(&root).unwrap();
}

// ---- Concurrent inference: the session pool and micro-batching -------------------------------

fn pooled_embedder(sessions: usize) -> Arc<Embedder> {
    let options = EmbedderOptions {
        sessions: Some(sessions),
        threads: 1,
        ..EmbedderOptions::default()
    };
    Arc::new(Embedder::open(models().join("minilm"), options).unwrap())
}

fn pooled_cross_encoder(sessions: usize) -> Arc<CrossEncoder> {
    let options = CrossEncoderOptions {
        sessions: Some(sessions),
        threads: 1,
        ..CrossEncoderOptions::default()
    };
    Arc::new(CrossEncoder::open(models().join("test-cross-encoder"), options).unwrap())
}

/// Distinct texts of several lengths (so a wrong routing or a padding mix-up shows).
fn distinct_texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "question {i}: how does {} work{}",
                [
                    "the refund",
                    "a password reset",
                    "shipping abroad",
                    "the invoice"
                ][i % 4],
                " in detail, step by step".repeat(i % 5)
            )
        })
        .collect()
}

/// Runs `f(i)` on `n` threads released together; fails (never hangs) if they do not all finish
/// within two minutes.
fn on_threads<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(std::sync::Barrier::new(n));
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let (f, start, tx) = (Arc::clone(&f), Arc::clone(&start), tx.clone());
        std::thread::spawn(move || {
            start.wait();
            let _ = tx.send((i, f(i)));
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        let (i, v) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a concurrent call did not return: deadlock?");
        out[i] = Some(v);
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn concurrent_embeddings_equal_sequential_ones_and_reach_their_own_caller() {
    let e = pooled_embedder(2);
    assert_eq!((e.sessions(), e.threads()), (2, 1));
    let texts = distinct_texts(16);
    let sequential: Vec<Vec<f32>> = texts.iter().map(|t| e.embed_one(t).unwrap()).collect();
    let batch = e
        .embed(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    for (i, (a, b)) in sequential.iter().zip(&batch).enumerate() {
        assert!(max_diff(a, b) < 1e-5, "text {i}: batch row differs");
    }
    for round in 0..3 {
        let (e2, t2) = (Arc::clone(&e), texts.clone());
        let got = on_threads(16, move |i| e2.embed_one(&t2[i]).unwrap());
        for (i, v) in got.iter().enumerate() {
            let d = max_diff(v, &sequential[i]);
            assert!(
                d < 1e-5,
                "round {round}, caller {i}: max diff {d} from its own text"
            );
        }
        // And whole lists from several callers at once.
        let (e2, t2) = (Arc::clone(&e), texts.clone());
        let got = on_threads(4, move |i| {
            let mine: Vec<&str> = t2.iter().skip(i).step_by(4).map(String::as_str).collect();
            e2.embed(&mine).unwrap()
        });
        for (i, vs) in got.iter().enumerate() {
            for (j, v) in vs.iter().enumerate() {
                assert!(
                    max_diff(v, &sequential[i + 4 * j]) < 1e-5,
                    "caller {i}, row {j}"
                );
            }
        }
    }
}

#[test]
fn concurrent_rerank_scores_equal_sequential_ones() {
    let ce = pooled_cross_encoder(2);
    let passages = distinct_texts(20);
    let queries: Vec<String> = (0..8).map(|i| format!("query {i} about refunds")).collect();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let sequential: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| ce.score(q, &refs).unwrap())
        .collect();
    let one_by_one: Vec<f32> = refs
        .iter()
        .map(|p| ce.score(&queries[0], &[p]).unwrap()[0])
        .collect();
    assert!(max_diff(&one_by_one, &sequential[0]) < 1e-4);
    let (ce2, q2, p2) = (Arc::clone(&ce), queries.clone(), passages.clone());
    let got = on_threads(16, move |i| {
        let refs: Vec<&str> = p2.iter().map(String::as_str).collect();
        ce2.score(&q2[i % 8], &refs).unwrap()
    });
    for (i, s) in got.iter().enumerate() {
        let d = max_diff(s, &sequential[i % 8]);
        assert!(d < 1e-4, "caller {i}: max diff {d}");
    }
}

#[test]
fn two_sessions_run_two_calls_at_once() {
    // With one session (the mutex this replaced) the peak stays 1 whatever the load.
    let long = "a long passage about refunds and invoices and shipping ".repeat(20);
    for sessions in [1, 2] {
        let e = pooled_embedder(sessions);
        let ce = pooled_cross_encoder(sessions);
        for _ in 0..50 {
            let (e2, ce2, l2) = (Arc::clone(&e), Arc::clone(&ce), long.clone());
            on_threads(2, move |i| {
                e2.embed_one(&format!("{i} {l2}")).unwrap();
                ce2.score(&format!("{i}"), &[&l2]).unwrap();
            });
            if e.peak_concurrency() == sessions && ce.peak_concurrency() == sessions {
                break;
            }
        }
        assert_eq!(
            e.peak_concurrency(),
            sessions,
            "embedder, {sessions} sessions"
        );
        assert_eq!(
            ce.peak_concurrency(),
            sessions,
            "cross-encoder, {sessions} sessions"
        );
    }
}

#[test]
fn sixteen_callers_on_a_pool_of_two_all_finish() {
    let e = pooled_embedder(2);
    let ce = pooled_cross_encoder(2);
    let texts = distinct_texts(40);
    let (e2, ce2, t2) = (Arc::clone(&e), Arc::clone(&ce), texts.clone());
    let got = on_threads(16, move |i| {
        let refs: Vec<&str> = t2.iter().map(String::as_str).collect();
        // Every kind of call at once: one text (queued), many texts (spread), rerank.
        let one = e2.embed_one(&t2[i]).unwrap();
        let many = e2.embed(&refs[..(i % 3) * 17 + 2]).unwrap();
        let scores = ce2.score(&t2[i], &refs[..i + 1]).unwrap();
        (one, many.len(), scores.len())
    });
    for (i, (one, many, scores)) in got.iter().enumerate() {
        assert!(max_diff(one, &e.embed_one(&texts[i]).unwrap()) < 1e-5);
        assert_eq!((*many, *scores), ((i % 3) * 17 + 2, i + 1));
    }
    assert_eq!(e.peak_concurrency(), 2);
}

#[test]
fn zero_or_absurd_session_counts_are_errors_naming_the_value() {
    let dir = models();
    for (sessions, needle) in [(0, "sessions = 0"), (100_000, "sessions = 100000")] {
        let e = Embedder::open(
            dir.join("minilm"),
            EmbedderOptions {
                sessions: Some(sessions),
                ..EmbedderOptions::default()
            },
        )
        .unwrap_err();
        let c = CrossEncoder::open(
            dir.join("test-cross-encoder"),
            CrossEncoderOptions {
                sessions: Some(sessions),
                ..CrossEncoderOptions::default()
            },
        )
        .unwrap_err();
        for err in [e, c] {
            match err {
                RagError::InvalidConfig(m) => assert!(m.contains(needle), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
