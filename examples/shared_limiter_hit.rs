//! One request through the Rust door against a host-shared rate limiter opened with the Rust
//! door's defaults (`RateLimiter::open` with no key bound: the core's
//! [`keel::ratelimit::default_max_keys`] for a shared limiter): policy
//! [`Policy::DEFAULT_NAME`], 10 per hour, the default algorithm, key "k". Prints
//! `allowed remaining`. Driven by `tests/python/test_shared_limiter_doors.py`, which opens the
//! same file from Python and C: the three must count against one budget.
//!
//! Usage: `cargo run --example shared_limiter_hit -- PATH`

use std::time::Duration;

use keel::ratelimit::{Algorithm, LimiterOptions, Policy, RateLimiter};

fn main() -> keel::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: shared_limiter_hit PATH");
        std::process::exit(2);
    };
    let policy = Policy::new(
        Policy::DEFAULT_NAME,
        10,
        Duration::from_secs(3600),
        Algorithm::default(),
    )?;
    let limiter = RateLimiter::open(
        policy,
        LimiterOptions {
            shared_path: Some(path.into()),
            ..LimiterOptions::default()
        },
    )?;
    let d = limiter.check("k", 1)?;
    println!("{} {}", u8::from(d.allowed), d.remaining);
    Ok(())
}
