//! Rate-limit policies: how many units of cost a key may spend per window, and how.

use std::time::Duration;

use crate::error::{RateLimitError, Result};

/// How a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: a token bucket of `limit` tokens refilled evenly over
    /// `window` (one token every `window / limit`). Smooth, allows a burst of `limit`.
    Gcra,
    /// Sliding-window counter: the current fixed window's count plus the previous window's,
    /// weighted by how much of it still overlaps the sliding window.
    SlidingWindow,
}

impl Algorithm {
    /// The algorithm of a policy that does not name one (every door and the configuration).
    pub const DEFAULT: Algorithm = Algorithm::Gcra;

    /// The lowercase name used in configuration and bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding_window",
        }
    }

    /// Parses `"gcra"` or `"sliding_window"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "gcra" => Ok(Algorithm::Gcra),
            "sliding_window" | "sliding-window" => Ok(Algorithm::SlidingWindow),
            _ => Err(RateLimitError::InvalidPolicy(format!(
                "unknown algorithm {name:?} (expected \"gcra\" or \"sliding_window\")"
            ))
            .into()),
        }
    }
}

impl Default for Algorithm {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A window given in seconds (the unit of the Python door and of configuration files), checked:
/// NaN, infinite, zero, negative or longer than [`MAX_WINDOW`] is an
/// [`RateLimitError::InvalidPolicy`] naming the value, never a panic.
pub fn window_from_secs(secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_WINDOW.as_secs_f64() {
        return Err(RateLimitError::InvalidPolicy(format!(
            "window must be a positive, finite number of seconds, at most one year (got {secs})"
        ))
        .into());
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|e| RateLimitError::InvalidPolicy(format!("window of {secs} seconds: {e}")).into())
}

/// At most `limit` units of cost per `window`, per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    name: String,
    limit: u64,
    window: Duration,
    algorithm: Algorithm,
}

/// Longest window accepted (one year).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

impl Policy {
    /// The name of a policy whose door does not ask for one (the Python `RateLimiter`).
    pub const DEFAULT_NAME: &'static str = "default";

    /// A policy; `name` appears in the `RateLimit-Policy` header, so it must be a token of
    /// ASCII letters, digits, `_`, `-` or `.` (at most 64 bytes).
    pub fn new(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
        algorithm: Algorithm,
    ) -> Result<Self> {
        let name = name.into();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid_name {
            return Err(RateLimitError::InvalidPolicy(
                "name must be 1-64 ASCII letters, digits, '_', '-' or '.'".into(),
            )
            .into());
        }
        if limit == 0 {
            return Err(
                RateLimitError::InvalidPolicy("limit must be at least 1 (got 0)".into()).into(),
            );
        }
        if window < Duration::from_millis(1) || window > MAX_WINDOW {
            return Err(RateLimitError::InvalidPolicy(format!(
                "window must be between 1 ms and one year (got {window:?})"
            ))
            .into());
        }
        if window.as_nanos() / u128::from(limit) == 0 {
            return Err(RateLimitError::InvalidPolicy(format!(
                "limit {limit} is too high for the window {window:?} (more than one unit per \
                 nanosecond)"
            ))
            .into());
        }
        Ok(Self {
            name,
            limit,
            window,
            algorithm,
        })
    }

    /// A GCRA policy.
    pub fn gcra(name: impl Into<String>, limit: u64, window: Duration) -> Result<Self> {
        Self::new(name, limit, window, Algorithm::Gcra)
    }

    /// A sliding-window-counter policy.
    pub fn sliding_window(name: impl Into<String>, limit: u64, window: Duration) -> Result<Self> {
        Self::new(name, limit, window, Algorithm::SlidingWindow)
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Units of cost allowed per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The counting algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn window_nanos(&self) -> u64 {
        u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds per unit of cost (GCRA's emission interval).
    pub(crate) fn interval_nanos(&self) -> u64 {
        self.window_nanos() / self.limit
    }

    pub(crate) fn check_cost(&self, cost: u64) -> Result<()> {
        if cost == 0 || cost > self.limit {
            return Err(RateLimitError::InvalidCost {
                cost,
                limit: self.limit,
                policy: self.name.clone(),
            }
            .into());
        }
        Ok(())
    }
}
