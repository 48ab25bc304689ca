//! keel's cache from Rust: throughput with 1 and 2 threads, beside `moka::sync::Cache` (the cache
//! a Rust service would otherwise pick) on the same keys in the same run.
//!
//! Workloads over 100k u64 keys (a cache of 200k entries, all keys present): `read` (100% get
//! hits) and `mixed` (90% get, 10% insert). Prints the median Mops/s over 7 rounds and the ratio
//! keel / moka. Run: `cargo bench -p keel-engine --bench cache_throughput`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;
const OPS_PER_THREAD: u64 = 2_000_000;
const ROUNDS: usize = 7;

trait Bench: Send + Sync + 'static {
    fn get(&self, k: u64) -> Option<u64>;
    fn put(&self, k: u64, v: u64);
}

impl Bench for keel::Cache<u64, u64> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        keel::Cache::get(self, &k)
    }
    #[inline]
    fn put(&self, k: u64, v: u64) {
        self.insert(k, v).unwrap();
    }
}

impl Bench for moka::sync::Cache<u64, u64> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        moka::sync::Cache::get(self, &k)
    }
    #[inline]
    fn put(&self, k: u64, v: u64) {
        self.insert(k, v);
    }
}

fn run<C: Bench>(cache: Arc<C>, threads: usize, write_every: u64) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in 0..OPS_PER_THREAD {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % KEYS;
                    if write_every != 0 && i % write_every == 0 {
                        cache.put(k, i);
                    } else {
                        black_box(cache.get(k));
                    }
                }
                start.elapsed()
            })
        })
        .collect();
    let slowest: Duration = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    (threads as u64 * OPS_PER_THREAD) as f64 / slowest.as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    println!("| workload | threads | keel Mops/s | moka Mops/s | keel / moka |");
    println!("|---|---|---|---|---|");
    for (name, write_every) in [
        ("read (100% hit)", 0u64),
        ("mixed (90% get, 10% insert)", 10),
    ] {
        for threads in [1usize, 2] {
            let (mut k, mut m) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let keel: Arc<keel::Cache<u64, u64>> = Arc::new(
                    keel::Cache::new(
                        keel::CacheConfig::new(2 * KEYS).ttl(Duration::from_secs(600)),
                    )
                    .unwrap(),
                );
                let moka = Arc::new(
                    moka::sync::Cache::builder()
                        .max_capacity(2 * KEYS)
                        .time_to_live(Duration::from_secs(600))
                        .build(),
                );
                for i in 0..KEYS {
                    keel.put(i, i);
                    moka.put(i, i);
                }
                moka.run_pending_tasks();
                // Alternate which side runs first, so drifting load hits both alike.
                if k.len() % 2 == 0 {
                    k.push(run(keel, threads, write_every));
                    m.push(run(moka, threads, write_every));
                } else {
                    m.push(run(moka, threads, write_every));
                    k.push(run(keel, threads, write_every));
                }
            }
            let (k, m) = (median(k), median(m));
            println!("| {name} | {threads} | {k:.1} | {m:.1} | {:.2}x |", k / m);
        }
    }
}
