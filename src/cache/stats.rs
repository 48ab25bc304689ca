//! Cache statistics kept in striped counters: each thread bumps its own cache line, so counting
//! hits does not make concurrent readers contend on one atomic.

use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 16;

#[repr(align(64))]
#[derive(Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// Live counters owned by one cache.
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

/// A point-in-time copy of a cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing or only an expired entry.
    pub misses: u64,
    /// Entries stored (new or replacing).
    pub inserts: u64,
    /// Entries pushed out to respect the capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL had passed.
    pub expirations: u64,
    /// Live entries at the time of the snapshot (expired but not yet dropped ones included).
    pub entries: u64,
    /// Sum of the weights of the entries.
    pub weight: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Picks a stripe from the address of the current stack frame: threads run on different stacks
/// (megabytes apart), so concurrent threads mostly land on different stripes, without paying for
/// a thread-local lookup (a call through `__tls_get_addr` in a shared library).
#[inline(always)]
fn stripe_index() -> usize {
    let marker = 0u8;
    let addr = std::hint::black_box(&marker) as *const u8 as u64;
    ((addr >> 16).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % STRIPES
}

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Hit,
    Miss,
    Insert,
    Eviction,
    Expiration,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn bump(&self, counter: Counter) {
        let s = &self.stripes[stripe_index()];
        let c = match counter {
            Counter::Hit => &s.hits,
            Counter::Miss => &s.misses,
            Counter::Insert => &s.inserts,
            Counter::Eviction => &s.evictions,
            Counter::Expiration => &s.expirations,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, entries: u64, weight: u64) -> CacheStats {
        let mut out = CacheStats {
            entries,
            weight,
            ..CacheStats::default()
        };
        for s in self.stripes.iter() {
            out.hits += s.hits.load(Ordering::Relaxed);
            out.misses += s.misses.load(Ordering::Relaxed);
            out.inserts += s.inserts.load(Ordering::Relaxed);
            out.evictions += s.evictions.load(Ordering::Relaxed);
            out.expirations += s.expirations.load(Ordering::Relaxed);
        }
        out
    }

    pub(crate) fn reset(&self) {
        for s in self.stripes.iter() {
            for c in [&s.hits, &s.misses, &s.inserts, &s.evictions, &s.expirations] {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}
