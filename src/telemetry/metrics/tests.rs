//! The registry's exposition and instruments. The registry is process-wide and the tests of
//! this crate run in parallel, so every assertion reads a delta or a series only its test
//! touches.

use std::sync::Arc;

use super::*;
use crate::cache::{Cache, CacheConfig};
use crate::ratelimit::{Policy, RateLimiter};

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn prometheus_text_declares_counters_under_their_total_name() {
    let text = render(Format::Prometheus);
    assert!(
        text.contains("# TYPE keel_operations_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP keel_operations_total "));
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("# UNIT"));
    let open = render(Format::OpenMetrics);
    assert!(open.contains("# TYPE keel_operations counter\n"));
    assert!(open.contains("# UNIT keel_operation_duration_seconds seconds\n"));
    assert!(open.ends_with("# EOF\n"));
}

#[test]
fn every_bounded_series_exists_at_zero_before_any_traffic() {
    let text = render(Format::Prometheus);
    for series in [
        "keel_operations_total{primitive=\"memory\",operation=\"memory.append\",outcome=\"error\"}",
        "keel_auth_verifications_total{outcome=\"refused\",reason=\"revoked\"}",
        "keel_db_busy_retries_total{backend=\"sqlite\"}",
        "keel_db_busy_retries_total{backend=\"postgres\"}",
        "keel_db_busy_failures_total{backend=\"postgres\"}",
        "keel_retrieval_queries_total{retriever=\"bm25\"}",
        "keel_telemetry_export_failures_total",
    ] {
        assert!(value(&text, series).is_some(), "{series} missing");
    }
}

#[test]
fn rate_limit_decisions_are_read_from_the_limiter_at_scrape_time() {
    let limiter = RateLimiter::new(
        Policy::gcra("metrics_test_rl", 2, std::time::Duration::from_secs(60)).unwrap(),
    );
    for _ in 0..5 {
        limiter.check("k", 1).unwrap();
    }
    let text = render(Format::Prometheus);
    let series = |d: &str| {
        value(
            &text,
            &format!(
                "keel_ratelimit_decisions_total{{limiter=\"metrics_test_rl\",decision=\"{d}\"}}"
            ),
        )
    };
    assert_eq!(series("allowed"), Some(2.0));
    assert_eq!(series("denied"), Some(3.0));
    drop(limiter);
    let text = render(Format::Prometheus);
    assert!(
        !text.contains("metrics_test_rl"),
        "a dropped limiter leaves the exposition"
    );
}

#[test]
fn caches_of_one_name_are_summed_and_names_are_checked() {
    let a: Arc<Cache<u32, u32>> = Arc::new(Cache::new(CacheConfig::new(10)).unwrap());
    let b: Arc<Cache<u32, u32>> = Arc::new(Cache::new(CacheConfig::new(10)).unwrap());
    register_cache("metrics_test_cache", &a).unwrap();
    register_cache("metrics_test_cache", &b).unwrap();
    a.insert(1, 1).unwrap();
    b.insert(2, 2).unwrap();
    assert_eq!(a.get(&1), Some(1));
    assert_eq!(b.get(&2), Some(2));
    assert_eq!(b.get(&3), None);
    let text = render(Format::Prometheus);
    let v = |m: &str| value(&text, &format!("{m}{{cache=\"metrics_test_cache\"}}"));
    assert_eq!(v("keel_cache_hits_total"), Some(2.0));
    assert_eq!(v("keel_cache_misses_total"), Some(1.0));
    assert_eq!(v("keel_cache_entries"), Some(2.0));
    for bad in ["", "line\nbreak", &"x".repeat(65)] {
        assert!(register_cache(bad, &a).is_err(), "{bad:?}");
    }
}

#[test]
fn an_operation_counts_its_outcome_and_latency() {
    let series = "keel_operations_total{primitive=\"retrieval\",operation=\"retrieval.search\",outcome=\"refused\"}";
    let count = "keel_operation_duration_seconds_count{primitive=\"retrieval\",operation=\"retrieval.search\"}";
    let before = render(Format::Prometheus);
    let _ = start(Op::RetrievalSearch).finish::<()>(Err(Error::InvalidArgument("x".into())));
    let after = render(Format::Prometheus);
    assert!(value(&after, series).unwrap() >= value(&before, series).unwrap() + 1.0);
    assert!(value(&after, count).unwrap() >= value(&before, count).unwrap() + 1.0);
}

#[test]
fn proc_stat_is_parsed_past_a_command_name_with_spaces() {
    // pid (comm) state ppid ... utime(14)=250 stime(15)=50 ... starttime(22)=1000
    // vsize(23)=4096000 rss(24)=100
    let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 1000 4096000 100 rest";
    let s = process::parse_stat(stat, 100.0, 4096.0, 1_700_000_000.0).unwrap();
    assert_eq!(s.cpu_seconds, 3.0);
    assert_eq!(s.start_time_seconds, 1_700_000_010.0);
    assert_eq!(s.virtual_bytes, 4_096_000.0);
    assert_eq!(s.resident_bytes, 409_600.0);
}

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_are_optional() {
    let with = render_with(Format::Prometheus, true);
    assert!(value(&with, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(with.contains("# TYPE process_cpu_seconds_total counter"));
    assert!(value(&with, "process_open_fds").unwrap() >= 3.0);
    let without = render_with(Format::Prometheus, false);
    assert!(!without.contains("process_"));
}

#[test]
fn formats_parse_by_name() {
    assert_eq!(Format::parse("OpenMetrics").unwrap(), Format::OpenMetrics);
    assert_eq!(Format::parse("prometheus").unwrap(), Format::Prometheus);
    assert!(Format::parse("json")
        .unwrap_err()
        .to_string()
        .contains("json"));
}

#[test]
fn memory_and_auth_count_their_work_never_their_content() {
    use crate::auth::{ApiKeys, ApiKeysOptions, NewKey};
    use crate::memory::{MemoryOptions, MemoryStore, NewMessage, SessionRef};
    use crate::store::test_support::TempDir;
    use crate::{Keyring, Store, StoreOptions};

    let dir = TempDir::new("metrics");
    let keyring = Arc::new(Keyring::new(1, &crate::crypto::test_key(41)).unwrap());
    let path = dir.path().join("keel.db");
    let memory = MemoryStore::open(&path, Arc::clone(&keyring), MemoryOptions::default()).unwrap();
    let keys = ApiKeys::new(
        Store::open(&path, StoreOptions::default()).unwrap(),
        keyring,
        ApiKeysOptions::default(),
    )
    .unwrap();
    let ok = |t: &str| {
        value(
            t,
            "keel_auth_verifications_total{outcome=\"ok\",reason=\"none\"}",
        )
        .unwrap()
    };
    let unknown = |t: &str| {
        value(
            t,
            "keel_auth_verifications_total{outcome=\"refused\",reason=\"unknown_key\"}",
        )
        .unwrap()
    };
    let malformed = |t: &str| {
        value(
            t,
            "keel_auth_verifications_total{outcome=\"refused\",reason=\"malformed\"}",
        )
        .unwrap()
    };
    let messages = |t: &str| value(t, "keel_messages_stored_total").unwrap();
    let conversations = |t: &str| value(t, "keel_conversations_started_total").unwrap();
    let appends = |t: &str| {
        value(t, "keel_operations_total{primitive=\"memory\",operation=\"memory.append\",outcome=\"ok\"}")
            .unwrap()
    };
    let refused_appends = |t: &str| {
        value(t, "keel_operations_total{primitive=\"memory\",operation=\"memory.append\",outcome=\"refused\"}")
            .unwrap()
    };

    let before = render(Format::Prometheus);
    let at = SessionRef::new("tenant-canary", "user-canary", "session-canary");
    memory
        .append(&at, &NewMessage::new("user", "content-canary"))
        .unwrap();
    memory
        .append(&at, &NewMessage::new("assistant", "hello"))
        .unwrap();
    assert!(memory
        .append(
            &SessionRef::new("", "u", "s"),
            &NewMessage::new("user", "x")
        )
        .is_err());
    let (plain, _) = keys
        .create(
            "admin",
            &NewKey {
                tenant: "t".into(),
                name: "metrics test".into(),
                env: "live".into(),
                ..NewKey::default()
            },
        )
        .unwrap();
    keys.verify(&plain).unwrap();
    let mut other = plain.to_string();
    other.pop();
    assert!(keys.verify(&other).is_err());
    assert!(keys.verify("not a key").is_err());
    let after = render(Format::Prometheus);

    // Other tests run in parallel on the same registry: at least our traffic is counted.
    assert!(messages(&after) >= messages(&before) + 2.0);
    assert!(conversations(&after) >= conversations(&before) + 1.0);
    assert!(appends(&after) >= appends(&before) + 2.0);
    assert!(refused_appends(&after) >= refused_appends(&before) + 1.0);
    assert!(ok(&after) >= ok(&before) + 1.0);
    assert!(unknown(&after) + malformed(&after) >= unknown(&before) + malformed(&before) + 2.0);
    assert!(value(&after, "keel_cache_hits_total{cache=\"api_keys\"}").is_some());
    for canary in ["canary", plain.as_str()] {
        assert!(!after.contains(canary), "{canary} leaked into the metrics");
    }
}

#[test]
fn a_check_all_refund_never_makes_a_counter_go_down() {
    let window = std::time::Duration::from_secs(60);
    let first = RateLimiter::new(Policy::gcra("metrics_refund_a", 5, window).unwrap());
    let second = RateLimiter::new(Policy::gcra("metrics_refund_b", 1, window).unwrap());
    second.check("k", 1).unwrap();
    first.check("k", 1).unwrap();
    let d = crate::ratelimit::check_all(&[(&first, "k"), (&second, "k")], 1).unwrap();
    assert!(!d.allowed);
    // The limiter's own statistics net the refund out ...
    assert_eq!((first.stats().allowed, first.stats().denied), (1, 1));
    // ... the exported counters count decisions as made, and the refund on its own.
    let text = render(Format::Prometheus);
    let series = |d: &str| {
        value(
            &text,
            &format!(
                "keel_ratelimit_decisions_total{{limiter=\"metrics_refund_a\",decision=\"{d}\"}}"
            ),
        )
    };
    assert_eq!(series("allowed"), Some(2.0));
    assert_eq!(series("denied"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "keel_ratelimit_refunds_total{limiter=\"metrics_refund_a\"}"
        ),
        Some(1.0)
    );
}
