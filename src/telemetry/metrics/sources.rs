//! Statistics the primitives keep anyway, read at scrape time: caches (hits, misses, evictions,
//! expirations, inserts, entries, weight) and rate limiters (allowed, denied).
//!
//! The registry holds weak references: a dropped cache or limiter leaves the exposition at the
//! next scrape. Sources that share a name are summed into one series, so the output never holds
//! a duplicate series.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::cache::{Cache, CacheStats};
use crate::error::{Error, Result};

/// Anything whose [`CacheStats`] can be read at scrape time (every [`Cache`]).
pub trait CacheSource: Send + Sync {
    /// The current statistics.
    fn cache_stats(&self) -> CacheStats;
}

impl<K, V> CacheSource for Cache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn cache_stats(&self) -> CacheStats {
        self.stats()
    }
}

type Caches = Vec<(Arc<str>, Weak<dyn CacheSource>)>;
static CACHES: Mutex<Caches> = Mutex::new(Vec::new());

/// Longest cache name accepted as a label value.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(name: &str) -> Result<()> {
    if !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "cache name {name:?} for metrics: use 1-{MAX_NAME_LEN} bytes without control characters"
        )))
    }
}

/// Exports `cache`'s statistics as `keel_cache_*{cache="<name>"}` for as long as it lives.
/// Caches registered under one name are summed. The name is a label value: give a fixed name
/// per cache of the application (`"embeddings"`, `"llm"`), never something derived from a
/// request.
pub fn register_cache<C: CacheSource + 'static>(name: &str, cache: &Arc<C>) -> Result<()> {
    check_name(name)?;
    let weak: Weak<dyn CacheSource> = Arc::downgrade(cache) as Weak<dyn CacheSource>;
    let mut caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    caches.retain(|(_, w)| w.strong_count() > 0);
    caches.push((Arc::from(name), weak));
    Ok(())
}

/// A rate limiter's decision counters, shared with the registry.
#[derive(Debug, Default)]
pub(crate) struct LimiterCounters {
    /// Requests allowed when decided (monotonic: a later refund does not take one back).
    pub(crate) allowed: AtomicU64,
    pub(crate) denied: AtomicU64,
    /// Allowed requests refunded because another limiter of a `check_all` denied the request.
    pub(crate) refunded: AtomicU64,
}

type Limiters = Vec<(Arc<str>, Weak<LimiterCounters>)>;
static LIMITERS: Mutex<Limiters> = Mutex::new(Vec::new());

/// Exports a limiter's counters as `keel_ratelimit_decisions_total{limiter="<policy name>"}`.
pub(crate) fn register_limiter(name: &Arc<str>, counters: &Arc<LimiterCounters>) {
    let mut limiters = LIMITERS.lock().unwrap_or_else(|e| e.into_inner());
    limiters.retain(|(_, w)| w.strong_count() > 0);
    limiters.push((Arc::clone(name), Arc::downgrade(counters)));
}

#[derive(Debug)]
pub(super) struct SourcesCollector;

/// One metric family of constant values read at scrape time: a counter or a gauge per row.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    (name, help, kind): (&str, &str, MetricType),
    rows: &[(Vec<(&str, &str)>, u64)],
    metric: impl Fn(u64) -> M,
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        metric(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    family(
        enc,
        (name, help, MetricType::Counter),
        rows,
        ConstCounter::new,
    )
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    family(enc, (name, help, MetricType::Gauge), rows, ConstGauge::new)
}

impl Collector for SourcesCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut caches: BTreeMap<Arc<str>, CacheStats> = BTreeMap::new();
        let live: Vec<(Arc<str>, Arc<dyn CacheSource>)> = {
            let list = CACHES.lock().unwrap_or_else(|e| e.into_inner());
            list.iter()
                .filter_map(|(n, w)| w.upgrade().map(|c| (Arc::clone(n), c)))
                .collect()
        };
        for (name, cache) in live {
            let s = cache.cache_stats();
            let t = caches.entry(name).or_default();
            t.hits += s.hits;
            t.misses += s.misses;
            t.inserts += s.inserts;
            t.evictions += s.evictions;
            t.expirations += s.expirations;
            t.entries += s.entries;
            t.weight += s.weight;
        }
        let rows = |f: fn(&CacheStats) -> u64| -> Vec<(Vec<(&str, &str)>, u64)> {
            caches
                .iter()
                .map(|(n, s)| (vec![("cache", &**n)], f(s)))
                .collect()
        };
        counter(
            &mut enc,
            "keel_cache_hits",
            "Cache lookups that found a live entry",
            &rows(|s| s.hits),
        )?;
        counter(
            &mut enc,
            "keel_cache_misses",
            "Cache lookups that found nothing or only an expired entry",
            &rows(|s| s.misses),
        )?;
        counter(
            &mut enc,
            "keel_cache_inserts",
            "Cache entries stored",
            &rows(|s| s.inserts),
        )?;
        counter(
            &mut enc,
            "keel_cache_evictions",
            "Cache entries pushed out by the capacity bound",
            &rows(|s| s.evictions),
        )?;
        counter(
            &mut enc,
            "keel_cache_expirations",
            "Cache entries dropped because their TTL had passed",
            &rows(|s| s.expirations),
        )?;
        gauge(
            &mut enc,
            "keel_cache_entries",
            "Entries held by the cache",
            &rows(|s| s.entries),
        )?;
        gauge(
            &mut enc,
            "keel_cache_weight",
            "Sum of the weights of the cache's entries (bytes where the weight is a size)",
            &rows(|s| s.weight),
        )?;

        let mut limiters: BTreeMap<Arc<str>, (u64, u64, u64)> = BTreeMap::new();
        {
            let list = LIMITERS.lock().unwrap_or_else(|e| e.into_inner());
            for (name, w) in list.iter() {
                if let Some(c) = w.upgrade() {
                    let t = limiters.entry(Arc::clone(name)).or_default();
                    t.0 += c.allowed.load(Ordering::Relaxed);
                    t.1 += c.denied.load(Ordering::Relaxed);
                    t.2 += c.refunded.load(Ordering::Relaxed);
                }
            }
        }
        let mut rows = Vec::with_capacity(limiters.len() * 2);
        let mut refunds = Vec::with_capacity(limiters.len());
        for (name, (allowed, denied, refunded)) in &limiters {
            rows.push((
                vec![("limiter", &**name), ("decision", "allowed")],
                *allowed,
            ));
            rows.push((vec![("limiter", &**name), ("decision", "denied")], *denied));
            refunds.push((vec![("limiter", &**name)], *refunded));
        }
        counter(
            &mut enc,
            "keel_ratelimit_decisions",
            "Rate-limit decisions by limiter (policy name) and decision, as decided",
            &rows,
        )?;
        counter(
            &mut enc,
            "keel_ratelimit_refunds",
            "Allowed decisions taken back because another limiter of the same check_all denied",
            &refunds,
        )
    }
}
