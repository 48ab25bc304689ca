use super::*;
use crate::clock::ManualClock;
use crate::error::RateLimitError;
use std::sync::Barrier;

use crate::store::test_support::TempDir;

const SEC: Duration = Duration::from_secs(1);

fn limiter(policy: Policy) -> (RateLimiter, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    // Start well after zero so that "fresh" states are in the past.
    clock.advance(Duration::from_secs(1000));
    (
        RateLimiter::with_options(policy, 10_000, clock.clone()).unwrap(),
        clock,
    )
}

/// Builds a limiter of `policy` over one state store, on a manual clock started well after zero
/// (so that "fresh" states are in the past) at a whole hour (so that every window of the tests
/// starts there), with whatever must outlive the limiter (the directory of a host-shared file).
type Make = fn(Policy) -> (RateLimiter, Arc<ManualClock>, Option<TempDir>);

fn local(policy: Policy) -> (RateLimiter, Arc<ManualClock>, Option<TempDir>) {
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(3600));
    let limiter = RateLimiter::with_options(policy, 10_000, clock.clone()).unwrap();
    (limiter, clock, None)
}

/// The host-shared store stamps its stripe leases with the decision time, which must therefore
/// be on the host's monotonic timeline (never behind it by more than a lease, or a waiter takes
/// over a live lock). The manual clock starts at the first whole hour at least an hour ahead of
/// the host's monotonic clock: ahead is safe (a lease in the future is never expired).
#[cfg(unix)]
fn host_shared(policy: Policy) -> (RateLimiter, Arc<ManualClock>, Option<TempDir>) {
    use crate::clock::HostMonotonicClock;
    let hour = 3600;
    let host = HostMonotonicClock.now().as_secs();
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs((host / hour + 2) * hour));
    let dir = TempDir::new("ratelimit-suite");
    let limiter = RateLimiter::host_shared_with_clock(
        policy,
        dir.path().join("limiter"),
        10_000,
        clock.clone(),
    )
    .unwrap();
    (limiter, clock, Some(dir))
}

/// A Redis-backed limiter on the test server, on a manual clock (passed to the script instead of
/// the server's TIME). Limiters made by one test (one thread) share one handle and one key
/// prefix, so that `check_all` over them is one script call; other tests use other prefixes.
#[cfg(feature = "redis")]
fn redis_store(policy: Policy) -> (RateLimiter, Arc<ManualClock>, Option<TempDir>) {
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(3600));
    let limiter = RateLimiter::redis_with(
        policy,
        test_redis(),
        OnRedisError::Closed,
        Some(clock.clone()),
    )
    .unwrap();
    (limiter, clock, None)
}

/// This thread's handle on the shared test server, with a key prefix of its own.
#[cfg(feature = "redis")]
fn test_redis() -> Arc<crate::redis::Redis> {
    use crate::redis::{test_server::RedisServer, Redis, RedisOptions};
    thread_local! {
        static R: Arc<Redis> = {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            Redis::open(
                &RedisServer::shared().url(),
                RedisOptions {
                    prefix: format!("t{}-{n}", std::process::id()),
                    // 1000 threads share 16 connections on a loaded machine: the outage timeout
                    // is not under test here.
                    timeout: Duration::from_secs(30),
                    ..RedisOptions::default()
                },
            )
            .unwrap()
        };
    }
    R.with(Arc::clone)
}

fn on(make: Make, policy: Policy) -> (RateLimiter, Arc<ManualClock>, Option<TempDir>) {
    make(policy)
}

/// Instantiates every behavioural test below for one state store: the algorithm is written
/// once, and a new store (Redis) adds one `store_suite!` line.
macro_rules! store_suite {
    ($store:ident, $make:expr) => {
        mod $store {
            store_suite!(@tests $make;
                cost_zero_or_above_limit_is_an_error,
                gcra_allows_a_burst_of_limit_then_one_per_interval,
                gcra_weighted_cost,
                sliding_window_counts_and_weights_the_previous_window,
                sliding_window_retry_after_within_the_window,
                thousand_threads_against_a_limit_of_100_allow_exactly_100,
                check_all_is_all_or_nothing,
                per_key_overrides,
                reset_forgets_every_key,
            );
        }
    };
    (@tests $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test($make)
            }
        )*
    };
}

store_suite!(local_store, super::local);
#[cfg(unix)]
store_suite!(host_shared_store, super::host_shared);
#[cfg(feature = "redis")]
store_suite!(redis_store, super::redis_store);

fn reset_forgets_every_key(make: Make) {
    let (l, _clock, _dir) = on(make, Policy::gcra("p", 2, Duration::from_secs(60)).unwrap());
    for key in ["a", "b"] {
        assert!(l.check(key, 2).unwrap().allowed);
        assert!(!l.check(key, 1).unwrap().allowed);
    }
    assert_eq!(l.stats().keys, 2);
    l.reset();
    assert_eq!(l.stats().keys, 0);
    assert!(l.check("a", 2).unwrap().allowed, "a starts fresh");
}

#[test]
fn policies_are_validated() {
    let bad = [
        Policy::gcra("", 1, SEC),
        Policy::gcra("has space", 1, SEC),
        Policy::gcra("quote\"", 1, SEC),
        Policy::gcra("ok", 0, SEC),
        Policy::gcra("ok", 1, Duration::ZERO),
        Policy::gcra("ok", 1, MAX_WINDOW + SEC),
        Policy::gcra("ok", 2_000_000_000, SEC),
    ];
    for p in bad {
        assert!(
            matches!(p, Err(Error::RateLimit(RateLimitError::InvalidPolicy(_)))),
            "{p:?}"
        );
    }
    assert!(Algorithm::parse("leaky").is_err());
    assert_eq!(
        Algorithm::parse("sliding_window").unwrap(),
        Algorithm::SlidingWindow
    );
}

fn cost_zero_or_above_limit_is_an_error(make: Make) {
    let (l, _clock, _dir) = on(make, Policy::gcra("p", 5, SEC).unwrap());
    for cost in [0, 6] {
        let e = l.check("k", cost).unwrap_err();
        assert!(
            matches!(e, Error::RateLimit(RateLimitError::InvalidCost { .. })),
            "{e}"
        );
    }
    assert!(l.check("k", 5).unwrap().allowed);
}

fn gcra_allows_a_burst_of_limit_then_one_per_interval(make: Make) {
    let (l, clock, _dir) = on(
        make,
        Policy::gcra("p", 10, Duration::from_secs(10)).unwrap(),
    );
    for i in 0..10 {
        let d = l.check("k", 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 9 - i);
        assert_eq!(d.reset, SEC * (i as u32 + 1));
    }
    let d = l.check("k", 1).unwrap();
    assert!(!d.allowed);
    assert_eq!((d.remaining, d.retry_after), (0, Some(SEC)));
    clock.advance(SEC - Duration::from_nanos(1));
    assert!(!l.check("k", 1).unwrap().allowed, "one nanosecond early");
    clock.advance(Duration::from_nanos(1));
    let d = l.check("k", 1).unwrap();
    assert!(d.allowed, "exactly at the boundary");
    assert_eq!(d.remaining, 0);
    // Other keys are independent.
    assert!(l.check("other", 1).unwrap().allowed);
}

fn gcra_weighted_cost(make: Make) {
    let (l, clock, _dir) = on(
        make,
        Policy::gcra("tokens", 100, Duration::from_secs(100)).unwrap(),
    );
    assert_eq!(l.check("k", 60).unwrap().remaining, 40);
    let d = l.check("k", 50).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(SEC * 10));
    clock.advance(SEC * 10);
    assert_eq!(l.check("k", 50).unwrap().remaining, 0);
}

fn sliding_window_counts_and_weights_the_previous_window(make: Make) {
    let (l, clock, _dir) = on(
        make,
        Policy::sliding_window("p", 10, Duration::from_secs(10)).unwrap(),
    );
    // The manual clock starts at a whole hour: the start of a window.
    for i in 0..10 {
        let d = l.check("k", 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 9 - i);
        assert_eq!(d.reset, SEC * 10);
    }
    let d = l.check("k", 1).unwrap();
    assert!(!d.allowed);
    // Next window starts in 10 s with prev = 10: at elapsed e, estimate = 10 * (10 - e) / 10,
    // so one more fits from e = 1 s: retry after 11 s.
    assert_eq!(d.retry_after, Some(SEC * 11));
    clock.advance(SEC * 11 - Duration::from_nanos(1));
    assert!(!l.check("k", 1).unwrap().allowed, "one nanosecond early");
    clock.advance(Duration::from_nanos(1));
    assert!(l.check("k", 1).unwrap().allowed);
    assert!(!l.check("k", 1).unwrap().allowed);
    // Two windows later everything is forgotten.
    clock.advance(SEC * 20);
    assert_eq!(l.check("k", 1).unwrap().remaining, 9);
}

fn sliding_window_retry_after_within_the_window(make: Make) {
    let (l, clock, _dir) = on(
        make,
        Policy::sliding_window("p", 10, Duration::from_secs(10)).unwrap(),
    );
    for _ in 0..8 {
        assert!(l.check("k", 1).unwrap().allowed);
    }
    clock.advance(SEC * 10); // new window: prev = 8, curr = 0
    assert!(l.check("k", 1).unwrap().allowed); // 8 + 1 = 9
    assert!(l.check("k", 1).unwrap().allowed); // 10
    let d = l.check("k", 1).unwrap();
    assert!(!d.allowed);
    // Needs 8 * (10 - e) / 10 + 3 <= 10, i.e. e >= 1.25 s.
    let wait = d.retry_after.unwrap();
    assert_eq!(wait, Duration::from_millis(1250));
    clock.advance(wait);
    assert!(l.check("k", 1).unwrap().allowed);
}

fn thousand_threads_against_a_limit_of_100_allow_exactly_100(make: Make) {
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
        let (l, _clock, _dir) = on(
            make,
            Policy::new("p", 100, Duration::from_secs(3600), algorithm).unwrap(),
        );
        let l = Arc::new(l);
        let barrier = Arc::new(Barrier::new(1000));
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                let (l, barrier) = (l.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    l.check("shared", 1).unwrap().allowed
                })
            })
            .collect();
        let allowed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|a| *a)
            .count();
        assert_eq!(allowed, 100, "{algorithm:?}");
        let s = l.stats();
        assert_eq!((s.allowed, s.denied), (100, 900));
    }
}

fn check_all_is_all_or_nothing(make: Make) {
    let (per_key, _c1, _d1) = on(
        make,
        Policy::gcra("per-key", 2, Duration::from_secs(60)).unwrap(),
    );
    let (per_ip, _c2, _d2) = on(
        make,
        Policy::gcra("per-ip", 5, Duration::from_secs(60)).unwrap(),
    );
    let d = check_all(&[(&per_key, "key-a"), (&per_ip, "10.0.0.1")], 1).unwrap();
    assert!(d.allowed);
    assert_eq!((d.policy.as_ref(), d.remaining), ("per-key", 1));
    assert!(
        check_all(&[(&per_key, "key-a"), (&per_ip, "10.0.0.1")], 1)
            .unwrap()
            .allowed
    );
    let d = check_all(&[(&per_ip, "10.0.0.1"), (&per_key, "key-a")], 1).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.policy.as_ref(), "per-key");
    // The IP was refunded: 2 used of 5, so 3 more for another key.
    for _ in 0..3 {
        assert!(check_all(&[(&per_ip, "10.0.0.1")], 1).unwrap().allowed);
    }
    assert!(!check_all(&[(&per_ip, "10.0.0.1")], 1).unwrap().allowed);
    assert!(check_all(&[], 1).is_err());
}

fn per_key_overrides(make: Make) {
    let (l, _clock, _dir) = on(
        make,
        Policy::gcra("free", 1, Duration::from_secs(60)).unwrap(),
    );
    l.set_override(
        "vip",
        Policy::gcra("paid", 3, Duration::from_secs(60)).unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let d = l.check("vip", 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.policy.as_ref(), "paid");
    }
    assert!(!l.check("vip", 1).unwrap().allowed);
    assert!(l.check("anon", 1).unwrap().allowed);
    assert!(!l.check("anon", 1).unwrap().allowed);
    assert!(l.remove_override("vip"));
    assert!(!l.remove_override("vip"));
    assert_eq!(l.check("vip", 1).unwrap().policy.as_ref(), "free");
}

#[test]
fn idle_keys_are_dropped_so_memory_stays_bounded() {
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(1000));
    let l = RateLimiter::with_options(
        Policy::gcra("p", 10, Duration::from_secs(1)).unwrap(),
        1000,
        clock.clone(),
    )
    .unwrap();
    // A flood of distinct keys, each idle 100 ms after its one request.
    for i in 0..100_000 {
        assert!(l.check(&format!("ip-{i}"), 1).unwrap().allowed);
        clock.advance(Duration::from_millis(1));
    }
    let s = l.stats();
    assert!(s.keys <= 1024, "{s:?}");
    assert_eq!(s.evicted_active, 0, "only idle keys had to go");

    // A flood with no time passing: active keys must go, and the bound still holds.
    for i in 0..50_000 {
        l.check(&format!("burst-{i}"), 1).unwrap();
    }
    let s = l.stats();
    assert!(s.keys <= 1024, "{s:?}");
    assert!(s.evicted_active > 0);
}

#[test]
fn headers_render_ietf_and_classic_forms() {
    let (l, _) = limiter(Policy::gcra("api", 2, Duration::from_secs(60)).unwrap());
    let d = l.check("k", 1).unwrap();
    assert_eq!(
        d.headers(),
        vec![
            ("RateLimit-Policy", "\"api\";q=2;w=60".to_string()),
            ("RateLimit", "\"api\";r=1;t=30".to_string()),
            ("X-RateLimit-Limit", "2".to_string()),
            ("X-RateLimit-Remaining", "1".to_string()),
            ("X-RateLimit-Reset", "30".to_string()),
        ]
    );
    l.check("k", 1).unwrap();
    let d = l.check("k", 1).unwrap();
    let h = d.headers();
    assert_eq!(h.last().unwrap(), &("Retry-After", "30".to_string()));
    assert_eq!(h[1].1, "\"api\";r=0;t=60");
}

#[cfg(unix)]
#[test]
fn host_shared_limiters_count_together() {
    let path = std::env::temp_dir().join(format!("keel-rl-shared-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let policy = || Policy::gcra("p", 3, Duration::from_secs(3600)).unwrap();
    let a = RateLimiter::host_shared(policy(), &path, 1000).unwrap();
    let b = RateLimiter::host_shared(policy(), &path, 1000).unwrap();
    assert!(a.is_host_shared());
    assert!(a.check("k", 1).unwrap().allowed);
    assert!(b.check("k", 1).unwrap().allowed);
    let d = a.check("k", 1).unwrap();
    assert!(d.allowed && d.remaining == 0);
    assert!(!b.check("k", 1).unwrap().allowed);
    assert!(b.check("other", 1).unwrap().allowed);
    assert_eq!(a.stats().keys, 2);
    b.reset();
    assert!(a.check("k", 1).unwrap().allowed);
    // Another policy (a redeploy) gets its own state file beside this one.
    let other = RateLimiter::host_shared(
        Policy::sliding_window("p", 3, Duration::from_secs(3600)).unwrap(),
        &path,
        1000,
    )
    .unwrap();
    assert_ne!(other.shared_path(), a.shared_path());
    assert_eq!(a.shared_path(), b.shared_path());
    let err = RateLimiter::host_shared(policy(), "/nonexistent-dir/x", 10).unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent-dir/x.v2.gcra.3per3600s.4096keys")
            && err
                .to_string()
                .contains("does the folder /nonexistent-dir exist"),
        "{err}"
    );
    // Overrides may change the limit only: the shared state uses the default's timeline.
    assert!(a
        .set_override(
            "vip",
            Policy::gcra("p", 10, Duration::from_secs(3600)).unwrap()
        )
        .is_ok());
    let other_window = Policy::gcra("p", 10, Duration::from_secs(60)).unwrap();
    assert!(matches!(
        a.set_override("vip", other_window),
        Err(Error::RateLimit(RateLimitError::InvalidPolicy(_)))
    ));
    let file = a.shared_path().unwrap().to_owned();
    std::fs::remove_file(other.shared_path().unwrap()).unwrap();
    drop((a, b, other));
    std::fs::remove_file(&file).unwrap();
    // A state file that other users can write is refused.
    std::fs::write(&file, b"").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let err = RateLimiter::host_shared(policy(), &path, 1000).unwrap_err();
    assert!(err.to_string().contains("mode 0600"), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    std::fs::remove_file(&file).unwrap();
}

#[cfg(unix)]
#[test]
fn host_shared_full_stripes_drop_idle_then_active_keys() {
    let path = std::env::temp_dir().join(format!("keel-rl-full-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // 4 slots per stripe, 1024 stripes: far more keys than slots.
    let l = RateLimiter::host_shared(
        Policy::gcra("p", 5, Duration::from_secs(3600)).unwrap(),
        &path,
        10,
    )
    .unwrap();
    for i in 0..20_000 {
        l.check(&format!("k{i}"), 1).unwrap();
    }
    let s = l.stats();
    assert!(s.keys <= 4096, "{s:?}");
    assert!(s.evicted_active > 0);
    std::fs::remove_file(l.shared_path().unwrap()).unwrap();
}

/// Flooding a full shard with fresh keys must not evict (and so reset) a key that is being
/// limited: the attacker would otherwise reset a victim's exhausted bucket at will.
#[test]
fn flooding_fresh_keys_does_not_reset_an_exhausted_key() {
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(1000));
        let policy = Policy::new("p", 3, Duration::from_secs(60), algorithm).unwrap();
        // 64 shards of 16 keys.
        let l = RateLimiter::with_options(policy, 64 * 16, clock.clone()).unwrap();
        for _ in 0..3 {
            assert!(l.check("victim", 1).unwrap().allowed);
        }
        assert!(!l.check("victim", 1).unwrap().allowed);
        clock.advance(Duration::from_secs(1));
        // Each flood key spends its whole budget at once (allowed, so never limited).
        for i in 0..20_000 {
            assert!(l.check(&format!("flood-{i}"), 3).unwrap().allowed);
        }
        assert!(
            l.stats().evicted_active > 0,
            "{algorithm:?}: the flood filled the shards"
        );
        let d = l.check("victim", 1).unwrap();
        assert!(
            !d.allowed,
            "{algorithm:?}: the victim's exhausted bucket was reset"
        );
    }
}

#[test]
fn open_takes_the_key_bound_of_its_kind_from_the_core() {
    let policy = Policy::gcra(Policy::DEFAULT_NAME, 10, SEC).unwrap();
    assert_eq!(Algorithm::default(), Algorithm::DEFAULT);
    assert_eq!(default_max_keys(false), DEFAULT_MAX_KEYS);
    assert_eq!(default_max_keys(true), DEFAULT_SHARED_MAX_KEYS);
    let local = RateLimiter::open(policy.clone(), LimiterOptions::default()).unwrap();
    assert!(!local.is_host_shared());
    let e = RateLimiter::open(
        policy.clone(),
        LimiterOptions {
            shared_path: None,
            max_keys: Some(0),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("max_keys"), "{e}");
    #[cfg(unix)]
    {
        let dir = TempDir::new("ratelimit-open");
        let path = dir.path().join("limits");
        let shared = RateLimiter::open(
            policy.clone(),
            LimiterOptions {
                shared_path: Some(path.clone()),
                max_keys: None,
            },
        )
        .unwrap();
        // The same file as host_shared with the documented shared default: one budget.
        let explicit = RateLimiter::host_shared(policy, &path, DEFAULT_SHARED_MAX_KEYS).unwrap();
        assert_eq!(shared.shared_path(), explicit.shared_path());
        shared.check("k", 1).unwrap();
        assert_eq!(explicit.check("k", 1).unwrap().remaining, 8);
    }
}

/// The script and `algo.rs` make the same decisions, to the nanosecond, for the same requests at
/// the same times: odd intervals, weighted costs, long windows and large limits (products above
/// 2^53 in the sliding window's arithmetic).
#[cfg(feature = "redis")]
#[test]
fn redis_decisions_equal_in_process_decisions() {
    let policies = [
        Policy::gcra("g7", 7, Duration::from_micros(1_000_003)).unwrap(),
        Policy::gcra("gbig", 1_000_000_007, Duration::from_secs(30 * 24 * 3600)).unwrap(),
        Policy::sliding_window("w7", 7, Duration::from_micros(1_000_003)).unwrap(),
        Policy::sliding_window("wbig", 999_999_937, Duration::from_secs(29 * 24 * 3600 + 7))
            .unwrap(),
        Policy::sliding_window("w3", 3, Duration::from_millis(250)).unwrap(),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for policy in policies {
        let (local, lc, _) = local(policy.clone());
        let (remote, rc, _) = redis_store(policy.clone());
        let limit = policy.limit();
        let window = policy.window_nanos();
        for step in 0..400 {
            let advance = match next() % 4 {
                0 => 0,
                1 => next() % 1000,
                2 => next() % (window / 3).max(1),
                _ => next() % (window * 2),
            };
            lc.advance(Duration::from_nanos(advance));
            rc.advance(Duration::from_nanos(advance));
            let cost = match next() % 3 {
                0 => 1,
                1 => 1 + next() % limit.min(5),
                _ => 1 + next() % limit,
            };
            let key = ["a", "b"][(next() % 2) as usize];
            let want = local.check(key, cost).unwrap();
            let got = remote.check(key, cost).unwrap();
            assert_eq!(got, want, "{} step {step} cost {cost}", policy.name());
        }
    }
}

/// Several limiters on one Redis are decided by one script call: a denial by the last one
/// leaves the others untouched (nothing to refund), and the round trips are counted.
#[cfg(feature = "redis")]
#[test]
fn redis_check_all_is_one_round_trip() {
    use crate::redis::{test_server::RedisServer, Redis, RedisOptions};
    let server = RedisServer::start(); // its own: other tests' calls would be counted
    let r = Redis::open(&server.url(), RedisOptions::default()).unwrap();
    let a = RateLimiter::redis(
        Policy::gcra("rt-a", 5, SEC * 60).unwrap(),
        r.clone(),
        OnRedisError::Closed,
    )
    .unwrap();
    let b = RateLimiter::redis(
        Policy::gcra("rt-b", 1, SEC * 60).unwrap(),
        r.clone(),
        OnRedisError::Closed,
    )
    .unwrap();
    let calls = || -> u64 {
        r.with_conn(|c| ::redis::cmd("INFO").arg("commandstats").query::<String>(c))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .map(|l| {
                l.split("calls=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    check_all(&[(&a, "k"), (&b, "k")], 1).unwrap(); // loads the script if needed
    let before = calls();
    assert!(!check_all(&[(&a, "k"), (&b, "k")], 1).unwrap().allowed);
    assert_eq!(calls() - before, 1);
    assert_eq!(
        a.check("k", 1).unwrap().remaining,
        3,
        "a was not charged by the denial"
    );
}

/// Redis down: a fail-closed limiter returns a typed error naming the endpoint, a fail-open one
/// allows with `degraded`; both recover when Redis is back, without being rebuilt.
#[cfg(feature = "redis")]
#[test]
fn redis_down_fails_open_or_closed_and_recovers() {
    use crate::redis::{test_server::RedisServer, Redis, RedisOptions};
    let mut server = RedisServer::start();
    let r = Redis::open(&server.url(), RedisOptions::default()).unwrap();
    let policy = Policy::gcra("down", 2, SEC * 3600).unwrap();
    let open = RateLimiter::redis(policy.clone(), r.clone(), OnRedisError::Open).unwrap();
    let closed = RateLimiter::redis(policy, r.clone(), OnRedisError::Closed).unwrap();
    assert!(open.check("k", 1).unwrap().allowed);
    server.kill();
    let e = closed.check("k", 1).unwrap_err();
    assert!(
        matches!(e, Error::Redis(crate::RedisError::Unavailable { .. })),
        "{e}"
    );
    assert!(e.to_string().contains(r.endpoint()), "{e}");
    for _ in 0..5 {
        let d = open.check("k", 1).unwrap();
        assert!(d.allowed && d.degraded);
    }
    assert_eq!(open.degraded_decisions(), 5);
    server.restart(); // the state was lost with the process (no persistence)
    let d = closed.check("k", 2).unwrap();
    assert!(d.allowed && !d.degraded);
    assert!(
        !open.check("k", 1).unwrap().allowed,
        "the limit holds again"
    );
}
