//! The Redis state store: the algorithm of `algo.rs` run server-side by one Lua script
//! (`redis.lua`, sent with EVALSHA and loaded on NOSCRIPT), so that a decision — or a whole
//! [`super::check_all`] over limiters on one Redis — is one round trip and atomic for every
//! client of that Redis.
//!
//! - Time is the Redis server's (`TIME`), so hosts with skewed clocks agree; tests pass a manual
//!   clock's reading instead.
//! - Keys: `{<prefix>:rl:<policy>}:<key>` (the limiter's default policy name). The braces are a
//!   Redis Cluster hash tag: every key of one limiter is in one slot, so a limiter's traffic is
//!   on one node (the trade-off: no spreading of one hot limiter over a cluster), and a
//!   `check_all` over several limiters reaches several slots — fine on a single Redis or with
//!   Sentinel, which is what this client speaks; a cluster would need the limiters of one
//!   `check_all` to share a prefix tag.
//! - A state key expires when its state has become equivalent to a fresh one (GCRA: at the
//!   theoretical arrival time; sliding window: two windows after its window started), so Redis
//!   holds only active keys and `max_keys` does not apply.
//! - Windows must be whole microseconds and at most [`MAX_REDIS_WINDOW`] (the script's integers
//!   are Lua doubles: exact below 2^53).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::algo::Outcome;
use super::policy::{Algorithm, Policy};
use super::OnRedisError;
use crate::error::{RateLimitError, Result};
use crate::redis::Redis;

/// Longest window of a Redis-backed policy (30 days).
pub const MAX_REDIS_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

static SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(include_str!("redis.lua")));

/// Checks that `policy` can run in the script.
pub(crate) fn check_policy(policy: &Policy) -> Result<()> {
    let w = policy.window();
    if w > MAX_REDIS_WINDOW || !w.subsec_nanos().is_multiple_of(1000) {
        return Err(RateLimitError::InvalidPolicy(format!(
            "a Redis-backed policy needs a window of whole microseconds, at most 30 days \
             (got {w:?})"
        ))
        .into());
    }
    Ok(())
}

pub(crate) struct RedisStore {
    pub(crate) redis: Arc<Redis>,
    key_base: String,
    pub(crate) on_error: OnRedisError,
    /// Whether time is the server's (`false` in tests: the limiter's clock).
    server_time: bool,
}

/// One (store, key, policy) of a script call.
pub(crate) struct Item<'a> {
    pub store: &'a RedisStore,
    pub key: &'a str,
    pub policy: &'a Policy,
}

impl RedisStore {
    pub(crate) fn new(
        redis: Arc<Redis>,
        policy_name: &str,
        on_error: OnRedisError,
        server_time: bool,
    ) -> Self {
        let key_base = format!("{{{}:rl:{policy_name}}}:", redis.prefix());
        Self {
            redis,
            key_base,
            on_error,
            server_time,
        }
    }

    pub(crate) fn server_time(&self) -> bool {
        self.server_time
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.key_base.len() + key.len());
        k.extend_from_slice(self.key_base.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Runs the script over `items` (all on this store's Redis). `now` is used only when the
    /// store is not on server time. Check: `(denier, outcomes)`, where `denier` is the index of
    /// the first denying item and `outcomes` the evaluated items' outcomes.
    pub(crate) fn run(
        &self,
        refund: bool,
        now: u64,
        cost: u64,
        items: &[Item<'_>],
    ) -> Result<(Option<usize>, Vec<Outcome>)> {
        let mut inv = SCRIPT.prepare_invoke();
        inv.arg(if refund { "refund" } else { "check" });
        if self.server_time {
            inv.arg("").arg("");
        } else {
            inv.arg(now / 1000).arg(now % 1000);
        }
        inv.arg(cost);
        for it in items {
            inv.key(it.store.key(it.key));
            let alg = match it.policy.algorithm() {
                Algorithm::Gcra => 1u8,
                Algorithm::SlidingWindow => 2u8,
            };
            let window_us = u64::try_from(it.policy.window().as_micros()).unwrap_or(u64::MAX);
            inv.arg(alg).arg(it.policy.limit()).arg(window_us);
        }
        let reply: Vec<i64> = self.redis.with_conn(|c| inv.invoke(c))?;
        if refund {
            return Ok((None, Vec::new()));
        }
        let bad = || {
            crate::Error::from(crate::RedisError::Command {
                endpoint: self.redis.endpoint().to_owned(),
                reason: "unexpected reply from the rate-limit script".into(),
            })
        };
        let (&denier, rest) = reply.split_first().ok_or_else(bad)?;
        let (&n, rest) = rest.split_first().ok_or_else(bad)?;
        if rest.len() != 4 * usize::try_from(n).map_err(|_| bad())? {
            return Err(bad());
        }
        let outcomes = rest
            .chunks_exact(4)
            .map(|o| Outcome {
                allowed: o[0] == 1,
                remaining: o[1].max(0) as u64,
                reset_nanos: o[2].max(0) as u64,
                retry_after_nanos: (o[3] >= 0).then_some(o[3] as u64),
            })
            .collect();
        let denier = usize::try_from(denier)
            .ok()
            .filter(|&d| d > 0)
            .map(|d| d - 1);
        Ok((denier, outcomes))
    }

    /// Deletes every state key of this limiter (SCAN + UNLINK).
    pub(crate) fn clear(&self) -> Result<()> {
        self.scan(true).map(|_| ())
    }

    /// The number of this limiter's live state keys (SCAN: O(keys in Redis); for tests and
    /// statistics, not for a request path). 0 when Redis is unreachable.
    pub(crate) fn count(&self) -> u64 {
        self.scan(false).unwrap_or(0)
    }

    fn scan(&self, delete: bool) -> Result<u64> {
        let mut pattern = String::new();
        for ch in self.key_base.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        self.redis.with_conn(|c| {
            let mut cursor: u64 = 0;
            let mut seen = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                seen += keys.len() as u64;
                if delete && !keys.is_empty() {
                    ::redis::cmd("UNLINK").arg(&keys).query::<()>(c)?;
                }
                if next == 0 {
                    return Ok(seen);
                }
                cursor = next;
            }
        })
    }
}
