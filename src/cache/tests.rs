use super::*;
use crate::clock::ManualClock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

fn manual(config: CacheConfig) -> (Cache<u64, String>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (Cache::with_clock(config, clock.clone()).unwrap(), clock)
}

#[test]
fn rejects_zero_capacity_and_bad_ttls() {
    let e = Cache::<u64, u64>::new(CacheConfig::new(0)).unwrap_err();
    assert!(matches!(
        e,
        Error::Cache(CacheError::ZeroCapacity {
            field: "max_entries"
        })
    ));
    let e = Cache::<u64, u64>::new(CacheConfig::new(5).max_weight(0)).unwrap_err();
    assert!(matches!(
        e,
        Error::Cache(CacheError::ZeroCapacity {
            field: "max_weight"
        })
    ));
    let e = Cache::<u64, u64>::new(CacheConfig::new(5).ttl(Duration::ZERO)).unwrap_err();
    assert!(matches!(e, Error::Cache(CacheError::InvalidTtl(_))));
    for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300] {
        assert!(ttl_from_secs_f64(bad).is_err(), "{bad} accepted");
    }
    assert_eq!(ttl_from_secs_f64(1.5).unwrap(), Duration::from_millis(1500));
}

#[test]
fn never_holds_more_than_max_entries() {
    for cap in [1u64, 7, 100, 1000, 5000] {
        let c: Cache<u64, u64> = Cache::new(CacheConfig::new(cap)).unwrap();
        for i in 0..cap * 10 {
            c.insert(i, i).unwrap();
            assert!(c.len() as u64 <= cap, "cap {cap}: len {}", c.len());
        }
        let s = c.stats();
        assert_eq!(s.inserts, cap * 10);
        assert!(s.evictions >= cap * 9 - cap / 10, "cap {cap}: {s:?}");
    }
}

#[test]
fn weight_and_entry_bounds_hold_together() {
    let c: Cache<u64, Vec<u8>> = Cache::new(CacheConfig::new(100).max_weight(10_000)).unwrap();
    for i in 0..2000u64 {
        let w = (i * 37) % 300;
        c.insert_with(
            i,
            vec![0; w as usize],
            EntryOptions {
                ttl: None,
                weight: w,
            },
        )
        .unwrap();
        assert!(c.len() <= 100);
        assert!(c.weight() <= 10_000);
    }
    // tiny entries: the entry bound still holds
    for i in 0..1000u64 {
        c.insert_with(
            10_000 + i,
            vec![],
            EntryOptions {
                ttl: None,
                weight: 1,
            },
        )
        .unwrap();
        assert!(c.len() <= 100);
    }
}

#[test]
fn entry_heavier_than_a_shard_is_an_error() {
    let c: Cache<u64, u64> = Cache::new(CacheConfig::new(10).max_weight(100)).unwrap();
    let e = c
        .insert_with(
            1,
            1,
            EntryOptions {
                ttl: None,
                weight: 101,
            },
        )
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Cache(CacheError::EntryTooLarge { weight: 101, .. })
    ));
    assert!(c.is_empty());
}

#[test]
fn default_ttl_expires_exactly_at_deadline() {
    let (c, clock) = manual(CacheConfig::new(10).ttl(Duration::from_secs(60)));
    c.insert(1, "a".into()).unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(c.get(&1).as_deref(), Some("a"));
    assert!(c.contains_key(&1));
    clock.advance(Duration::from_secs(1));
    assert!(!c.contains_key(&1));
    assert_eq!(c.get(&1), None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.expirations), (1, 1, 1));
    assert_eq!(c.len(), 0, "expired entry is dropped when met");
}

#[test]
fn per_entry_ttl_overrides_default() {
    let (c, clock) = manual(CacheConfig::new(10).ttl(Duration::from_secs(60)));
    let short = EntryOptions {
        ttl: Some(Duration::from_secs(1)),
        weight: 0,
    };
    let long = EntryOptions {
        ttl: Some(Duration::from_secs(3600)),
        weight: 0,
    };
    c.insert_with(1, "short".into(), short).unwrap();
    c.insert_with(2, "long".into(), long).unwrap();
    c.insert(3, "default".into()).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.get(&1), None);
    assert!(c.get(&3).is_some());
    clock.advance(Duration::from_secs(60));
    assert_eq!(c.get(&3), None);
    assert!(c.get(&2).is_some());
    let bad = EntryOptions {
        ttl: Some(Duration::ZERO),
        weight: 0,
    };
    assert!(c.insert_with(4, "x".into(), bad).is_err());
}

#[test]
fn purge_expired_drops_only_expired() {
    let (c, clock) = manual(CacheConfig::new(100));
    for i in 0..10 {
        let ttl = if i % 2 == 0 {
            Some(Duration::from_secs(1))
        } else {
            None
        };
        c.insert_with(i, i.to_string(), EntryOptions { ttl, weight: 0 })
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(c.purge_expired(), 5);
    assert_eq!(c.len(), 5);
    assert_eq!(c.stats().expirations, 5);
    assert!((0..10).filter(|i| i % 2 == 1).all(|i| c.contains_key(&i)));
}

#[test]
fn remove_clear_and_stats() {
    let (c, _) = manual(CacheConfig::new(10));
    c.insert(1, "a".into()).unwrap();
    c.insert(2, "b".into()).unwrap();
    assert_eq!(c.remove(&1).as_deref(), Some("a"));
    assert_eq!(c.remove(&1), None);
    assert_eq!(c.get(&2).as_deref(), Some("b"));
    assert_eq!(c.get(&3), None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.inserts, s.entries), (1, 1, 2, 1));
    assert!((s.hit_ratio() - 0.5).abs() < 1e-12);
    c.clear();
    assert!(c.is_empty());
    c.reset_stats();
    assert_eq!(c.stats(), CacheStats::default());
}

#[test]
fn single_flight_computes_once_under_concurrent_misses() {
    let c: Arc<Cache<u64, u64>> = Arc::new(Cache::new(CacheConfig::new(100)).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.get_or_try_insert_with(&7, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    Ok::<_, Error>(49)
                })
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 49);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = c.stats();
    assert_eq!((s.misses, s.hits, s.inserts), (1, threads as u64 - 1, 1));
}

#[test]
fn loader_may_use_the_cache_but_not_its_own_key() {
    let c: Cache<u64, u64> = Cache::new(CacheConfig::new(100)).unwrap();
    let v = c
        .get_or_try_insert_with(&1, || {
            let inner = c.get_or_try_insert_with(&2, || Ok::<_, Error>(20))?;
            c.insert(3, 30)?;
            Ok::<_, Error>(inner + 1)
        })
        .unwrap();
    assert_eq!((v, c.get(&2), c.get(&3)), (21, Some(20), Some(30)));

    let e = c
        .get_or_try_insert_with(&5, || c.get_or_try_insert_with(&5, || Ok::<_, Error>(0)))
        .unwrap_err();
    assert!(matches!(e, Error::Cache(CacheError::RecursiveLoad)));
    assert_eq!(c.get(&5), None);
}

#[test]
fn failed_loader_stores_nothing_and_next_caller_retries() {
    let c: Cache<u64, u64> = Cache::new(CacheConfig::new(100)).unwrap();
    let e = c
        .get_or_try_insert_with(&1, || Err(Error::InvalidArgument("boom".into())))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(!c.contains_key(&1));
    assert_eq!(
        c.get_or_try_insert_with(&1, || Ok::<_, Error>(5)).unwrap(),
        5
    );
    assert_eq!(c.get(&1), Some(5));
}

#[test]
fn get_or_insert_recomputes_an_expired_entry() {
    let clock = Arc::new(ManualClock::new());
    let c: Cache<u64, u64> = Cache::with_clock(
        CacheConfig::new(10).ttl(Duration::from_secs(5)),
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        c.get_or_try_insert_with(&1, || Ok::<_, Error>(1)).unwrap(),
        1
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        c.get_or_try_insert_with(&1, || Ok::<_, Error>(2)).unwrap(),
        2
    );
    assert_eq!(c.stats().expirations, 1);
}

#[test]
fn concurrent_readers_and_writers_keep_the_bound() {
    let c: Arc<Cache<u64, u64>> = Arc::new(Cache::new(CacheConfig::new(500)).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let k = (i * 7 + t) % 3000;
                    if i % 3 == 0 {
                        c.insert(k, k * 2).unwrap();
                    } else if let Some(v) = c.get(&k) {
                        assert_eq!(v, k * 2);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(c.len() <= 500);
}

#[test]
fn entries_is_a_snapshot_of_live_entries_that_counts_nothing() {
    let (c, clock) = manual(CacheConfig::new(100));
    for i in 0..6u64 {
        let ttl = (i < 2).then(|| Duration::from_secs(1));
        c.insert_with(i, i.to_string(), EntryOptions { ttl, weight: 0 })
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let mut got = c.entries();
    got.sort();
    let want: Vec<(u64, String)> = (2..6).map(|i| (i, i.to_string())).collect();
    assert_eq!(got, want);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.expirations), (0, 0, 0));
}

#[test]
fn a_forked_child_computes_a_key_its_parent_is_loading() {
    let c: Arc<Cache<u64, u64>> = Arc::new(Cache::new(CacheConfig::new(100)).unwrap());
    let started = Arc::new(Barrier::new(2));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let loader = {
        let (c, started) = (c.clone(), started.clone());
        std::thread::spawn(move || {
            c.get_or_try_insert_with(&7, || {
                started.wait();
                let _ = released.recv();
                Ok::<_, Error>(1)
            })
        })
    };
    started.wait();
    // SAFETY: the child only runs Rust code of this test and leaves with `_exit`, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The parent's loading thread does not exist here: a child that waited for it would
        // wait forever, so SIGALRM ends it (and the parent sees a signal, not an exit).
        // SAFETY: `alarm` only arms a timer of this process.
        unsafe { libc::alarm(10) };
        let ok = c.get_or_try_insert_with(&7, || Ok::<_, Error>(2)).ok() == Some(2)
            && c.get(&7) == Some(2);
        // SAFETY: terminates the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    release.send(()).unwrap();
    assert_eq!(loader.join().unwrap().unwrap(), 1);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        !libc::WIFSIGNALED(status),
        "the forked child waited for a load only the parent's thread could finish"
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child did not compute the key itself"
    );
    assert_eq!(c.get(&7), Some(1));
}

/// A cloneable error, as `get_or_try_insert_shared` needs.
#[derive(Clone, Debug)]
struct SharedTestErr(String);

impl From<Error> for SharedTestErr {
    fn from(e: Error) -> Self {
        Self(e.to_string())
    }
}

#[test]
fn shared_loads_hand_the_error_to_every_waiter_and_wait_through_the_hook() {
    let c: Arc<Cache<u64, u64>> = Arc::new(Cache::new(CacheConfig::new(100)).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let hooked = Arc::new(AtomicUsize::new(0));
    let (entered, leader_in) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let leader = {
        let (c, calls) = (c.clone(), calls.clone());
        std::thread::spawn(move || {
            c.get_or_try_insert_shared(
                &1,
                u64::clone,
                || -> Result<(u64, EntryOptions), SharedTestErr> {
                    calls.fetch_add(1, Ordering::SeqCst);
                    entered.send(()).unwrap();
                    let _ = released.recv();
                    Err(SharedTestErr("backend down".into()))
                },
                |b| b.wait(),
            )
        })
    };
    leader_in.recv().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (c, calls, hooked) = (c.clone(), calls.clone(), hooked.clone());
            std::thread::spawn(move || {
                c.get_or_try_insert_shared(
                    &1,
                    u64::clone,
                    || -> Result<_, SharedTestErr> {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok((2, EntryOptions::default()))
                    },
                    |b| {
                        hooked.fetch_add(1, Ordering::SeqCst);
                        b.wait()
                    },
                )
            })
        })
        .collect();
    // Every waiter has entered its hook before the leader fails.
    while hooked.load(Ordering::SeqCst) < 3 {
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap_err().0, "backend down");
    for w in waiters {
        assert_eq!(w.join().unwrap().unwrap_err().0, "backend down");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!c.contains_key(&1));
    assert_eq!(
        c.get_or_try_insert_shared(
            &1,
            u64::clone,
            || Ok::<_, SharedTestErr>((3, EntryOptions::default())),
            |b| b.wait()
        )
        .unwrap(),
        3
    );
}

#[test]
fn a_panicking_loader_lets_a_waiter_compute_the_value() {
    let c: Arc<Cache<u64, u64>> = Arc::new(Cache::new(CacheConfig::new(100)).unwrap());
    let (entered, leader_in) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let leader = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.get_or_try_insert_with(&1, || -> Result<u64, Error> {
                entered.send(()).unwrap();
                let _ = released.recv();
                panic!("loader bug")
            })
        })
    };
    leader_in.recv().unwrap();
    let waiting = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (c, waiting) = (c.clone(), waiting.clone());
        std::thread::spawn(move || {
            c.load(
                &1,
                u64::clone,
                || Ok::<_, Error>((5, EntryOptions::default())),
                |b: Blocking<'_>| {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    b.wait()
                },
                None,
            )
        })
    };
    while waiting.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    assert!(leader.join().is_err());
    assert_eq!(waiter.join().unwrap().unwrap(), 5);
    assert_eq!(c.get(&1), Some(5));
}

/// A key whose every key hashes alike, and whose first comparison can be made to wait.
#[derive(Clone)]
struct GatedKey {
    id: u64,
    gate: Option<Arc<Gate>>,
}

struct Gate {
    armed: std::sync::atomic::AtomicBool,
    comparing: std::sync::mpsc::SyncSender<()>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Hash for GatedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(0);
    }
}

impl PartialEq for GatedKey {
    fn eq(&self, other: &Self) -> bool {
        let gate = self.gate.as_ref().or(other.gate.as_ref());
        if let Some(gate) = gate.filter(|g| g.armed.swap(false, Ordering::SeqCst)) {
            // Tell the test this comparison runs, then wait (bounded) for its go-ahead.
            let _ = gate.comparing.try_send(());
            let go = gate.go.lock().unwrap();
            assert!(
                go.recv_timeout(Duration::from_secs(10)).is_ok(),
                "another load could not proceed while a key was being compared"
            );
        }
        self.id == other.id
    }
}

impl Eq for GatedKey {}

#[test]
fn single_flight_compares_keys_outside_its_lock() {
    // Python's `__eq__` may release the GIL and let another thread load: a comparison must not
    // hold a lock that thread needs.
    let c: Arc<Cache<GatedKey, u64>> = Arc::new(Cache::new(CacheConfig::new(100)).unwrap());
    let key = |id| GatedKey { id, gate: None };
    let (entered, leader_in) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let leader = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.get_or_try_insert_with(&key(1), || {
                entered.send(()).unwrap();
                let _ = released.recv();
                Ok::<_, Error>(10)
            })
        })
    };
    leader_in.recv().unwrap();
    let (comparing_tx, comparing) = std::sync::mpsc::sync_channel::<()>(1);
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let gated = GatedKey {
        id: 2,
        gate: Some(Arc::new(Gate {
            armed: true.into(),
            comparing: comparing_tx,
            go: Mutex::new(go_rx),
        })),
    };
    let comparer = {
        let c = c.clone();
        std::thread::spawn(move || c.get_or_try_insert_with(&gated, || Ok::<_, Error>(20)))
    };
    comparing.recv().unwrap();
    // While key 2 is being compared with key 1's flight, a third key loads through the same
    // single-flight bucket.
    assert_eq!(
        c.get_or_try_insert_with(&key(3), || Ok::<_, Error>(30))
            .unwrap(),
        30
    );
    go.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 10);
    assert_eq!(comparer.join().unwrap().unwrap(), 20);
}
