//! Rate limiting: GCRA and sliding-window-counter policies, per key, in process or shared by
//! the processes of a host. The algorithm (`algo.rs`) runs over a state store (`store.rs`).
//!
//! A [`RateLimiter`] applies one [`Policy`] to any number of keys (a route, a client IP, an API
//! key, a user: the caller builds the key). [`check_all`] combines limiters all-or-nothing: a
//! request denied by one policy consumes nothing from the others. Each check returns a
//! [`Decision`] that renders the IETF `RateLimit` / `RateLimit-Policy` headers and the classic
//! `X-RateLimit-*` + `Retry-After`.
//!
//! Invariants:
//! - decisions for one key are linearisable (a shard mutex guards each key's state), so N
//!   concurrent requests against a limit of L allow exactly min(N, L) within a window;
//! - memory stays bounded: a key whose state has become equivalent to a fresh one (idle) is
//!   dropped when its shard fills; if a shard is still full of active keys, a tenth of them is
//!   dropped (counted in [`LimiterStats::evicted_active`]): keys never denied since they were
//!   last idle go first, closest to idle first, and keys recently denied ("limited") only when
//!   nothing else is left, so a flood of fresh keys cannot reset a victim's exhausted bucket.
//!   Dropping can only ever make the limiter more lenient for those keys, never stricter;
//! - time comes from an injectable [`Clock`]; the default is the host-wide monotonic clock.

mod algo;
mod headers;
mod policy;
#[cfg(feature = "redis")]
mod redis;
#[cfg(unix)]
mod shared;
#[cfg(target_os = "linux")]
mod sigbus;
mod store;
#[cfg(all(unix, not(target_os = "linux")))]
mod sigbus {
    //! No SIGBUS guard off Linux: mappings work unguarded.
    pub(crate) fn repairs() -> u64 {
        0
    }
    pub(crate) fn register(_: usize, _: usize, _: i32, _: u64) -> Option<usize> {
        None
    }
    pub(crate) fn unregister(_: usize) {}
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use headers::{policy_value, ratelimit_value, window_secs, HeaderWriter, HEADER_NAMES};
pub use policy::{window_from_secs, Algorithm, Policy, MAX_WINDOW};
#[cfg(feature = "redis")]
pub(crate) use redis::check_policy as check_redis_policy;
#[cfg(feature = "redis")]
pub use redis::MAX_REDIS_WINDOW;
#[cfg(unix)]
pub use shared::{CHECK_INTERVAL_NANOS, LEASE, MAX_SHARED_KEYS, MAX_WAIT};

use crate::clock::{Clock, HostMonotonicClock};
use crate::error::{Error, Result};
use crate::telemetry::metrics::LimiterCounters;
use algo::{ceil_secs, State};
use store::{LocalStore, StateStore, Stores};

/// Default bound on the number of keys one limiter tracks.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Default bound on the number of keys of a host-shared limiter (its file takes 32 bytes per
/// key slot, about 3 MiB for this bound).
pub const DEFAULT_SHARED_MAX_KEYS: usize = 100_000;

/// The default key bound of a limiter: [`DEFAULT_SHARED_MAX_KEYS`] for a host-shared one,
/// [`DEFAULT_MAX_KEYS`] otherwise. Every door takes its default from here, so that processes
/// opened through different doors agree on a shared state file (whose name records the bound).
pub fn default_max_keys(host_shared: bool) -> usize {
    if host_shared {
        DEFAULT_SHARED_MAX_KEYS
    } else {
        DEFAULT_MAX_KEYS
    }
}

/// How [`RateLimiter::open`] keeps its state; `Default` is an in-process limiter with the
/// default key bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimiterOptions {
    /// Share the state with every process of this host that opens the same path (see
    /// [`RateLimiter::host_shared`]); `None` keeps it in this process.
    pub shared_path: Option<std::path::PathBuf>,
    /// Most keys tracked at once; `None` is [`default_max_keys`] for the kind of limiter.
    pub max_keys: Option<usize>,
}

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policy's limit (units per window).
    pub limit: u64,
    /// Units still available right after this decision.
    pub remaining: u64,
    /// Time until the quota is fully available again (GCRA) or the current window ends
    /// (sliding window).
    pub reset: Duration,
    /// When denied: the time after which the same request would be allowed.
    pub retry_after: Option<Duration>,
    /// The deciding policy's name.
    pub policy: Arc<str>,
    /// The deciding policy's window.
    pub window: Duration,
    /// Decided without the state store: a Redis-backed limiter with `on_redis_error = "open"`
    /// could not reach Redis and allowed the request (`remaining` is then `limit - cost`, as for
    /// a fresh key, and `reset` zero). Always `false` otherwise.
    pub degraded: bool,
}

impl Decision {
    /// `reset` rounded up to whole seconds.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(algo::nanos(self.reset))
    }

    /// `retry_after` rounded up to whole seconds (at least 1 when denied).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(algo::nanos(d)).max(1))
    }

    /// The response headers for this decision, as (name, value) pairs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(6);
        self.write_headers(&mut |name, value| out.push((name, value.to_owned())));
        out
    }

    /// Streams the headers to `sink` without allocating a vector (see [`HeaderWriter`]).
    pub fn write_headers(&self, sink: &mut dyn FnMut(&'static str, &str)) {
        HeaderWriter::new().write(self, sink);
    }
}

/// What a Redis-backed limiter does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnRedisError {
    /// Allow the request: the decision is `allowed` and flagged [`Decision::degraded`]
    /// (availability first: a Redis outage does not take the API down, limits are off meanwhile).
    Open,
    /// Refuse to decide: the check returns [`crate::RedisError::Unavailable`] (limits first: the
    /// caller answers 503, or whatever it chooses).
    #[default]
    Closed,
}

impl OnRedisError {
    /// `"open"` or `"closed"`, as in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Open => "open",
            OnRedisError::Closed => "closed",
        }
    }

    /// Parses `"open"` or `"closed"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "open" => Ok(OnRedisError::Open),
            "closed" => Ok(OnRedisError::Closed),
            _ => Err(crate::Error::InvalidArgument(format!(
                "on_redis_error {s:?}: use \"open\" or \"closed\""
            ))),
        }
    }
}

/// Counters of one limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests denied.
    pub denied: u64,
    /// Keys currently tracked.
    pub keys: u64,
    /// Keys dropped while still active because the key bound was reached.
    pub evicted_active: u64,
}

/// A policy and its name, shared with the decisions it makes.
type NamedPolicy = (Arc<Policy>, Arc<str>);

/// One policy applied per key. `Send + Sync`; share it by reference or `Arc`.
pub struct RateLimiter {
    policy: Arc<Policy>,
    policy_name: Arc<str>,
    /// Where the per-key states live (in process, or host-shared); the algorithm is the same.
    store: Stores,
    clock: Arc<dyn Clock>,
    has_overrides: AtomicBool,
    overrides: RwLock<HashMap<Box<str>, NamedPolicy>>,
    /// Allowed / denied, also read by the metrics registry at scrape time.
    counters: Arc<LimiterCounters>,
    evicted_active: AtomicU64,
    degraded: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter tracking at most [`DEFAULT_MAX_KEYS`] keys, on the host monotonic clock.
    pub fn new(policy: Policy) -> Self {
        Self::with_options(policy, DEFAULT_MAX_KEYS, Arc::new(HostMonotonicClock))
            .expect("DEFAULT_MAX_KEYS is valid")
    }

    /// A limiter as `options` say (in process or host-shared, with the default key bound unless
    /// one is given), on the host monotonic clock: the one constructor the configuration and
    /// every front door use, so they apply the same defaults. A shared path on a host without
    /// Unix shared memory is an [`Error::InvalidArgument`].
    pub fn open(policy: Policy, options: LimiterOptions) -> Result<Self> {
        let max_keys = options
            .max_keys
            .unwrap_or_else(|| default_max_keys(options.shared_path.is_some()));
        if max_keys == 0 {
            return Err(Error::InvalidArgument(
                "max_keys must be at least 1 (got 0)".into(),
            ));
        }
        match options.shared_path {
            #[cfg(unix)]
            Some(path) => Self::host_shared(policy, path, max_keys),
            #[cfg(not(unix))]
            Some(path) => Err(Error::InvalidArgument(format!(
                "host-shared rate limiters need a Unix host (shared path {})",
                path.display()
            ))),
            None => Self::with_options(policy, max_keys, Arc::new(HostMonotonicClock)),
        }
    }

    /// A limiter with its own key bound and clock.
    pub fn with_options(policy: Policy, max_keys: usize, clock: Arc<dyn Clock>) -> Result<Self> {
        if max_keys == 0 {
            return Err(Error::InvalidArgument("max_keys must be at least 1".into()));
        }
        let _span = tracing::debug_span!(
            "ratelimit.new",
            keel.ratelimit.policy = policy.name(),
            keel.ratelimit.limit = policy.limit()
        )
        .entered();
        let policy_name: Arc<str> = Arc::from(policy.name());
        let counters = Arc::new(LimiterCounters::default());
        crate::telemetry::metrics::register_limiter(&policy_name, &counters);
        Ok(Self {
            policy: Arc::new(policy),
            policy_name,
            store: Stores::Local(LocalStore::new(max_keys)),
            clock,
            has_overrides: AtomicBool::new(false),
            overrides: RwLock::new(HashMap::new()),
            counters,
            evicted_active: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
        })
    }

    /// A limiter whose state is shared by every process on this host that opens the same
    /// `path` (e.g. `/dev/shm/keel-ratelimit-api`) with the same policy and `max_keys`: all of
    /// them count against one budget per key. Time is the host-wide monotonic clock. Overrides
    /// stay per process.
    ///
    /// `path` names a family of files: the state lives in
    /// `<path>.v2.<algorithm>.<limit>per<window>.<slots>keys` (see [`Self::shared_path`]),
    /// created on first use with mode 0600, so that processes with another policy or key bound
    /// (a rolling redeploy) use their own file instead of failing. A file removed or replaced
    /// while in use is noticed within [`CHECK_INTERVAL_NANOS`] of decisions and re-attached; a
    /// truncated one is repaired; a stripe lock abandoned by a dead process is taken over after
    /// [`LEASE`]. `max_keys` may be at most [`MAX_SHARED_KEYS`].
    #[cfg(unix)]
    pub fn host_shared(
        policy: Policy,
        path: impl AsRef<std::path::Path>,
        max_keys: usize,
    ) -> Result<Self> {
        let _span = tracing::debug_span!(
            "ratelimit.open_shared",
            keel.ratelimit.policy = policy.name(),
            keel.ratelimit.max_keys = max_keys
        )
        .entered();
        Self::host_shared_with_clock(policy, path, max_keys, Arc::new(HostMonotonicClock))
    }

    /// [`Self::host_shared`] on another clock (tests: the shared store's behaviour under a
    /// manual clock; in production every process must use the host-wide monotonic clock). The
    /// clock must never be behind the host's monotonic clock by more than [`LEASE`]: the stripe
    /// locks are leases stamped with the decision time.
    #[cfg(unix)]
    pub(crate) fn host_shared_with_clock(
        policy: Policy,
        path: impl AsRef<std::path::Path>,
        max_keys: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let table = shared::SharedTable::open(path.as_ref(), &policy, max_keys)?;
        let mut limiter = Self::with_options(policy, max_keys, clock)?;
        limiter.store = Stores::Shared(table);
        Ok(limiter)
    }

    /// The state file of a host-shared limiter (derived from the path it was opened with).
    #[cfg(unix)]
    pub fn shared_path(&self) -> Option<&std::path::Path> {
        match &self.store {
            Stores::Shared(t) => Some(t.path()),
            _ => None,
        }
    }

    /// Whether this limiter's state is shared with other processes.
    pub fn is_host_shared(&self) -> bool {
        match &self.store {
            Stores::Local(_) => false,
            #[cfg(unix)]
            Stores::Shared(_) => true,
            #[cfg(feature = "redis")]
            Stores::Redis(_) => false,
        }
    }

    /// A limiter whose state lives in Redis, shared by every host that uses the same Redis (and
    /// key prefix) with a policy of the same name: one global budget per key. Decisions run in a
    /// server-side script, on the Redis server's clock. `on_error` chooses what a check does
    /// when Redis cannot be reached (see [`OnRedisError`]). The policy's window must be whole
    /// microseconds and at most [`MAX_REDIS_WINDOW`].
    #[cfg(feature = "redis")]
    pub fn redis(
        policy: Policy,
        redis: Arc<crate::redis::Redis>,
        on_error: OnRedisError,
    ) -> Result<Self> {
        Self::redis_with(policy, redis, on_error, None)
    }

    /// [`Self::redis`] on a manual clock instead of the server's (tests).
    #[cfg(feature = "redis")]
    pub(crate) fn redis_with(
        policy: Policy,
        redis: Arc<crate::redis::Redis>,
        on_error: OnRedisError,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self> {
        redis::check_policy(&policy)?;
        let server_time = clock.is_none();
        let clock = clock.unwrap_or_else(|| Arc::new(HostMonotonicClock));
        let store = redis::RedisStore::new(redis, policy.name(), on_error, server_time);
        let mut limiter = Self::with_options(policy, 1, clock)?;
        limiter.store = Stores::Redis(store);
        Ok(limiter)
    }

    /// Whether this limiter's state lives in Redis.
    pub fn is_redis(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Stores::Redis(_) = &self.store {
            return true;
        }
        false
    }

    /// What a Redis-backed limiter does when Redis is down (`None` for other limiters).
    #[cfg(feature = "redis")]
    pub fn on_redis_error(&self) -> Option<OnRedisError> {
        match &self.store {
            Stores::Redis(r) => Some(r.on_error),
            _ => None,
        }
    }

    /// Decisions made without Redis because it was unreachable (`on_redis_error = "open"`).
    pub fn degraded_decisions(&self) -> u64 {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The default policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The default policy's name, as shared by every [`Decision`] it makes (so a binding can
    /// recognise those decisions with `Arc::ptr_eq` and reuse what it rendered for the policy).
    pub fn policy_name(&self) -> &Arc<str> {
        &self.policy_name
    }

    /// Uses `policy` instead of the default for `key` (e.g. a paying customer's API key).
    /// In host-shared mode the override must keep the default's algorithm and window (only the
    /// limit may change), because every process reads the shared state with the default's
    /// timeline; anything else is an [`RateLimitError::InvalidPolicy`] error.
    pub fn set_override(&self, key: &str, policy: Policy) -> Result<()> {
        #[cfg(feature = "redis")]
        if self.is_redis() {
            redis::check_policy(&policy)?;
        }
        if self.is_host_shared()
            && (policy.algorithm() != self.policy.algorithm()
                || policy.window() != self.policy.window())
        {
            return Err(crate::error::RateLimitError::InvalidPolicy(
                "in host-shared mode an override may change the limit only, not the algorithm \
                 or the window"
                    .into(),
            )
            .into());
        }
        let name: Arc<str> = Arc::from(policy.name());
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        map.insert(key.into(), (Arc::new(policy), name));
        self.has_overrides.store(true, Ordering::Release);
        Ok(())
    }

    /// Goes back to the default policy for `key`; returns whether an override existed.
    pub fn remove_override(&self, key: &str) -> bool {
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        let removed = map.remove(key).is_some();
        self.has_overrides.store(!map.is_empty(), Ordering::Release);
        removed
    }

    fn policy_for(&self, key: &str) -> (Arc<Policy>, Arc<str>) {
        if self.has_overrides.load(Ordering::Acquire) {
            let map = self.overrides.read().unwrap_or_else(|p| p.into_inner());
            if let Some((p, n)) = map.get(key) {
                return (p.clone(), n.clone());
            }
        }
        (self.policy.clone(), self.policy_name.clone())
    }

    fn now(&self) -> u64 {
        algo::nanos(self.clock.now())
    }

    /// Checks one request of `cost` units for `key` and, if allowed, counts it.
    /// A cost of 0 or above the limit is an error: such a request could never be decided.
    pub fn check(&self, key: &str, cost: u64) -> Result<Decision> {
        // No span: a decision is the hot path (the metrics registry counts decisions).
        if self.has_overrides.load(Ordering::Acquire) {
            let (policy, name) = self.policy_for(key);
            return self.decide(key, cost, &policy, &name);
        }
        self.decide(key, cost, &self.policy, &self.policy_name)
    }

    fn decide(&self, key: &str, cost: u64, policy: &Policy, name: &Arc<str>) -> Result<Decision> {
        policy.check_cost(cost)?;
        let now = self.now();
        #[cfg(feature = "redis")]
        if let Stores::Redis(r) = &self.store {
            let items = [redis::Item {
                store: r,
                key,
                policy,
            }];
            return match r.run(false, now, cost, &items) {
                Ok((_, outcomes)) => match outcomes.first() {
                    Some(o) => Ok(self.dress(*o, policy, name)),
                    None => Err(crate::RedisError::Command {
                        endpoint: r.redis.endpoint().to_owned(),
                        reason: "the rate-limit script returned no decision".into(),
                    }
                    .into()),
                },
                Err(e) => self.on_store_error(e, cost, policy, name),
            };
        }
        let outcome = self.with_state(key, policy, now, |state| {
            let outcome = algo::apply(policy, state, now, cost);
            (outcome, !outcome.allowed)
        })?;
        Ok(self.dress(outcome, policy, name))
    }

    /// A fail-open limiter allows when its store is unreachable, flagging the decision.
    #[cfg(feature = "redis")]
    fn on_store_error(
        &self,
        e: Error,
        cost: u64,
        policy: &Policy,
        name: &Arc<str>,
    ) -> Result<Decision> {
        if let (Stores::Redis(r), Error::Redis(crate::RedisError::Unavailable { .. })) =
            (&self.store, &e)
        {
            if r.on_error == OnRedisError::Open {
                self.degraded.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    keel.ratelimit.policy = policy.name(),
                    error = %e,
                    "Redis unreachable; request allowed (on_redis_error = open)"
                );
                self.counters.allowed.fetch_add(1, Ordering::Relaxed);
                return Ok(Decision {
                    allowed: true,
                    limit: policy.limit(),
                    remaining: policy.limit().saturating_sub(cost),
                    reset: Duration::ZERO,
                    retry_after: None,
                    policy: name.clone(),
                    window: policy.window(),
                    degraded: true,
                });
            }
        }
        let _ = (cost, policy, name);
        Err(e)
    }

    fn dress(&self, outcome: algo::Outcome, policy: &Policy, name: &Arc<str>) -> Decision {
        let counter = if outcome.allowed {
            &self.counters.allowed
        } else {
            &self.counters.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Decision {
            allowed: outcome.allowed,
            limit: policy.limit(),
            remaining: outcome.remaining,
            reset: Duration::from_nanos(outcome.reset_nanos),
            retry_after: outcome.retry_after_nanos.map(Duration::from_nanos),
            policy: name.clone(),
            window: policy.window(),
            degraded: false,
        }
    }

    fn refund(&self, key: &str, cost: u64) {
        let (policy, _) = self.policy_for(key);
        let now = self.now();
        #[cfg(feature = "redis")]
        if let Stores::Redis(r) = &self.store {
            let items = [redis::Item {
                store: r,
                key,
                policy: &policy,
            }];
            if let Err(e) = r.run(true, now, cost, &items) {
                tracing::warn!(error = %e, "rate-limit refund failed; the cost stays counted");
            }
            self.counters.refunded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let refunded = self.with_state(key, &policy, now, |state| {
            (algo::refund(&policy, state, now, cost), false)
        });
        if let Err(e) = refunded {
            tracing::warn!(error = %e, "rate-limit refund failed; the cost stays counted");
        }
        // The exported counters stay monotonic (a Prometheus counter never goes down): the
        // refund is counted on its own and `stats` nets it out.
        self.counters.refunded.fetch_add(1, Ordering::Relaxed);
    }

    /// The algorithm's transition `f` on `key`'s state, in whichever store this limiter uses.
    #[inline]
    fn with_state<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<T> {
        let (out, evicted) = self.store.measure_and_replace(key, policy, now, f)?;
        if evicted > 0 {
            self.evicted_active.fetch_add(evicted, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Counters and the number of tracked keys.
    pub fn stats(&self) -> LimiterStats {
        let keys = self.store.len();
        let refunded = self.counters.refunded.load(Ordering::Relaxed);
        let allowed = self.counters.allowed.load(Ordering::Relaxed);
        LimiterStats {
            allowed: allowed.saturating_sub(refunded),
            denied: self.counters.denied.load(Ordering::Relaxed) + refunded,
            keys,
            evicted_active: self.evicted_active.load(Ordering::Relaxed),
        }
    }

    /// Forgets every key's state (all keys start fresh; in host-shared mode, for every process).
    pub fn reset(&self) {
        if let Err(e) = self.store.clear() {
            tracing::warn!(error = %e, "rate-limit reset incomplete (a busy stripe, or Redis)");
        }
    }
}

/// Checks one request against several limiters, all-or-nothing: if any denies, the others are
/// refunded and the first denial is returned; if all allow, the decision with the fewest
/// remaining units is returned (ties: the earlier check). `checks` must not be empty.
pub fn check_all(checks: &[(&RateLimiter, &str)], cost: u64) -> Result<Decision> {
    if checks.is_empty() {
        return Err(Error::InvalidArgument(
            "check_all needs at least one limiter".into(),
        ));
    }
    #[cfg(feature = "redis")]
    if let Some(d) = check_all_redis(checks, cost) {
        return d;
    }
    let mut best: Option<Decision> = None;
    for (i, (limiter, key)) in checks.iter().enumerate() {
        let decision = match limiter.check(key, cost) {
            Ok(d) => d,
            Err(e) => {
                refund_all(&checks[..i], cost);
                return Err(e);
            }
        };
        if !decision.allowed {
            refund_all(&checks[..i], cost);
            return Ok(decision);
        }
        if best
            .as_ref()
            .is_none_or(|b| decision.remaining < b.remaining)
        {
            best = Some(decision);
        }
    }
    Ok(best.expect("checks is not empty"))
}

/// `check_all` over limiters that all live on one Redis: one script call, all-or-nothing in
/// Redis. `None` when the limiters are not all on one Redis.
#[cfg(feature = "redis")]
fn check_all_redis(checks: &[(&RateLimiter, &str)], cost: u64) -> Option<Result<Decision>> {
    let mut stores = Vec::with_capacity(checks.len());
    for (limiter, _) in checks {
        match &limiter.store {
            Stores::Redis(r) => stores.push(r),
            _ => return None,
        }
    }
    let first = stores[0];
    if stores
        .iter()
        .any(|s| !Arc::ptr_eq(&s.redis, &first.redis) || s.server_time() != first.server_time())
    {
        return None;
    }
    let policies: Vec<NamedPolicy> = checks.iter().map(|(l, k)| l.policy_for(k)).collect();
    Some((|| {
        for (p, _) in &policies {
            p.check_cost(cost)?;
        }
        let now = checks[0].0.now();
        let items: Vec<redis::Item<'_>> = checks
            .iter()
            .zip(&stores)
            .zip(&policies)
            .map(|(((_, key), store), (policy, _))| redis::Item { store, key, policy })
            .collect();
        match first.run(false, now, cost, &items) {
            Ok((denier, outcomes)) => {
                if outcomes.len() != denier.map_or(checks.len(), |d| d + 1) {
                    return Err(crate::RedisError::Command {
                        endpoint: first.redis.endpoint().to_owned(),
                        reason: "the rate-limit script returned too few decisions".into(),
                    }
                    .into());
                }
                let mut best: Option<Decision> = None;
                for (i, o) in outcomes.iter().enumerate() {
                    let (limiter, _) = checks[i];
                    let (policy, name) = &policies[i];
                    let d = limiter.dress(*o, policy, name);
                    if denier.is_some() {
                        if Some(i) == denier {
                            return Ok(d);
                        }
                        // Counted as allowed by `dress`; undone as in a refund.
                        limiter.counters.refunded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if best.as_ref().is_none_or(|b| d.remaining < b.remaining) {
                        best = Some(d);
                    }
                }
                best.ok_or_else(|| Error::InvalidArgument("check_all: no decision".into()))
            }
            Err(e) => {
                // Fail closed if any limiter says so; else a degraded decision of the policy with
                // the fewest units left.
                if let Some((limiter, _)) = checks
                    .iter()
                    .find(|(l, _)| l.on_redis_error() == Some(OnRedisError::Closed))
                {
                    return limiter.on_store_error(e, cost, &policies[0].0, &policies[0].1);
                }
                let (i, _) = policies
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (p, _))| p.limit())
                    .expect("checks is not empty");
                checks[i]
                    .0
                    .on_store_error(e, cost, &policies[i].0, &policies[i].1)
            }
        }
    })())
}

fn refund_all(checks: &[(&RateLimiter, &str)], cost: u64) {
    for (limiter, key) in checks {
        limiter.refund(key, cost);
    }
}

#[cfg(test)]
mod tests;
