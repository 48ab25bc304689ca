//! The state-store seam of rate limiting (after governor's `StateStore`).
//!
//! The algorithms (`algo.rs`) are pure transitions on a key's [`State`]; a [`StateStore`] only
//! keeps those states: it reads a key's state (fresh when absent), lets the algorithm compute
//! the decision and the new state, and stores it, atomically for that key
//! ([`StateStore::measure_and_replace`]). The in-process sharded map ([`LocalStore`]) and the
//! host-shared mapped file (`shared::SharedTable`) are two stores; a Redis store would run the
//! same transition server-side (a script) and differ in nothing else. Every store bounds its
//! keys and drops idle ones first.
//!
//! The trait is generic (not object-safe) on purpose: a decision takes ~100-200 ns, and the
//! closure and the store are monomorphised into it; [`Stores`] picks the store with one branch.

use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::HashTable;

use super::algo::State;
use super::policy::Policy;
use crate::error::Result;

/// Where the per-key states of a limiter live.
pub(crate) trait StateStore: Send + Sync {
    /// Runs `f` on `key`'s state (fresh when the key is unknown) and keeps what it leaves,
    /// atomically for that key: concurrent calls for one key are linearisable. `f` returns its
    /// result and whether the request was denied (a denied key is marked limited, and evicted
    /// last, until it is idle). Returns `f`'s result and how many still-active keys were dropped
    /// to make room. `now` is on the store's timeline: for the host-shared store, the host's
    /// monotonic clock (its stripe locks are leases stamped with it).
    fn measure_and_replace<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<(T, u64)>;

    /// Keys currently stored.
    fn len(&self) -> u64;

    /// Forgets every key's state.
    fn clear(&self) -> Result<()>;
}

/// Shards of the local store: enough that concurrent keys rarely share a mutex.
const SHARDS: usize = 64;

/// A key, its state, and whether it was denied since it was last idle ("limited": such keys
/// are evicted last, so a flood of fresh keys cannot reset an exhausted bucket).
type Entry = (Box<str>, State, bool);

struct Shard {
    table: HashTable<Entry>,
}

/// The in-process store: a sharded hash map behind one mutex per shard.
pub(crate) struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    shard_capacity: usize,
}

impl LocalStore {
    /// A store of at most about `max_keys` keys (at least 1).
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: HashTable::new(),
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Drops idle keys; if that is not enough, the tenth of active keys that are first in
    /// eviction order: never-limited keys before limited ones, each closest to idle first.
    /// Returns how many active keys were dropped.
    fn make_room(&self, shard: &mut Shard, policy: &Policy, now: u64) -> u64 {
        shard.table.retain(|(_, s, _)| s.idle_at(policy) > now);
        if shard.table.len() < self.shard_capacity {
            return 0;
        }
        let rank = |s: &State, limited: bool| (limited, s.idle_at(policy));
        let mut ranks: Vec<(bool, u64)> = shard.table.iter().map(|(_, s, l)| rank(s, *l)).collect();
        let cut = (ranks.len() / 10).max(1);
        let (_, threshold, _) = ranks.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut dropped = 0u64;
        shard.table.retain(|(_, s, l)| {
            let keep = rank(s, *l) > threshold || dropped >= cut as u64;
            if !keep {
                dropped += 1;
            }
            keep
        });
        tracing::warn!(
            keel.ratelimit.policy = policy.name(),
            keel.ratelimit.evicted = dropped,
            "rate limiter key bound reached; dropped active keys"
        );
        dropped
    }
}

impl StateStore for LocalStore {
    fn measure_and_replace<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<(T, u64)> {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash >> 58) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, state, limited)) = shard.table.find_mut(hash, |(k, _, _)| &**k == key) {
            if state.idle_at(policy) <= now {
                *limited = false;
            }
            let (out, denied) = f(state);
            *limited |= denied;
            return Ok((out, 0));
        }
        let evicted = if shard.table.len() >= self.shard_capacity {
            self.make_room(&mut shard, policy, now)
        } else {
            0
        };
        let mut state = State::fresh(policy.algorithm());
        let (out, denied) = f(&mut state);
        let hasher = &self.hasher;
        shard
            .table
            .insert_unique(hash, (key.into(), state, denied), |(k, _, _)| {
                hasher.hash_one(&**k)
            });
        Ok((out, evicted))
    }

    fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).table.len() as u64)
            .sum()
    }

    fn clear(&self) -> Result<()> {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|p| p.into_inner()).table.clear();
        }
        Ok(())
    }
}

#[cfg(unix)]
impl StateStore for super::shared::SharedTable {
    fn measure_and_replace<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<(T, u64)> {
        let (out, evicted) = self.with_state(key, policy, now, f)?;
        Ok((out, u64::from(evicted)))
    }

    fn len(&self) -> u64 {
        super::shared::SharedTable::len(self)
    }

    fn clear(&self) -> Result<()> {
        super::shared::SharedTable::clear(self)
    }
}

/// The stores a [`super::RateLimiter`] can use, chosen when it is built: static dispatch, one
/// branch per decision. A new store (Redis) is one more variant behind its Cargo feature.
pub(crate) enum Stores {
    /// In this process.
    Local(LocalStore),
    /// Shared by the processes of this host through a mapped file.
    #[cfg(unix)]
    Shared(super::shared::SharedTable),
    /// In Redis, decided by a server-side script ([`super::RateLimiter`] calls it directly: the
    /// transition runs in Redis, not in `measure_and_replace`).
    #[cfg(feature = "redis")]
    Redis(super::redis::RedisStore),
}

impl StateStore for Stores {
    #[inline]
    fn measure_and_replace<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<(T, u64)> {
        match self {
            Stores::Local(s) => s.measure_and_replace(key, policy, now, f),
            #[cfg(unix)]
            Stores::Shared(s) => s.measure_and_replace(key, policy, now, f),
            #[cfg(feature = "redis")]
            Stores::Redis(_) => Err(crate::Error::InvalidArgument(
                "a Redis-backed limiter decides in Redis, not through measure_and_replace".into(),
            )),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Stores::Local(s) => s.len(),
            #[cfg(unix)]
            Stores::Shared(s) => StateStore::len(s),
            #[cfg(feature = "redis")]
            Stores::Redis(s) => s.count(),
        }
    }

    fn clear(&self) -> Result<()> {
        match self {
            Stores::Local(s) => s.clear(),
            #[cfg(unix)]
            Stores::Shared(s) => StateStore::clear(s),
            #[cfg(feature = "redis")]
            Stores::Redis(s) => s.clear(),
        }
    }
}
