//! The two counting algorithms as pure state transitions on integer nanoseconds, so that every
//! boundary is exact and testable with a manual clock.

use std::time::Duration;

use super::policy::{Algorithm, Policy};

/// Per-key state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Theoretical arrival time: the bucket is full again at `tat`.
    Gcra { tat: u64 },
    /// Counts of the current fixed window `idx` and of the one before it.
    Window { idx: u64, curr: u64, prev: u64 },
}

/// What one check decided, before it is dressed as a [`super::Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_nanos: u64,
    pub retry_after_nanos: Option<u64>,
}

impl State {
    pub(crate) fn fresh(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Gcra => State::Gcra { tat: 0 },
            Algorithm::SlidingWindow => State::Window {
                idx: 0,
                curr: 0,
                prev: 0,
            },
        }
    }

    fn matches(&self, algorithm: Algorithm) -> bool {
        matches!(
            (self, algorithm),
            (State::Gcra { .. }, Algorithm::Gcra)
                | (State::Window { .. }, Algorithm::SlidingWindow)
        )
    }

    /// From `idle_at` on, this state is indistinguishable from a fresh one and may be dropped.
    pub(crate) fn idle_at(&self, policy: &Policy) -> u64 {
        match *self {
            State::Gcra { tat } => tat,
            State::Window { idx, .. } => {
                idx.saturating_add(2).saturating_mul(policy.window_nanos())
            }
        }
    }
}

/// Applies one request of `cost` at `now`; updates `state` only when allowed.
pub(crate) fn apply(policy: &Policy, state: &mut State, now: u64, cost: u64) -> Outcome {
    if !state.matches(policy.algorithm()) {
        *state = State::fresh(policy.algorithm());
    }
    match state {
        State::Gcra { tat } => gcra(policy, tat, now, cost),
        State::Window { idx, curr, prev } => window(policy, idx, curr, prev, now, cost),
    }
}

/// Gives back `cost` taken by an allowed request (used when a combined check is denied by
/// another policy).
pub(crate) fn refund(policy: &Policy, state: &mut State, now: u64, cost: u64) {
    match state {
        State::Gcra { tat } => {
            let back = cost.saturating_mul(policy.interval_nanos());
            *tat = tat.saturating_sub(back);
        }
        State::Window { idx, curr, prev } => {
            let now_idx = now / policy.window_nanos();
            if *idx == now_idx {
                *curr = curr.saturating_sub(cost);
            } else if *idx + 1 == now_idx {
                *prev = prev.saturating_sub(cost);
            }
        }
    }
}

fn gcra(policy: &Policy, tat: &mut u64, now: u64, cost: u64) -> Outcome {
    let interval = policy.interval_nanos();
    // Burst capacity: `limit` emissions. (Using limit * interval rather than the window keeps the
    // burst at exactly `limit` when the window is not a multiple of the limit.)
    let capacity = policy.limit() * interval;
    let start = (*tat).max(now);
    let new_tat = start.saturating_add(cost * interval);
    let backlog_after = new_tat - now;
    if backlog_after <= capacity {
        *tat = new_tat;
        Outcome {
            allowed: true,
            remaining: (capacity - backlog_after) / interval,
            reset_nanos: backlog_after,
            retry_after_nanos: None,
        }
    } else {
        let backlog = start - now;
        Outcome {
            allowed: false,
            remaining: capacity.saturating_sub(backlog) / interval,
            reset_nanos: backlog,
            retry_after_nanos: Some(backlog_after - capacity),
        }
    }
}

fn window(
    policy: &Policy,
    idx: &mut u64,
    curr: &mut u64,
    prev: &mut u64,
    now: u64,
    cost: u64,
) -> Outcome {
    let w = policy.window_nanos();
    // A decision that read the clock before waiting for its lock may arrive after another one
    // has moved the key to a later window: it counts at the start of that window instead of
    // mistaking it for a stale one (which would zero the counts).
    let now = now.max(idx.saturating_mul(w));
    let now_idx = now / w;
    let elapsed = now % w;
    if *idx != now_idx {
        *prev = if *idx + 1 == now_idx { *curr } else { 0 };
        *curr = 0;
        *idx = now_idx;
    }
    let (w128, limit) = (u128::from(w), u128::from(policy.limit()));
    // Everything is scaled by `w` so that the weighted estimate stays an exact integer:
    // estimate * w = prev * (w - elapsed) + curr * w.
    let prev_part = u128::from(*prev) * u128::from(w - elapsed);
    let used = |curr: u64| prev_part + u128::from(curr) * w128;
    let budget = limit * w128;
    let reset_nanos = w - elapsed;
    if used(*curr + cost) <= budget {
        *curr += cost;
        let remaining = ((budget - used(*curr)) / w128) as u64;
        Outcome {
            allowed: true,
            remaining,
            reset_nanos,
            retry_after_nanos: None,
        }
    } else {
        let remaining = (budget.saturating_sub(used(*curr)) / w128) as u64;
        Outcome {
            allowed: false,
            remaining,
            reset_nanos,
            retry_after_nanos: Some(window_retry_after(policy, *curr, *prev, elapsed, cost)),
        }
    }
}

/// Smallest wait after which the same request would be allowed (no other traffic meanwhile).
fn window_retry_after(policy: &Policy, curr: u64, prev: u64, elapsed: u64, cost: u64) -> u64 {
    let w = u128::from(policy.window_nanos());
    let limit = u128::from(policy.limit());
    let (curr, prev, cost, elapsed) = (
        u128::from(curr),
        u128::from(prev),
        u128::from(cost),
        u128::from(elapsed),
    );
    // Still in this window: the previous window's weight must fall far enough.
    // prev * (w - e) <= (limit - curr - cost) * w  =>  e >= w - (limit - curr - cost) * w / prev
    if curr + cost <= limit && prev > 0 {
        let slack = (limit - curr - cost) * w;
        let e_needed = w - slack / prev; // ceil handled below
        let e_needed = if slack % prev == 0 {
            e_needed
        } else {
            e_needed + 1
        }
        .min(w);
        if e_needed < w {
            return (e_needed.saturating_sub(elapsed)) as u64;
        }
    }
    // Next window: this window's count becomes `prev`.
    // curr * (w - e2) <= (limit - cost) * w  =>  e2 >= w - (limit - cost) * w / curr
    let slack = (limit - cost) * w;
    let e2 = match slack.checked_div(curr) {
        None => 0,
        Some(q) => {
            let e = w.saturating_sub(q);
            if slack % curr == 0 || e == 0 {
                e
            } else {
                e + 1
            }
        }
    };
    ((w - elapsed) + e2) as u64
}

/// Rounds nanoseconds up to whole seconds, as HTTP headers carry them.
pub(crate) fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
