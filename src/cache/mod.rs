//! A concurrent, bounded cache with TTLs, statistics and single-flight loading.
//!
//! Built on `quick_cache` (sharded, S3-FIFO-style eviction). keel adds what a service needs on
//! top of it:
//! - a bound by entry count and, optionally, by total weight (bytes). Both are enforced at once by
//!   giving every entry a weight of at least `max_weight / max_entries`, so the cache never holds
//!   more than `max_entries` entries nor more than `max_weight` weight;
//! - a TTL per cache and per entry, checked on every read against an injectable [`Clock`];
//!   an expired entry is never returned and is dropped when it is met (or by
//!   [`Cache::purge_expired`]);
//! - hit / miss / insert / eviction / expiration counters;
//! - [`Cache::get_or_try_insert_with`]: when many threads miss the same key at once, one computes
//!   and the others wait for its value. The computation may use the cache freely (other keys);
//!   asking for the very key it is computing fails with [`CacheError::RecursiveLoad`] instead of
//!   deadlocking. The single-flight table (`flight.rs`) is the one for every front door: it
//!   compares keys outside its lock, lets a binding release its interpreter lock while waiting
//!   ([`Cache::get_or_try_insert_shared`]), and is fork-safe (a child never waits for a load
//!   started by its parent's threads).
//!
//! Invariant: `len() <= max_entries` and `weight() <= max_weight` at every moment.

mod flight;
#[cfg(feature = "redis")]
mod shared;
mod stats;

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use flight::{Flights, Landed, Landing, Role};
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

pub use flight::Blocking;
pub use quick_cache::Equivalent;
#[cfg(feature = "redis")]
pub use shared::{BytesL1, SharedCache};
pub use stats::CacheStats;
use stats::{Counter, Counters};

use crate::clock::{coarse_now, Clock};
use crate::error::{CacheError, Error, Result};

/// Largest TTL accepted (100 years): beyond it a deadline could overflow.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const NEVER: u64 = u64::MAX;
/// Upper bound on the number of slots preallocated for a very large cache.
const MAX_PREALLOCATED_ITEMS: u64 = 1 << 20;

/// How a [`Cache`] is bounded and when its entries expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries the cache holds at once (at least 1).
    pub max_entries: u64,
    /// Optional bound on the sum of entry weights (e.g. bytes).
    pub max_weight: Option<u64>,
    /// Default time to live of an entry; `None` keeps entries until evicted.
    pub ttl: Option<Duration>,
}

impl CacheConfig {
    /// A cache of at most `max_entries` entries, no weight bound, no TTL.
    pub fn new(max_entries: u64) -> Self {
        Self {
            max_entries,
            max_weight: None,
            ttl: None,
        }
    }

    /// Also bounds the total weight.
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.max_weight = Some(max_weight);
        self
    }

    /// Sets the default TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_entries == 0 {
            return Err(CacheError::ZeroCapacity {
                field: "max_entries",
            }
            .into());
        }
        if self.max_weight == Some(0) {
            return Err(CacheError::ZeroCapacity {
                field: "max_weight",
            }
            .into());
        }
        if let Some(ttl) = self.ttl {
            check_ttl(ttl)?;
        }
        Ok(())
    }
}

/// Checks a TTL: more than zero and at most [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<Duration> {
    if ttl.is_zero() {
        return Err(CacheError::InvalidTtl("a TTL must be greater than zero".into()).into());
    }
    if ttl > MAX_TTL {
        return Err(CacheError::InvalidTtl("a TTL may be at most 100 years".into()).into());
    }
    Ok(ttl)
}

/// Converts a TTL in (fractional) seconds, as the bindings receive it, checking its range.
pub fn ttl_from_secs_f64(secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(CacheError::InvalidTtl(format!(
            "a TTL must be a positive, finite number of seconds (got {secs})"
        ))
        .into());
    }
    if secs > MAX_TTL.as_secs_f64() {
        return Err(CacheError::InvalidTtl("a TTL may be at most 100 years".into()).into());
    }
    check_ttl(Duration::from_secs_f64(secs))
}

/// Per-entry settings for [`Cache::insert_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryOptions {
    /// TTL of this entry; `None` uses the cache's default.
    pub ttl: Option<Duration>,
    /// Weight of this entry (only meaningful with `max_weight`); 0 counts as 1.
    pub weight: u64,
}

#[derive(Clone)]
struct Slot<V> {
    value: V,
    /// Deadline in nanoseconds of the cache's clock, or `NEVER`.
    expires_at: u64,
    /// Effective weight, fixed at insertion.
    weight: u64,
}

#[derive(Clone, Copy)]
struct SlotWeighter;

impl<K, V> Weighter<K, Slot<V>> for SlotWeighter {
    #[inline]
    fn weight(&self, _key: &K, slot: &Slot<V>) -> u64 {
        slot.weight
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<Counters>);

impl<K, V> Lifecycle<K, Slot<V>> for CountEvictions {
    type RequestState = ();

    #[inline]
    fn on_evict(&self, _state: &mut (), _key: K, _val: Slot<V>) {
        self.0.bump(Counter::Eviction);
    }
}

type Inner<K, V> = quick_cache::sync::Cache<
    K,
    Slot<V>,
    SlotWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// A concurrent bounded TTL cache. `Send + Sync`: share it with `Arc` or by reference.
pub struct Cache<K, V> {
    inner: Inner<K, V>,
    counters: Arc<Counters>,
    /// `None`: the coarse monotonic clock, read inline on the hot path.
    clock: Option<Arc<dyn Clock>>,
    /// The default TTL in nanoseconds, converted once.
    default_ttl_nanos: Option<u64>,
    /// Weight floor per entry that makes the weight bound imply the entry bound.
    unit_weight: u64,
    /// Largest effective weight one entry may have (one shard's capacity).
    max_entry_weight: u64,
    config: CacheConfig,
    /// Keys being computed by the `get_or_try_insert_*` methods (single-flight).
    flights: Flights<K, V>,
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// A cache on the coarse monotonic clock ([`crate::clock::CoarseClock`]: TTLs are honoured
    /// to within a few milliseconds).
    pub fn new(config: CacheConfig) -> Result<Self> {
        Self::build(config, None)
    }

    /// A cache on the given clock (use [`crate::clock::ManualClock`] in tests).
    pub fn with_clock(config: CacheConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::build(config, Some(clock))
    }

    fn build(config: CacheConfig, clock: Option<Arc<dyn Clock>>) -> Result<Self> {
        config.validate()?;
        let _span = tracing::debug_span!(
            "cache.new",
            keel.cache.max_entries = config.max_entries,
            keel.cache.max_weight = config.max_weight
        )
        .entered();
        let capacity = config.max_weight.unwrap_or(config.max_entries);
        let unit_weight = match config.max_weight {
            Some(w) => w.div_ceil(config.max_entries),
            None => 1,
        };
        let estimated_items = config.max_entries.min(MAX_PREALLOCATED_ITEMS);
        let shards = shard_count(estimated_items);
        let shard_capacity = capacity / shards;
        if shard_capacity == 0 {
            return Err(Error::InvalidArgument(
                "max_weight is too small for this cache's shard count".into(),
            ));
        }
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(estimated_items as usize)
            .weight_capacity(shard_capacity * shards)
            .build()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let counters = Arc::new(Counters::new());
        let inner = Inner::with_options(
            options,
            SlotWeighter,
            quick_cache::DefaultHashBuilder::default(),
            CountEvictions(counters.clone()),
        );
        let max_entry_weight = capacity / inner.num_shards() as u64;
        Ok(Self {
            inner,
            counters,
            clock,
            default_ttl_nanos: config.ttl.map(duration_nanos),
            unit_weight,
            max_entry_weight,
            config,
            flights: Flights::new(),
        })
    }

    /// The configuration this cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        let now = match &self.clock {
            None => coarse_now(),
            Some(c) => c.now(),
        };
        u64::try_from(now.as_nanos()).unwrap_or(NEVER - 1)
    }

    #[inline]
    fn is_expired(&self, slot: &Slot<V>) -> bool {
        slot.expires_at != NEVER && self.now_nanos() >= slot.expires_at
    }

    #[inline(always)]
    fn make_slot(&self, value: V, opts: EntryOptions) -> Result<Slot<V>> {
        let ttl_nanos = match opts.ttl {
            Some(t) => Some(duration_nanos(check_ttl(t)?)),
            None => self.default_ttl_nanos,
        };
        let expires_at = match ttl_nanos {
            Some(t) => self.now_nanos().saturating_add(t).min(NEVER - 1),
            None => NEVER,
        };
        let weight = if self.config.max_weight.is_some() {
            opts.weight.max(self.unit_weight)
        } else {
            1
        };
        if weight > self.max_entry_weight {
            return Err(self.too_large(weight));
        }
        Ok(Slot {
            value,
            expires_at,
            weight,
        })
    }

    #[cold]
    fn too_large(&self, weight: u64) -> Error {
        CacheError::EntryTooLarge {
            weight,
            max: self.max_entry_weight,
        }
        .into()
    }

    /// Drops `key` if its entry has expired; counts it.
    fn expire<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if self.inner.remove_if(key, |s| self.is_expired(s)).is_some() {
            self.counters.bump(Counter::Expiration);
        }
    }

    /// The live value for `key`, if any. Counts a hit or a miss.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.lookup(key, true)
    }

    /// The live value for `key`, counting a hit or a miss if `count` (an expired entry met is
    /// dropped and counted either way). The one caller of quick_cache's `get`, so that it stays
    /// inlined on the hot path.
    #[inline(always)]
    fn lookup<Q>(&self, key: &Q, count: bool) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        match self.inner.get(key) {
            Some(slot) if !self.is_expired(&slot) => {
                if count {
                    self.counters.bump(Counter::Hit);
                }
                Some(slot.value)
            }
            Some(_) => {
                self.expire(key);
                if count {
                    self.counters.bump(Counter::Miss);
                }
                None
            }
            None => {
                if count {
                    self.counters.bump(Counter::Miss);
                }
                None
            }
        }
    }

    /// Whether a live entry exists for `key`; counts nothing and does not refresh the entry.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        match self.inner.peek(key) {
            Some(slot) => !self.is_expired(&slot),
            None => false,
        }
    }

    /// Stores `value` under `key` with the cache's default TTL and weight 1.
    #[inline]
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        self.insert_with(key, value, EntryOptions::default())
    }

    /// Stores `value` under `key` with its own TTL and/or weight.
    #[inline(always)]
    pub fn insert_with(&self, key: K, value: V, opts: EntryOptions) -> Result<()> {
        let slot = self.make_slot(value, opts)?;
        self.inner.insert(key, slot);
        self.counters.bump(Counter::Insert);
        Ok(())
    }

    /// Removes `key`, returning its value if it was live.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let (_, slot) = self.inner.remove(key)?;
        if self.is_expired(&slot) {
            self.counters.bump(Counter::Expiration);
            None
        } else {
            Some(slot.value)
        }
    }

    /// Removes every entry. Counters are kept (see [`Cache::reset_stats`]).
    pub fn clear(&self) {
        let _span = tracing::debug_span!("cache.clear").entered();
        self.inner.clear();
    }

    /// Drops every expired entry now; returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let _span = tracing::debug_span!("cache.purge_expired").entered();
        let now = self.now_nanos();
        let before = self.inner.len();
        self.inner
            .retain(|_, s| s.expires_at == NEVER || now < s.expires_at);
        let dropped = before.saturating_sub(self.inner.len());
        for _ in 0..dropped {
            self.counters.bump(Counter::Expiration);
        }
        dropped
    }

    /// A snapshot of the live (unexpired) entries, in no particular order. Counts nothing and
    /// refreshes nothing. Entries inserted or removed while it is taken may or may not appear;
    /// each entry appears at most once.
    pub fn entries(&self) -> Vec<(K, V)> {
        let now = self.now_nanos();
        // quick_cache's iterator may yield an entry that moves during the walk twice.
        let live: HashMap<K, V> = self
            .inner
            .iter()
            .filter(|(_, s)| s.expires_at == NEVER || now < s.expires_at)
            .map(|(k, s)| (k, s.value))
            .collect();
        live.into_iter().collect()
    }

    /// Entries held, including expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Sum of the effective weights of the entries held.
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.counters
            .snapshot(self.inner.len() as u64, self.inner.weight())
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.counters.reset();
    }

    /// Returns the value for `key`, computing it with `f` on a miss. Concurrent callers that miss
    /// the same key wait for the first one's result instead of computing it again. If `f` fails,
    /// nothing is stored, the error is returned to this caller, and a waiting caller takes over.
    pub fn get_or_try_insert_with<E, F>(&self, key: &K, f: F) -> Result<V, E>
    where
        F: FnOnce() -> Result<V, E>,
        E: From<Error>,
    {
        self.get_or_try_insert_with_options(key, || f().map(|v| (v, EntryOptions::default())))
    }

    /// As [`Cache::get_or_try_insert_with`], with `f` also choosing the entry's TTL and weight.
    pub fn get_or_try_insert_with_options<E, F>(&self, key: &K, f: F) -> Result<V, E>
    where
        F: FnOnce() -> Result<(V, EntryOptions), E>,
        E: From<Error>,
    {
        self.load(key, K::clone, f, |b: Blocking<'_>| b.wait(), None)
    }

    /// As [`Cache::get_or_try_insert_with_options`], for front doors with an interpreter lock:
    /// - `wait` runs each blocking wait for another thread's load: it must call
    ///   [`Blocking::wait`], and may release a lock around it (Python: `py.allow_threads`). The
    ///   cache holds none of its own locks while `wait` runs, nor while it compares or clones
    ///   keys for single-flight, so that code may take an interpreter lock;
    /// - if `f` fails, every caller that was waiting for it gets a clone of the error (instead of
    ///   computing the value again).
    ///
    /// `key` may be any borrowed form of the key (as for [`Cache::get`]); `owned` makes the key
    /// to store from it, only on a miss.
    pub fn get_or_try_insert_shared<Q, E, F, W>(
        &self,
        key: &Q,
        owned: impl Fn(&Q) -> K,
        f: F,
        wait: W,
    ) -> Result<V, E>
    where
        Q: Hash + Equivalent<K> + ?Sized,
        F: FnOnce() -> Result<(V, EntryOptions), E>,
        E: From<Error> + Clone + Send + Sync + 'static,
        W: FnMut(Blocking<'_>),
    {
        let sharing = Sharing {
            share: |e: &E| Arc::new(e.clone()) as Arc<dyn Any + Send + Sync>,
            unshare: |e: &(dyn Any + Send + Sync)| e.downcast_ref::<E>().cloned(),
        };
        self.load(key, owned, f, wait, Some(sharing))
    }

    /// The one single-flight load behind every `get_or_try_insert_*` (see [`flight`]).
    fn load<Q, E, F, W>(
        &self,
        key: &Q,
        owned: impl Fn(&Q) -> K,
        f: F,
        mut wait: W,
        sharing: Option<Sharing<E>>,
    ) -> Result<V, E>
    where
        Q: Hash + Equivalent<K> + ?Sized,
        F: FnOnce() -> Result<(V, EntryOptions), E>,
        E: From<Error>,
        W: FnMut(Blocking<'_>),
    {
        let mut f = Some(f);
        loop {
            if let Some(v) = self.live(key) {
                self.counters.bump(Counter::Hit);
                return Ok(v);
            }
            let lead = match self.flights.join_or_lead(key, &owned).map_err(E::from)? {
                Role::Wait(flight) => match flight.wait(&mut wait) {
                    Landed::Value(v) => {
                        self.counters.bump(Counter::Hit);
                        return Ok(v);
                    }
                    Landed::Failed(e) => match sharing.and_then(|s| (s.unshare)(&*e)) {
                        Some(e) => return Err(e),
                        None => continue,
                    },
                    Landed::Retry => continue,
                },
                Role::Lead(lead) => lead,
            };
            // A flight may have landed between the lookup above and the lead.
            if let Some(v) = self.live(key) {
                self.counters.bump(Counter::Hit);
                lead.land(Landing::Value(v.clone()));
                return Ok(v);
            }
            self.counters.bump(Counter::Miss);
            let _span = tracing::debug_span!("cache.load").entered();
            let Some(f) = f.take() else {
                // Unreachable: this caller leads at most once.
                return Err(Error::InvalidArgument("loader already used".into()).into());
            };
            // Through `insert_with`, the one caller of quick_cache's insert (which then stays
            // inlined on the `insert` hot path).
            let loaded = f().and_then(|(value, opts)| {
                self.insert_with(owned(key), value.clone(), opts)
                    .map_err(E::from)?;
                Ok(value)
            });
            return match loaded {
                Ok(value) => {
                    lead.land(Landing::Value(value.clone()));
                    Ok(value)
                }
                Err(e) => {
                    lead.land(Landing::Failed(sharing.map(|s| (s.share)(&e))));
                    Err(e)
                }
            };
        }
    }

    /// The live value for `key`, counting nothing (an expired entry met is dropped and counted).
    fn live<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.lookup(key, false)
    }
}

/// How a failed load's error reaches the callers that waited for it.
struct Sharing<E> {
    share: fn(&E) -> Arc<dyn Any + Send + Sync>,
    unshare: fn(&(dyn Any + Send + Sync)) -> Option<E>,
}

impl<E> Clone for Sharing<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Sharing<E> {}

/// A duration in nanoseconds, saturated at `NEVER`.
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// Shard count as quick_cache derives it: 4 per core, rounded to a power of two, halved until
/// each shard holds at least 32 items.
fn shard_count(estimated_items: u64) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut shards = (cores * 4).next_power_of_two();
    while shards > 1 && estimated_items.div_ceil(shards) < 32 {
        shards /= 2;
    }
    shards
}

#[cfg(test)]
mod tests;
