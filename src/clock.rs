//! Monotonic clocks, injectable so that time-based behaviour (TTL, rate limits) is tested
//! exactly, without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: `now` never goes backwards and counts from an arbitrary fixed origin.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`std::time::Instant`).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A cheap monotonic clock with a resolution of a few milliseconds (Linux
/// `CLOCK_MONOTONIC_COARSE`, read without a system call); elsewhere the precise clock.
/// For hot paths that compare against deadlines measured in seconds, such as cache TTLs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Duration {
        coarse_now()
    }
}

#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on every Linux
    // kernel since 2.6.32 and the call cannot fail with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(target_os = "linux"))]
#[inline]
pub(crate) fn coarse_now() -> Duration {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// The host-wide monotonic clock (Linux `CLOCK_MONOTONIC`): the same timeline in every process
/// on the machine, so processes sharing rate-limit state agree on time.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostMonotonicClock;

impl Clock for HostMonotonicClock {
    #[inline]
    fn now(&self) -> Duration {
        host_monotonic_now()
    }
}

#[cfg(unix)]
fn host_monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Unix.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(unix))]
fn host_monotonic_now() -> Duration {
    coarse_now()
}

/// A wall clock: the calendar time stored in timestamps (`created_at`, `expires_at`, audit
/// `at`), in milliseconds since the Unix epoch (UTC, leap seconds ignored, as `SystemTime`).
///
/// Separate from the monotonic [`Clock`] on purpose: a monotonic clock counts from an arbitrary
/// origin (often the boot or the process start), so a timestamp written from one reads as 1970.
/// The types keep the two apart: memory, API keys and the audit log take a `WallClock`, TTLs and
/// rate limits take a `Clock`, and passing one where the other is expected does not compile:
///
/// ```compile_fail
/// # use std::sync::Arc;
/// fn wrong(mem: keel::MemoryStore) -> keel::MemoryStore {
///     mem.with_clock(Arc::new(keel::MonotonicClock::new())) // error: not a WallClock
/// }
/// ```
///
/// ```
/// # use std::sync::Arc;
/// fn right(mem: keel::MemoryStore) -> keel::MemoryStore {
///     mem.with_clock(Arc::new(keel::clock::SystemWallClock))
/// }
/// ```
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock (`SystemTime::now`). It may jump (NTP, an operator): use it for
/// timestamps, never to measure durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now_ms(&self) -> i64 {
        // Before 1970 only on a badly set clock: clamp to the epoch rather than fail.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A wall clock that only moves when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualWallClock {
    ms: std::sync::atomic::AtomicI64,
}

impl ManualWallClock {
    /// A manual wall clock showing `ms` milliseconds since the Unix epoch.
    pub fn at_ms(ms: i64) -> Self {
        Self {
            ms: std::sync::atomic::AtomicI64::new(ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `ms` milliseconds since the Unix epoch (it may go backwards, as a
    /// real wall clock can).
    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl WallClock for ManualWallClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_wall_clock_reads_calendar_time_not_time_since_boot() {
        // 2020-01-01T00:00:00Z; a monotonic clock read as a timestamp is decades short of it.
        assert!(SystemWallClock.now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn a_manual_wall_clock_moves_only_when_told() {
        let c = ManualWallClock::at_ms(1_700_000_000_000);
        assert_eq!(c.now_ms(), 1_700_000_000_000);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now_ms(), 1_700_000_001_500);
        c.set_ms(5);
        assert_eq!(c.now_ms(), 5);
    }
}

/// A duration given in seconds (the unit of the Python door and of configuration files),
/// checked: NaN, infinite, negative or beyond `Duration`'s range is an
/// [`crate::Error::InvalidArgument`] naming `field` and the value, never a panic. Zero is a
/// duration; each setting checks its own range afterwards (e.g. `StoreOptions::validate` for
/// SQLite's timeouts). Windows and TTLs have their own converters with tighter bounds
/// (`ratelimit::window_from_secs`, `cache::ttl_from_secs_f64`).
pub fn duration_from_secs(field: &str, secs: f64) -> crate::error::Result<Duration> {
    let bad = || {
        crate::error::Error::InvalidArgument(format!(
            "{field} must be a finite number of seconds >= 0 (got {secs})"
        ))
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn duration_from_secs_checks_and_names_the_field() {
        assert_eq!(
            duration_from_secs("grace", 1.5).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(duration_from_secs("grace", 0.0).unwrap(), Duration::ZERO);
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e20] {
            let e = duration_from_secs("grace", bad).unwrap_err().to_string();
            assert!(e.contains("grace") && e.contains(&bad.to_string()), "{e}");
        }
    }
}
