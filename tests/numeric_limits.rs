//! Extreme numeric arguments of the store, cache and retrieval APIs are typed errors or valid
//! results, never a panic inside a library (rusqlite, r2d2, `Duration`, rayon, ONNX Runtime).

use std::time::Duration;

use keel::cache::{ttl_from_secs_f64, EntryOptions, MAX_TTL};
use keel::rag::{
    self, Bm25Config, Bm25Index, Chunker, CrossEncoder, CrossEncoderOptions, DenseIndex, Document,
    Embedder, EmbedderOptions, Fusion, Metric, Precision, RagError, RankedList,
};
use keel::store::MAX_BUSY_WAIT;
use keel::{Cache, CacheConfig, CacheError, Error, Store, StoreOptions};

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("keel-limits-{name}-{}", std::process::id()));
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

#[test]
fn store_waits_beyond_what_sqlite_takes_are_invalid_arguments_naming_value_and_maximum() {
    let dir = TempDir::new("store");
    let db = dir.0.join("keel.db");
    let over = Duration::from_millis(1 << 31);
    for (options, name) in [
        (
            StoreOptions {
                busy_timeout: over,
                ..StoreOptions::default()
            },
            "busy_timeout of 2147483648 ms",
        ),
        (
            StoreOptions {
                busy_timeout: Duration::MAX,
                ..StoreOptions::default()
            },
            "busy_timeout of",
        ),
        (
            StoreOptions {
                busy_deadline: Duration::MAX,
                ..StoreOptions::default()
            },
            "busy_deadline of",
        ),
        (
            StoreOptions {
                busy_deadline: Duration::ZERO,
                ..StoreOptions::default()
            },
            "busy_deadline must be at least 1 ms",
        ),
    ] {
        let err = Store::open(&db, options).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
        if !name.contains("at least") {
            assert!(
                err.to_string().contains("maximum of 2147483647 ms"),
                "{err}"
            );
        }
    }
    // r2d2 preallocates a slot per pooled connection: u32::MAX would abort on allocation.
    for pool_size in [0, 1025, u32::MAX] {
        let options = StoreOptions {
            pool_size,
            ..StoreOptions::default()
        };
        let err = Store::open(&db, options).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "pool_size must be between 1 and 1024 (got {pool_size})"
            )),
            "{err}"
        );
    }
    // The maximum itself, and zero (never wait), are accepted.
    // Each on its own file: with a zero busy timeout, a lock left for a moment by the previous
    // store's closing connections would be (rightly) an error.
    for (i, busy_timeout) in [MAX_BUSY_WAIT, Duration::ZERO].into_iter().enumerate() {
        let options = StoreOptions {
            busy_timeout,
            ..StoreOptions::default()
        };
        // A checkpoint checks a pooled connection out: each is configured with busy_timeout.
        Store::open(dir.0.join(format!("accepted-{i}.db")), options)
            .unwrap()
            .checkpoint_truncate()
            .unwrap();
    }
}

#[test]
fn cache_sizes_and_ttls_at_their_extremes_are_errors_or_work() {
    for secs in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        1e300,
        f64::MAX,
        MAX_TTL.as_secs_f64() * 2.0,
    ] {
        assert!(
            matches!(
                ttl_from_secs_f64(secs),
                Err(Error::Cache(CacheError::InvalidTtl(_)))
            ),
            "{secs}"
        );
    }
    assert_eq!(ttl_from_secs_f64(1e-9).unwrap(), Duration::from_nanos(1));
    let cache: Cache<u64, u64> =
        Cache::new(CacheConfig::new(u64::MAX).max_weight(u64::MAX).ttl(MAX_TTL)).unwrap();
    cache.insert_with(1, 1, EntryOptions::default()).unwrap();
    assert!(matches!(
        cache.insert_with(
            2,
            2,
            EntryOptions {
                ttl: Some(MAX_TTL),
                weight: u64::MAX,
            },
        ),
        Err(Error::Cache(CacheError::EntryTooLarge { .. }))
    ));
    assert_eq!(cache.get(&1), Some(1));
    assert!(Cache::<u64, u64>::new(CacheConfig::new(1).ttl(Duration::MAX)).is_err());
}

fn bm25() -> Bm25Index {
    let idx = Bm25Index::new(Bm25Config::default()).unwrap();
    idx.add_many(vec![
        Document::new("a", "the lift of a wing"),
        Document::new("b", "heat transfer in a boundary layer"),
    ])
    .unwrap();
    idx
}

fn is_threads_error(err: &RagError, value: usize) -> bool {
    matches!(err, RagError::InvalidConfig(m)
        if m.contains(&format!("threads = {value}")) && m.contains("maximum of 1024"))
}

#[test]
fn threads_are_lowered_to_the_core_count_and_refused_above_the_maximum() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(rag::resolve_threads(0).unwrap(), cores);
    assert_eq!(rag::resolve_threads(1).unwrap(), 1);
    assert_eq!(rag::resolve_threads(rag::MAX_THREADS).unwrap(), cores);
    assert_eq!(rag::resolve_threads(cores + 5).unwrap(), cores);
    for n in [rag::MAX_THREADS + 1, 10_000, 1 << 31, usize::MAX] {
        assert!(is_threads_error(&rag::resolve_threads(n).unwrap_err(), n));
    }

    let idx = bm25();
    let queries = vec!["wing".to_owned(), "heat".to_owned()];
    let err = idx.search_many(&queries, 5, None, 10_000).unwrap_err();
    assert!(is_threads_error(&err, 10_000), "{err}");
    // A value above the core count but below the maximum runs (on the cores there are).
    let hits = idx.search_many(&queries, 5, None, 64).unwrap();
    assert_eq!(hits[0][0].passage.doc_id, "a");
    let err = idx
        .add_many_threads(
            vec![Document::new("c", "x"), Document::new("d", "y")],
            1 << 31,
        )
        .unwrap_err();
    assert!(is_threads_error(&err, 1 << 31), "{err}");
    assert!(!idx.contains("c"));

    // The ONNX Runtime threads are checked before the model directory is read.
    let missing = std::path::Path::new("/nonexistent/model");
    let err = Embedder::open(
        missing,
        EmbedderOptions {
            threads: 5000,
            ..EmbedderOptions::default()
        },
    )
    .unwrap_err();
    assert!(is_threads_error(&err, 5000), "{err}");
    let err = CrossEncoder::open(
        missing,
        CrossEncoderOptions {
            threads: usize::MAX,
            ..CrossEncoderOptions::default()
        },
    )
    .unwrap_err();
    assert!(is_threads_error(&err, usize::MAX), "{err}");
}

#[test]
fn retrieval_sizes_at_their_extremes_are_errors_or_work() {
    let idx = bm25();
    assert_eq!(idx.search("wing", usize::MAX, None).len(), 1);
    for (k1, b) in [
        (f32::NAN, 0.5),
        (f32::INFINITY, 0.5),
        (-1.0, 0.5),
        (1.2, f32::NAN),
    ] {
        let config = Bm25Config {
            k1,
            b,
            ..Bm25Config::default()
        };
        assert!(matches!(
            Bm25Index::new(config),
            Err(RagError::InvalidConfig(_))
        ));
    }

    for dim in [0, 65_537, usize::MAX] {
        let err = DenseIndex::with_dim(dim, Precision::F32).unwrap_err();
        assert!(err.to_string().contains(&format!("(got {dim})")), "{err}");
    }
    let dense = DenseIndex::with_dim(2, Precision::Int8).unwrap();
    dense
        .upsert_vectors(
            vec![rag::Passage::whole(Document::new("a", "x"))],
            vec![vec![f32::MAX, -f32::MAX]],
        )
        .unwrap();
    assert_eq!(
        dense
            .search_vector(&[1.0, 0.0], usize::MAX, None)
            .unwrap()
            .len(),
        1
    );
    assert!(dense.search_vector(&[f32::NAN, 0.0], 1, None).is_err());

    for (max_len, overlap) in [(0, 0), (5, 5), (5, usize::MAX)] {
        assert!(
            Chunker::new(max_len, overlap).is_err(),
            "{max_len} {overlap}"
        );
    }
    let huge = Chunker::new(usize::MAX, usize::MAX - 1).unwrap();
    assert_eq!(huge.chunks("one. two. three.").len(), 1);

    let list = RankedList {
        retriever: "bm25".into(),
        weight: 1.0,
        candidates: Vec::new(),
    };
    for k in [f64::NAN, f64::INFINITY, -1.0] {
        assert!(rag::fuse(std::slice::from_ref(&list), Fusion::Rrf { k }, 10).is_err());
    }
    for weight in [f64::NAN, f64::INFINITY, -0.5] {
        let l = RankedList {
            weight,
            ..list.clone()
        };
        assert!(rag::fuse(&[l], Fusion::default(), usize::MAX).is_err());
    }
    assert!(rag::fuse(&[list], Fusion::Rrf { k: f64::MAX }, usize::MAX).is_ok());

    for name in [
        "ndcg@0",
        "ndcg@99999999999999999999999",
        "recall@-1",
        "p@1e9",
    ] {
        assert!(Metric::parse(name).is_err(), "{name}");
    }
}
