//! keel's BM25 from Rust: indexing docs/s and queries/s with 1 and 2 threads, on Cranfield
//! (../shared/data/cranfield, 1400 docs, 225 queries) and on the descriptions of every Debian
//! package apt knows (`apt-cache dumpavail`, ~60k docs, 2000 queries drawn from package short
//! descriptions with a fixed seed, as bench/python/bench_bm25.py does). The Python anchors are
//! measured by that script; this one shows what the engine does without Python around it.
//! Prints medians over ROUNDS rounds. Run: `cargo bench -p keel-engine --bench bm25`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use keel::rag::{load_beir, Bm25Config, Bm25Index, Document};

const ROUNDS: usize = 5;
const K: usize = 10;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn debian() -> Vec<Document> {
    let out = std::process::Command::new("apt-cache")
        .arg("dumpavail")
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut pkg, mut desc, mut in_desc) = (None, Vec::new(), false);
        for line in stanza.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                pkg = Some(p.trim().to_owned());
            } else if let Some(d) = line.strip_prefix("Description: ") {
                desc = vec![d.trim().to_owned()];
                in_desc = true;
            } else if in_desc && line.starts_with(' ') {
                desc.push(if line.trim() == "." {
                    String::new()
                } else {
                    line.trim().to_owned()
                });
            } else {
                in_desc = false;
            }
        }
        if let (Some(pkg), false) = (pkg, desc.is_empty()) {
            if seen.insert(pkg.clone()) {
                docs.push(Document {
                    id: pkg,
                    title: desc[0].clone(),
                    text: desc[1..].join("\n"),
                    ..Document::default()
                });
            }
        }
    }
    docs
}

/// A small deterministic generator (xorshift), so no extra dependency is needed for sampling.
fn sample(docs: &[Document], n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            docs[(x % docs.len() as u64) as usize].title.clone()
        })
        .collect()
}

fn run(name: &str, docs: &[Document], queries: &[String]) {
    let mut index_times = Vec::new();
    let mut index2_times = Vec::new();
    let mut index = None;
    for round in 0..ROUNDS {
        // 1- and 2-thread runs alternate which goes first, so drifting load hits both alike.
        for side in [round % 2, 1 - round % 2] {
            let batch = docs.to_vec();
            let t = Instant::now();
            let idx = Bm25Index::new(Bm25Config::default()).unwrap();
            if side == 0 {
                idx.add_many(batch).unwrap();
                index_times.push(t.elapsed().as_secs_f64());
                index = Some(idx);
            } else {
                idx.add_many_threads(batch, 2).unwrap();
                index2_times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let index = index.unwrap();
    let mut one = Vec::new();
    let mut two = Vec::new();
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for q in queries {
                    black_box(index.search(q, K, None));
                }
                one.push(t.elapsed().as_secs_f64());
            } else {
                black_box(index.search_many(queries, K, None, 2).unwrap());
                two.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let n = queries.len() as f64;
    println!(
        "{name:<10} {:>7} docs  index docs/s: 1 thread {:>8.0}  2 threads {:>8.0}  queries/s: 1 thread {:>7.0}  2 threads {:>7.0}",
        docs.len(),
        docs.len() as f64 / median(index_times),
        docs.len() as f64 / median(index2_times),
        n / median(one),
        n / median(two),
    );
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cranfield");
    let ds = load_beir(&dir, "test").expect("Cranfield at ../shared/data/cranfield");
    let queries: Vec<String> = ds.queries.iter().map(|(_, q)| q.clone()).collect();
    run("cranfield", &ds.corpus, &queries);
    let docs = debian();
    if docs.is_empty() {
        println!(
            "debian: `apt-cache dumpavail` is empty; run `apt-get update` (bench_bm25.py does)"
        );
        return;
    }
    let queries = sample(&docs, 2000);
    run("debian", &docs, &queries);
}
