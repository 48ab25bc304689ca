//! Single-flight loading: the table of keys being computed, shared by every front door.
//!
//! Lock discipline (what makes it safe under an interpreter lock such as Python's GIL):
//! - The table's mutex is held only for pointer work: a bucket (flights with the same key hash)
//!   is copied out, or a flight is pushed or removed. No key is compared, cloned or dropped under
//!   it, so no caller code (a Python `__eq__`, `__hash__` or `__del__`) ever runs while it is
//!   held, and a thread holding it never waits for anything else. Keys are compared on the copied
//!   bucket after the mutex is released; a flight pushed meanwhile makes the caller look again.
//! - Waiting for another thread's load happens in a [`Blocking`] handed to a caller-supplied
//!   hook, so a binding can release its interpreter lock for exactly that wait (the Python
//!   binding runs it in `py.allow_threads`). The wait touches only a flag and a condition
//!   variable, never a key or a value.
//! - Every flight records the process that started it. After `fork()` the child has only the
//!   forking thread, so a flight inherited from the parent can never land there: it is ignored
//!   (and pruned) and the child computes the key itself.

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

use crate::error::{CacheError, Error};
use quick_cache::Equivalent;

/// How a load ended, as the callers that waited for it see it.
pub(super) enum Landing<V> {
    /// The value computed (and stored).
    Value(V),
    /// The load failed. `Some`: the error, for callers that share failures; `None`: a waiting
    /// caller computes the value itself.
    Failed(Option<Arc<dyn Any + Send + Sync>>),
}

/// Set once a flight has landed; the only thing a waiting thread touches while it blocks.
struct Signal {
    landed: Mutex<bool>,
    cv: Condvar,
}

/// The blocking part of waiting for another thread's load, handed to a wait hook. It holds no
/// lock of the cache and touches no key or value: a hook may run [`Blocking::wait`] after
/// releasing an interpreter lock (it is `Send`).
pub struct Blocking<'a>(&'a Signal);

impl Blocking<'_> {
    /// Blocks until the load this caller waits for has ended (with a value or an error).
    pub fn wait(self) {
        let mut landed = self.0.landed.lock().unwrap_or_else(|p| p.into_inner());
        while !*landed {
            landed = self.0.cv.wait(landed).unwrap_or_else(|p| p.into_inner());
        }
    }
}

pub(super) struct Flight<K, V> {
    key: K,
    owner: ThreadId,
    pid: u32,
    landing: Mutex<Option<Landing<V>>>,
    signal: Signal,
}

impl<K, V> Flight<K, V> {
    /// Waits (through `hook`) for the flight to land and returns how it landed.
    pub(super) fn wait<W>(&self, hook: &mut W) -> Landed<V>
    where
        W: FnMut(Blocking<'_>),
        V: Clone,
    {
        hook(Blocking(&self.signal));
        // The hook may have returned early: wait for real (a no-op once landed).
        Blocking(&self.signal).wait();
        let landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        match landing.as_ref() {
            Some(Landing::Value(v)) => Landed::Value(v.clone()),
            Some(Landing::Failed(Some(e))) => Landed::Failed(e.clone()),
            Some(Landing::Failed(None)) | None => Landed::Retry,
        }
    }
}

/// What a waiting caller got.
pub(super) enum Landed<V> {
    Value(V),
    Failed(Arc<dyn Any + Send + Sync>),
    /// The load failed without a shared error (or panicked): compute the value itself.
    Retry,
}

type Bucket<K, V> = Vec<Arc<Flight<K, V>>>;

/// Keys being computed, by key hash.
pub(super) struct Flights<K, V> {
    hasher: quick_cache::DefaultHashBuilder,
    table: Mutex<HashMap<u64, Bucket<K, V>>>,
}

pub(super) enum Role<'a, K, V> {
    /// This caller computes the key; land the flight when done (dropping it lands a failure).
    Lead(Lead<'a, K, V>),
    /// Another thread of this process computes the key.
    Wait(Arc<Flight<K, V>>),
}

impl<K: Eq + Hash + Clone, V> Flights<K, V> {
    pub(super) fn new() -> Self {
        Self {
            hasher: quick_cache::DefaultHashBuilder::default(),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Bucket<K, V>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the flight of `key` started by another thread of this process, or starts one.
    /// A thread asking for a key it is itself computing gets `RecursiveLoad`.
    pub(super) fn join_or_lead<Q>(
        &self,
        key: &Q,
        owned: impl Fn(&Q) -> K,
    ) -> Result<Role<'_, K, V>, Error>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let pid = std::process::id();
        let me = std::thread::current().id();
        loop {
            let seen: Bucket<K, V> = self.lock().get(&hash).cloned().unwrap_or_default();
            // Keys are compared without the table's mutex (this may run caller code).
            for f in &seen {
                if f.pid == pid && key.equivalent(&f.key) {
                    if f.owner == me {
                        return Err(CacheError::RecursiveLoad.into());
                    }
                    return Ok(Role::Wait(f.clone()));
                }
            }
            let flight = Arc::new(Flight {
                key: owned(key),
                owner: me,
                pid,
                landing: Mutex::new(None),
                signal: Signal {
                    landed: Mutex::new(false),
                    cv: Condvar::new(),
                },
            });
            let mut stale = Vec::new();
            let pushed = {
                let mut table = self.lock();
                let bucket = table.entry(hash).or_default();
                // Flights of another process (inherited through fork) never land here.
                let mut i = 0;
                while i < bucket.len() {
                    if bucket[i].pid == pid {
                        i += 1;
                    } else {
                        stale.push(bucket.swap_remove(i));
                    }
                }
                let newcomer = bucket
                    .iter()
                    .any(|f| !seen.iter().any(|s| Arc::ptr_eq(s, f)));
                if !newcomer {
                    bucket.push(flight.clone());
                }
                !newcomer
            };
            // `stale`, `seen` and an unused `flight` are dropped here, outside the mutex.
            if pushed {
                return Ok(Role::Lead(Lead {
                    flights: self,
                    hash,
                    flight: Some(flight),
                }));
            }
        }
    }
}

/// The right (and duty) to compute one key. Dropped without landing (the loader panicked), it
/// lands a failure that lets a waiting caller compute the value.
pub(super) struct Lead<'a, K, V> {
    flights: &'a Flights<K, V>,
    hash: u64,
    flight: Option<Arc<Flight<K, V>>>,
}

impl<K, V> Lead<'_, K, V> {
    /// Ends the flight: hands `landing` to the waiting callers and removes the flight.
    pub(super) fn land(mut self, landing: Landing<V>) {
        self.finish(landing);
    }

    fn finish(&mut self, landing: Landing<V>) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        *flight.landing.lock().unwrap_or_else(|p| p.into_inner()) = Some(landing);
        let removed = {
            let mut table = self.flights.table.lock().unwrap_or_else(|p| p.into_inner());
            let removed = table.get_mut(&self.hash).and_then(|bucket| {
                let at = bucket.iter().position(|f| Arc::ptr_eq(f, &flight))?;
                Some(bucket.swap_remove(at))
            });
            if table.get(&self.hash).is_some_and(Vec::is_empty) {
                table.remove(&self.hash);
            }
            removed
        };
        drop(removed);
        *flight
            .signal
            .landed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        flight.signal.cv.notify_all();
    }
}

impl<K, V> Drop for Lead<'_, K, V> {
    fn drop(&mut self) {
        self.finish(Landing::Failed(None));
    }
}
