//! One request through the Rust door against a host-shared rate limiter opened with the Rust
//! door's default key bound ([`keel::ratelimit::DEFAULT_SHARED_MAX_KEYS`]): policy "default",
//! 10 per hour, GCRA, key "k". Prints `allowed remaining`. Driven by
//! `tests/python/test_shared_limiter_doors.py`, which opens the same file from Python and C:
//! the three must count against one budget.
//!
//! Usage: `cargo run --example shared_limiter_hit -- PATH`

use std::time::Duration;

use keel::ratelimit::{Policy, RateLimiter, DEFAULT_SHARED_MAX_KEYS};

fn main() -> keel::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: shared_limiter_hit PATH");
        std::process::exit(2);
    };
    let policy = Policy::gcra("default", 10, Duration::from_secs(3600))?;
    let limiter = RateLimiter::host_shared(policy, &path, DEFAULT_SHARED_MAX_KEYS)?;
    let d = limiter.check("k", 1)?;
    println!("{} {}", u8::from(d.allowed), d.remaining);
    Ok(())
}
