//! Rendering a [`Decision`] as HTTP headers.
//!
//! - IETF draft-ietf-httpapi-ratelimit-headers (structured fields):
//!   `RateLimit-Policy: "<name>";q=<limit>;w=<window seconds>` and
//!   `RateLimit: "<name>";r=<remaining>;t=<reset seconds>`.
//! - The classic trio `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (reset as
//!   delta seconds, like the IETF `t`), plus `Retry-After` (delta seconds, RFC 9110) on a denial.
//!
//! The value functions are public so that bindings can cache the constant parts (a policy's
//! `RateLimit-Policy` and `X-RateLimit-Limit` never change) and still render identical text.

use super::algo::{ceil_secs, nanos};
use super::Decision;

/// Header names, in the order [`HeaderWriter::write`] emits them.
pub const HEADER_NAMES: [&str; 6] = [
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
];

/// Appends the `RateLimit-Policy` value.
pub fn policy_value(out: &mut String, name: &str, limit: u64, window_secs: u64) {
    let mut n = itoa::Buffer::new();
    out.push('"');
    out.push_str(name);
    out.push_str("\";q=");
    out.push_str(n.format(limit));
    out.push_str(";w=");
    out.push_str(n.format(window_secs));
}

/// Appends the `RateLimit` value.
pub fn ratelimit_value(out: &mut String, name: &str, remaining: u64, reset_secs: u64) {
    let mut n = itoa::Buffer::new();
    out.push('"');
    out.push_str(name);
    out.push_str("\";r=");
    out.push_str(n.format(remaining));
    out.push_str(";t=");
    out.push_str(n.format(reset_secs));
}

/// A decision's window rounded up to whole seconds (the `w` parameter).
pub fn window_secs(d: &Decision) -> u64 {
    ceil_secs(nanos(d.window))
}

/// Formats the headers into one reusable buffer.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    buf: String,
}

impl HeaderWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `sink(name, value)` for each header of `d`, in the order of [`HEADER_NAMES`].
    pub fn write(&mut self, d: &Decision, sink: &mut dyn FnMut(&'static str, &str)) {
        let reset = d.reset_secs();
        let mut n = itoa::Buffer::new();
        let b = &mut self.buf;
        b.clear();
        policy_value(b, &d.policy, d.limit, window_secs(d));
        sink(HEADER_NAMES[0], b);
        b.clear();
        ratelimit_value(b, &d.policy, d.remaining, reset);
        sink(HEADER_NAMES[1], b);
        sink(HEADER_NAMES[2], n.format(d.limit));
        sink(HEADER_NAMES[3], n.format(d.remaining));
        sink(HEADER_NAMES[4], n.format(reset));
        if let Some(secs) = d.retry_after_secs() {
            sink(HEADER_NAMES[5], n.format(secs));
        }
    }
}
