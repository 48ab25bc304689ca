//! Rate limiting over C: one `keel_ratelimiter` per policy, decisions as plain structs.
//!
//! A `keel_decision` is self-contained (it copies the deciding policy's name), so C code can
//! keep it, log it or render its headers with `keel_decision_format_headers` after the limiter
//! is gone.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use keel_core::ratelimit::{
    check_all, Algorithm, Decision, HeaderWriter, LimiterOptions, Policy, RateLimiter,
};

use crate::error::{keel_result, FfiError, KEEL_ERR_BUFFER_TOO_SMALL, KEEL_ERR_INVALID_ARGUMENT};
use crate::ffi::{self, try_array, try_out, try_ref, try_str};
use crate::panic::ffi_guard;

/// Token bucket semantics (generic cell rate algorithm): a burst of `limit`, refilled evenly.
pub const KEEL_ALGORITHM_GCRA: i32 = 0;
/// Sliding-window counter: this window's count plus the previous one's, weighted by overlap.
pub const KEEL_ALGORITHM_SLIDING_WINDOW: i32 = 1;

/// Longest policy name, in bytes.
pub const KEEL_POLICY_NAME_MAX: usize = 64;
/// Size of `keel_decision.policy`: the longest name plus its NUL.
pub const KEEL_POLICY_NAME_SIZE: usize = 65;
const _: () = assert!(KEEL_POLICY_NAME_SIZE == KEEL_POLICY_NAME_MAX + 1);

/// One rate-limit policy applied per key (route, client IP, API key, user: the caller builds
/// the key).
///
/// Thread-safety: every function may be called concurrently on one `keel_ratelimiter`, except
/// `keel_ratelimiter_free`, which must be called once no other call on it is in flight.
pub struct keel_ratelimiter {
    pub(crate) inner: Arc<RateLimiter>,
}

/// The outcome of one check. Plain data owned by the caller; layout is part of the ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whether `retry_after_ms` is meaningful (only when denied).
    pub has_retry_after: bool,
    /// The deciding policy's limit (units per window).
    pub limit: u64,
    /// Units still available right after this decision.
    pub remaining: u64,
    /// Milliseconds until the quota is fully available again (GCRA) or the window ends.
    pub reset_ms: u64,
    /// When denied: milliseconds after which the same request would be allowed.
    pub retry_after_ms: u64,
    /// The deciding policy's window, in milliseconds.
    pub window_ms: u64,
    /// The deciding policy's name, NUL-terminated ASCII.
    pub policy: [c_char; KEEL_POLICY_NAME_SIZE],
    /// Allowed without consulting the state store: a Redis limiter with `on_redis_error =
    /// "open"` could not reach Redis. Always false otherwise.
    pub degraded: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl From<&Decision> for keel_decision {
    fn from(d: &Decision) -> Self {
        let mut policy = [0 as c_char; KEEL_POLICY_NAME_SIZE];
        for (dst, src) in policy
            .iter_mut()
            .zip(d.policy.bytes().take(KEEL_POLICY_NAME_MAX))
        {
            *dst = src as c_char;
        }
        Self {
            allowed: d.allowed,
            has_retry_after: d.retry_after.is_some(),
            limit: d.limit,
            remaining: d.remaining,
            reset_ms: ceil_millis(d.reset),
            retry_after_ms: d.retry_after.map_or(0, ceil_millis),
            window_ms: millis(d.window),
            policy,
            degraded: d.degraded,
        }
    }
}

impl keel_decision {
    fn to_core(self) -> Decision {
        let len = self
            .policy
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.policy.len());
        let name: String = self.policy[..len]
            .iter()
            .map(|&c| c as u8 as char)
            .collect();
        Decision {
            allowed: self.allowed,
            limit: self.limit,
            remaining: self.remaining,
            reset: Duration::from_millis(self.reset_ms),
            retry_after: self
                .has_retry_after
                .then(|| Duration::from_millis(self.retry_after_ms)),
            policy: Arc::from(name),
            window: Duration::from_millis(self.window_ms),
            degraded: self.degraded,
        }
    }
}

fn algorithm(code: i32) -> Result<Algorithm, FfiError> {
    match code {
        KEEL_ALGORITHM_GCRA => Ok(Algorithm::Gcra),
        KEEL_ALGORITHM_SLIDING_WINDOW => Ok(Algorithm::SlidingWindow),
        other => Err(FfiError::new(
            KEEL_ERR_INVALID_ARGUMENT,
            format!("unknown algorithm {other} (use KEEL_ALGORITHM_GCRA or KEEL_ALGORITHM_SLIDING_WINDOW)"),
        )),
    }
}

fn policy(name: &str, limit: u64, window_ms: u64, algorithm: i32) -> Result<Policy, FfiError> {
    Ok(Policy::new(
        name,
        limit,
        Duration::from_millis(window_ms),
        self::algorithm(algorithm)?,
    )?)
}

/// `max_keys` from C: 0 means the core's default (`None`); a value beyond `usize` saturates
/// (the core then refuses it where it has an upper bound, naming the value).
fn key_bound(max_keys: u64) -> Option<usize> {
    (max_keys != 0).then(|| usize::try_from(max_keys).unwrap_or(usize::MAX))
}

/// Creates a rate limiter: at most `limit` units of cost per `window_ms` milliseconds per key.
///
/// - `name`, `name_len`: the policy name shown in the `RateLimit-Policy` header: 1 to 64 ASCII
///   letters, digits, `_`, `-` or `.`.
/// - `algorithm`: `KEEL_ALGORITHM_GCRA` or `KEEL_ALGORITHM_SLIDING_WINDOW`.
/// - `max_keys`: most keys tracked at once (idle keys are dropped first); 0 means 1000000.
///
/// Returns: KEEL_OK and writes `*out_limiter`; KEEL_ERR_RATELIMIT_INVALID_POLICY for a bad
/// name, a zero limit or a window outside 1 ms .. one year; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the limiter and releases it with `keel_ratelimiter_free`; `name`
/// is copied.
/// NULL: `name` may be NULL only with `name_len` 0 (which is then an invalid name);
/// `out_limiter` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: the new limiter may be used by any number of threads at once.
#[no_mangle]
pub unsafe extern "C" fn keel_ratelimiter_new(
    name: *const c_char,
    name_len: usize,
    limit: u64,
    window_ms: u64,
    algorithm: i32,
    max_keys: u64,
    out_limiter: *mut *mut keel_ratelimiter,
) -> keel_result {
    ffi_guard!({
        let out_limiter = try_out!(out_limiter);
        let policy = policy(try_str!(name, name_len), limit, window_ms, algorithm)?;
        let options = LimiterOptions {
            shared_path: None,
            max_keys: key_bound(max_keys),
        };
        let inner = RateLimiter::open(policy, options)?;
        out_limiter.write(ffi::into_raw(keel_ratelimiter {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Creates a rate limiter whose state is shared by every process of this host that opens the
/// same `path` (e.g. "/dev/shm/keel-ratelimit-api") with the same settings: all of them count
/// against one budget per key. Arguments as for `keel_ratelimiter_new`, plus `path`, `path_len`
/// (UTF-8); `max_keys` 0 means 100000, at most 16777216.
///
/// The state lives in the file `<path>.v2.<algorithm>.<limit>per<window>.<slots>keys`, created
/// on first use with mode 0600: processes with another policy or key bound (a rolling redeploy)
/// use their own file. A file removed while in use is re-attached within a few milliseconds, a
/// truncated one repaired (never a crash), and a stripe lock left by a dead process is taken
/// over after a 500 ms lease.
///
/// Returns: KEEL_OK and writes `*out_limiter`; KEEL_ERR_RATELIMIT_SHARED_STATE when the file
/// cannot be created, opened or mapped, or its header disagrees with its name (the message
/// names the file); KEEL_ERR_INVALID_ARGUMENT for `max_keys` above 16777216; the errors of
/// `keel_ratelimiter_new`.
///
/// Ownership and NULL: as for `keel_ratelimiter_new`; `path` is copied.
/// Thread-safety: the new limiter may be used by any number of threads at once, and by several
/// processes through the file. A limiter opened before `fork()` keeps working in the child (the
/// mapping is shared).
#[no_mangle]
pub unsafe extern "C" fn keel_ratelimiter_new_shared(
    path: *const c_char,
    path_len: usize,
    name: *const c_char,
    name_len: usize,
    limit: u64,
    window_ms: u64,
    algorithm: i32,
    max_keys: u64,
    out_limiter: *mut *mut keel_ratelimiter,
) -> keel_result {
    ffi_guard!({
        let out_limiter = try_out!(out_limiter);
        let path = try_str!(path, path_len);
        let policy = policy(try_str!(name, name_len), limit, window_ms, algorithm)?;
        let options = LimiterOptions {
            shared_path: Some(path.into()),
            max_keys: key_bound(max_keys),
        };
        let inner = RateLimiter::open(policy, options)?;
        out_limiter.write(ffi::into_raw(keel_ratelimiter {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees a rate limiter. NULL is a no-op.
///
/// Ownership: takes `limiter`, which is invalid afterwards.
/// Thread-safety: call it exactly once, when no other call on `limiter` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_ratelimiter_free(limiter: *mut keel_ratelimiter) {
    // SAFETY: per this doc, `limiter` is NULL or from keel_ratelimiter_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(limiter) } })
}

/// Checks one request of `cost` units for `key` and, if allowed, counts it.
///
/// Returns: KEEL_OK and writes `*out_decision` (allowed or denied: a denial is a decision, not
/// an error); KEEL_ERR_RATELIMIT_INVALID_COST when `cost` is 0 or above the limit;
/// KEEL_ERR_INVALID_UTF8 when `key` is not UTF-8; for a host-shared limiter,
/// KEEL_ERR_RATELIMIT_SHARED_BUSY when a stripe lock stayed busy for more than 2 s.
///
/// Ownership: `key` is only read during the call.
/// NULL: `limiter` or `out_decision` NULL gives KEEL_ERR_NULL_ARG; `key` may be NULL only with
/// `key_len` 0.
/// Thread-safety: safe to call concurrently; decisions for one key are linearisable.
#[no_mangle]
pub unsafe extern "C" fn keel_ratelimiter_check(
    limiter: *const keel_ratelimiter,
    key: *const c_char,
    key_len: usize,
    cost: u64,
    out_decision: *mut keel_decision,
) -> keel_result {
    ffi_guard!({
        let limiter = try_ref!(limiter);
        let out_decision = try_out!(out_decision);
        let key = try_str!(key, key_len);
        let d = limiter.inner.check(key, cost)?;
        out_decision.write(keel_decision::from(&d));
        Ok(())
    })
}

/// Checks one request against several limiters at once, all-or-nothing: when one denies,
/// nothing is consumed from the others. `limiters[i]` is checked with key `keys[i]` of
/// `key_lens[i]` bytes, for `i < count`.
///
/// Returns: KEEL_OK and writes the first denial, or the allowing decision with the fewest
/// remaining units, to `*out_decision`; KEEL_ERR_INVALID_ARGUMENT when `count` is 0; the
/// errors of `keel_ratelimiter_check`.
///
/// NULL: any of the arrays, their elements, or `out_decision` NULL gives KEEL_ERR_NULL_ARG
/// (a key may be NULL only with length 0).
/// Thread-safety: safe to call concurrently, on the same limiters too.
#[no_mangle]
pub unsafe extern "C" fn keel_ratelimiter_check_all(
    limiters: *const *const keel_ratelimiter,
    keys: *const *const c_char,
    key_lens: *const usize,
    count: usize,
    cost: u64,
    out_decision: *mut keel_decision,
) -> keel_result {
    ffi_guard!({
        let out_decision = try_out!(out_decision);
        let limiters = try_array!(limiters, count);
        let keys = try_array!(keys, count);
        let key_lens = try_array!(key_lens, count);
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            let limiter = limiters[i];
            let limiter = try_ref!(limiter);
            let (key, key_len) = (keys[i], key_lens[i]);
            let key = try_str!(key, key_len);
            pairs.push((&*limiter.inner, key));
        }
        let d = check_all(&pairs, cost)?;
        out_decision.write(keel_decision::from(&d));
        Ok(())
    })
}

/// Renders a decision's HTTP response headers into `buf` as `Name: value\r\n` lines: the IETF
/// `RateLimit-Policy` and `RateLimit`, `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
/// `X-RateLimit-Reset` and, when denied, `Retry-After`. No NUL is written.
///
/// Returns: KEEL_OK and writes the length used to `*out_len`; KEEL_ERR_BUFFER_TOO_SMALL (and the
/// length needed, in the message) when `buf_len` is too small — 512 bytes always suffice.
///
/// NULL: `decision` or `out_len` NULL gives KEEL_ERR_NULL_ARG; `buf` may be NULL only with
/// `buf_len` 0.
/// Thread-safety: reads `decision` and writes `buf` only; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_decision_format_headers(
    decision: *const keel_decision,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> keel_result {
    ffi_guard!({
        let decision = try_ref!(decision);
        let out_len = try_out!(out_len);
        let mut text = String::with_capacity(256);
        HeaderWriter::new().write(&decision.to_core(), &mut |name, value| {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(value);
            text.push_str("\r\n");
        });
        if text.len() > buf_len {
            return Err(FfiError::new(
                KEEL_ERR_BUFFER_TOO_SMALL,
                format!(
                    "the headers need {} bytes, the buffer has {buf_len}",
                    text.len()
                ),
            ));
        }
        if !text.is_empty() {
            let dst = NonNullBuf::new(buf)?;
            // SAFETY: the caller promises `buf_len` writable bytes at `buf`; we write fewer.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), dst.0, text.len()) };
        }
        out_len.write(text.len());
        Ok(())
    })
}

struct NonNullBuf(*mut u8);

impl NonNullBuf {
    fn new(buf: *mut c_char) -> Result<Self, FfiError> {
        if buf.is_null() {
            return Err(FfiError::null_arg("buf"));
        }
        Ok(Self(buf.cast::<u8>()))
    }
}
