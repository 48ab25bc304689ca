//! What the Cargo features change for a user. Run with the default features (`make test-rust`)
//! and with none (`cargo test -p keel-engine --no-default-features --test features`, also in
//! `make test-rust`), so the code paths a slim build takes are exercised, not only compiled:
//! - `rayon`: the `threads` arguments of BM25 give the same index and the same hits with the
//!   thread pool as without it (where the work runs on the calling thread);
//! - `neural`: without it, the configuration refuses the retrieval model fields by name (nothing
//!   could load them); with it, they are accepted.

use keel::config::Config;
use keel::rag::{Bm25Config, Bm25Index, Document};

fn corpus() -> Vec<Document> {
    let words = [
        "wing", "heat", "flow", "shock", "boundary", "layer", "plate", "cone",
    ];
    (0..200)
        .map(|i| {
            let text: Vec<&str> = (0..12)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect();
            Document::new(format!("d{i}"), text.join(" "))
        })
        .collect()
}

fn ranked(hits: &[keel::rag::Hit]) -> Vec<(String, u64)> {
    hits.iter()
        .map(|h| (h.doc_id().to_owned(), h.score.to_bits()))
        .collect()
}

#[test]
fn bm25_threads_give_the_same_index_and_hits_with_or_without_rayon() {
    let one = Bm25Index::new(Bm25Config::default()).unwrap();
    one.add_many(corpus()).unwrap();
    let many = Bm25Index::new(Bm25Config::default()).unwrap();
    many.add_many_threads(corpus(), 0).unwrap();
    assert_eq!(one.stats(), many.stats());

    let queries: Vec<String> = ["wing heat", "shock layer", "cone plate flow", "nothing"]
        .iter()
        .map(|q| q.to_string())
        .collect();
    let batched = many.search_many(&queries, 5, None, 0).unwrap();
    for (q, hits) in queries.iter().zip(&batched) {
        assert_eq!(ranked(hits), ranked(&one.search(q, 5, None)), "{q}");
    }
    assert!(!batched[0].is_empty());
    // Still validated without a pool.
    assert!(many.search_many(&queries, 5, None, 1_000_000).is_err());
}

#[test]
fn retrieval_model_fields_follow_the_neural_feature() {
    let dir = std::env::temp_dir().join(format!("keel-features-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[database]\nurl = \"sqlite:///tmp/never-opened.db\"\n[retrieval]\nembedder = {:?}\n",
        dir.display().to_string()
    );
    let result = Config::from_toml(&text).unwrap().validate();
    std::fs::remove_dir(&dir).unwrap();
    if cfg!(feature = "neural") {
        result.unwrap();
    } else {
        let msg = result.unwrap_err().to_string();
        assert!(
            msg.contains("retrieval.embedder") && msg.contains("Cargo feature `neural`"),
            "{msg}"
        );
    }
}
