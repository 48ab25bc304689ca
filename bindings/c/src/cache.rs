//! The cache over C: byte-string keys, byte-string values.
//!
//! `keel_cache` owns a `keel_core::Cache<Box<[u8]>, Arc<[u8]>>`. Values are `Arc<[u8]>` so that a
//! hit hands C a `keel_bytes` sharing the stored buffer, without a copy. With a weight bound an
//! entry weighs `key_len + value_len`, the bytes it pins, so `max_weight` bounds memory.
//!
//! Expected outcomes are result codes, not separate success flags: a miss is `KEEL_ERR_NOT_FOUND`
//! (as sqlite's `SQLITE_DONE` is a code), which keeps every function's shape
//! `keel_result f(inputs..., outputs...)`.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use keel_core::cache::check_ttl;
use keel_core::engine::BytesCache;
use keel_core::{Cache, CacheConfig, CacheStats, EntryOptions};

use crate::bytes::{keel_bytes, keel_value_sink};
use crate::error::{keel_result, FfiError, KEEL_ERR_CALLBACK};
use crate::ffi::{self, try_bytes, try_out, try_ref};
use crate::panic::ffi_guard;

/// A concurrent, bounded cache from byte keys to byte values, with TTLs and statistics.
///
/// Thread-safety: every function may be called concurrently on the same `keel_cache` from any
/// number of threads, except `keel_cache_free`, which must be called once no other call on it
/// is in flight.
pub struct keel_cache {
    pub(crate) inner: Arc<BytesCache>,
}

// The thread-safety promised above and on keel_bytes, checked by the compiler.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_cache>();
    shareable::<keel_bytes>();
};

/// A snapshot of a cache's counters, filled by `keel_cache_get_stats`. Plain data, owned by the
/// caller. Its layout is part of the ABI and never changes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct keel_cache_stats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or only an expired entry.
    pub misses: u64,
    /// Entries stored (new or replacing).
    pub inserts: u64,
    /// Entries pushed out to respect the capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL had passed.
    pub expirations: u64,
    /// Entries held, including expired ones not yet dropped.
    pub entries: u64,
    /// Sum of the entries' weights: 1 per entry without a `max_weight`; with one, an entry's
    /// key + value bytes, but at least `max_weight / max_entries` (see `keel_cache_new`).
    pub weight: u64,
}

impl From<CacheStats> for keel_cache_stats {
    fn from(s: CacheStats) -> Self {
        Self {
            hits: s.hits,
            misses: s.misses,
            inserts: s.inserts,
            evictions: s.evictions,
            expirations: s.expirations,
            entries: s.entries,
            weight: s.weight,
        }
    }
}

/// Computes the value for a missing key, for `keel_cache_get_or_insert`.
///
/// Called with the `user_data` given to `keel_cache_get_or_insert`, the key (`key_len` bytes,
/// valid only during the call) and a `sink`: write the value with `keel_value_sink_write` (any
/// number of times; an empty value is allowed), then return 0. Any other return value means
/// failure: nothing is stored and `keel_cache_get_or_insert` returns KEEL_ERR_CALLBACK.
///
/// The callback runs on the calling thread while other threads that miss the same key wait for
/// it. It may use the cache, including other keys; asking for its own key gives
/// KEEL_ERR_CACHE_RECURSIVE_LOAD. It must return normally: never unwind out of it (a C++
/// exception, a Rust panic) nor `longjmp` past it, which would leave the waiting threads blocked.
pub type keel_cache_compute_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        key: *const u8,
        key_len: usize,
        sink: *mut keel_value_sink,
    ) -> i32,
>;

/// 0 means "none" (or "the cache's default") across this API; anything else must be a valid TTL.
fn ttl_from_ms(ttl_ms: u64) -> Result<Option<Duration>, FfiError> {
    match ttl_ms {
        0 => Ok(None),
        ms => Ok(Some(check_ttl(Duration::from_millis(ms))?)),
    }
}

fn entry_weight(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64).saturating_add(value_len as u64)
}

/// Creates a cache.
///
/// - `max_entries`: most entries held at once; at least 1 (0 gives KEEL_ERR_CACHE_ZERO_CAPACITY).
/// - `max_weight`: also bounds the total of key + value bytes; 0 means no such bound. Each entry
///   counts as at least `max_weight / max_entries`, so that both bounds hold at once.
/// - `ttl_ms`: default time to live of an entry in milliseconds; 0 means entries never expire.
///   At most 100 years, else KEEL_ERR_CACHE_INVALID_TTL.
///
/// When full, inserting evicts other entries; the cache never holds more than `max_entries`
/// entries nor more than `max_weight` bytes.
///
/// Returns: KEEL_OK and writes `*out_cache`, or an error code (`*out_cache` is not written).
///
/// Ownership: the caller owns the new cache and releases it with `keel_cache_free`.
/// NULL: `out_cache` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: the new cache may be used by any number of threads at once.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_new(
    max_entries: u64,
    max_weight: u64,
    ttl_ms: u64,
    out_cache: *mut *mut keel_cache,
) -> keel_result {
    ffi_guard!({
        let out_cache = try_out!(out_cache);
        let config = CacheConfig {
            max_entries,
            max_weight: (max_weight != 0).then_some(max_weight),
            ttl: ttl_from_ms(ttl_ms)?,
        };
        let inner = Cache::new(config)?;
        out_cache.write(ffi::into_raw(keel_cache {
            inner: Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees a cache and all its entries. NULL is a no-op.
///
/// Ownership: takes `cache`, which is invalid afterwards. `keel_bytes` obtained from it stay
/// valid until they are freed themselves.
/// Thread-safety: call it exactly once, when no other call on `cache` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_free(cache: *mut keel_cache) {
    // SAFETY: per this doc, `cache` is NULL or a keel_cache from keel_cache_new, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(cache) } })
}

/// Stores a copy of `value` under a copy of `key`, replacing any previous value.
///
/// - `ttl_ms`: this entry's time to live in milliseconds; 0 uses the cache's default. At most
///   100 years, else KEEL_ERR_CACHE_INVALID_TTL.
///
/// Returns: KEEL_OK; KEEL_ERR_CACHE_ENTRY_TOO_LARGE when `key_len + value_len` exceeds what a
/// cache with a `max_weight` can hold in one entry.
///
/// Ownership: `key` and `value` are copied; the caller keeps them.
/// NULL: `cache` NULL gives KEEL_ERR_NULL_ARG; `key` (`value`) may be NULL only when `key_len`
/// (`value_len`) is 0.
/// Thread-safety: safe to call concurrently on one cache.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_set(
    cache: *const keel_cache,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let key = try_bytes!(key, key_len);
        let value = try_bytes!(value, value_len);
        let opts = EntryOptions {
            ttl: ttl_from_ms(ttl_ms)?,
            weight: entry_weight(key.len(), value.len()),
        };
        cache.inner.insert_with(key.into(), value.into(), opts)?;
        Ok(())
    })
}

/// Looks up `key`. Counts a hit or a miss in the statistics.
///
/// Returns: KEEL_OK and writes `*out_value` on a hit; KEEL_ERR_NOT_FOUND on a miss or an expired
/// entry (`*out_value` is not written).
///
/// Ownership: the caller owns the returned buffer and frees it with `keel_bytes_free`. It shares
/// the cached bytes without copying and stays valid after the entry is replaced, evicted or the
/// cache freed. `key` is only read during the call.
/// NULL: `cache` or `out_value` NULL gives KEEL_ERR_NULL_ARG; `key` may be NULL when `key_len` is 0.
/// Thread-safety: safe to call concurrently on one cache.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_get(
    cache: *const keel_cache,
    key: *const u8,
    key_len: usize,
    out_value: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let key = try_bytes!(key, key_len);
        let out_value = try_out!(out_value);
        let value = cache.inner.get(key).ok_or_else(FfiError::not_found)?;
        out_value.write(ffi::into_raw(keel_bytes::new(value)));
        Ok(())
    })
}

/// Whether `key` has a live (unexpired) entry. Counts nothing in the statistics and does not
/// make the entry more likely to stay.
///
/// Returns: KEEL_OK and writes `*out_found` (true or false).
///
/// NULL: `cache` or `out_found` NULL gives KEEL_ERR_NULL_ARG; `key` may be NULL when `key_len`
/// is 0.
/// Thread-safety: safe to call concurrently on one cache; the answer may be stale by the time
/// it is read.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_contains(
    cache: *const keel_cache,
    key: *const u8,
    key_len: usize,
    out_found: *mut bool,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let key = try_bytes!(key, key_len);
        let out_found = try_out!(out_found);
        out_found.write(cache.inner.contains_key(key));
        Ok(())
    })
}

/// Removes `key`'s entry.
///
/// Returns: KEEL_OK if a live entry was removed; KEEL_ERR_NOT_FOUND if there was none (or only
/// an expired one, which is dropped).
///
/// NULL: `cache` NULL gives KEEL_ERR_NULL_ARG; `key` may be NULL when `key_len` is 0.
/// Thread-safety: safe to call concurrently on one cache.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_remove(
    cache: *const keel_cache,
    key: *const u8,
    key_len: usize,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let key = try_bytes!(key, key_len);
        cache.inner.remove(key).ok_or_else(FfiError::not_found)?;
        Ok(())
    })
}

/// Removes every entry. The statistics counters are kept.
///
/// NULL: `cache` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one cache; entries inserted meanwhile may survive.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_clear(cache: *const keel_cache) -> keel_result {
    ffi_guard!({
        try_ref!(cache).inner.clear();
        Ok(())
    })
}

/// The number of entries held, including expired ones not yet dropped.
///
/// Returns: KEEL_OK and writes `*out_len`.
///
/// NULL: `cache` or `out_len` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one cache.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_len(
    cache: *const keel_cache,
    out_len: *mut u64,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let out_len = try_out!(out_len);
        out_len.write(cache.inner.len() as u64);
        Ok(())
    })
}

/// Drops every expired entry now (expired entries are otherwise dropped when met, or evicted).
///
/// Returns: KEEL_OK and writes the number of entries dropped to `*out_purged`.
///
/// NULL: `cache` or `out_purged` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one cache.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_purge_expired(
    cache: *const keel_cache,
    out_purged: *mut u64,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let out_purged = try_out!(out_purged);
        out_purged.write(cache.inner.purge_expired() as u64);
        Ok(())
    })
}

/// Copies the cache's counters into `*out_stats`.
///
/// Returns: KEEL_OK and writes `*out_stats`.
///
/// Ownership: `out_stats` is caller-owned storage (e.g. a local `keel_cache_stats`).
/// NULL: `cache` or `out_stats` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one cache; under concurrent use the counters are
/// each exact but not read at one single instant.
// Not `keel_cache_stats`: in C, a function and a typedef cannot share a name.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_get_stats(
    cache: *const keel_cache,
    out_stats: *mut keel_cache_stats,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let out_stats = try_out!(out_stats);
        out_stats.write(cache.inner.stats().into());
        Ok(())
    })
}

/// Returns the value for `key`, computing and storing it with `compute` on a miss.
///
/// When several threads miss the same key at once, `compute` runs once: the other callers wait
/// and receive its value. The new entry gets the cache's default TTL.
///
/// Returns: KEEL_OK and writes `*out_value`; KEEL_ERR_CALLBACK when `compute` returned non-zero
/// (nothing is stored, `*out_value` is not written, and a caller waiting for the same key
/// computes it instead); KEEL_ERR_CACHE_RECURSIVE_LOAD when called from `compute` for the key
/// being computed; KEEL_ERR_CACHE_ENTRY_TOO_LARGE as `keel_cache_set`.
///
/// Ownership: the caller owns the returned buffer and frees it with `keel_bytes_free`. `key` is
/// only read during the call. `user_data` is passed to `compute` untouched; keel never frees it.
/// NULL: `cache`, `compute` or `out_value` NULL gives KEEL_ERR_NULL_ARG; `key` may be NULL when
/// `key_len` is 0; `user_data` may be NULL.
/// Thread-safety: safe to call concurrently on one cache; see `keel_cache_compute_fn` for the
/// rules `compute` must follow.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_get_or_insert(
    cache: *const keel_cache,
    key: *const u8,
    key_len: usize,
    compute: keel_cache_compute_fn,
    user_data: *mut c_void,
    out_value: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let key: Box<[u8]> = try_bytes!(key, key_len).into();
        let compute = compute.ok_or_else(|| FfiError::null_arg("compute"))?;
        let out_value = try_out!(out_value);
        let value = cache.inner.get_or_try_insert_with_options(&key, || {
            let mut sink = keel_value_sink::new();
            // SAFETY: the caller vouches for `compute` and `user_data`; the key and the sink
            // outlive the call.
            let rc = unsafe { compute(user_data, key.as_ptr(), key.len(), &mut sink) };
            if rc != 0 {
                return Err(FfiError::new(
                    KEEL_ERR_CALLBACK,
                    format!("the compute callback failed (returned {rc}); nothing was stored"),
                ));
            }
            let value = sink.into_value();
            let opts = EntryOptions {
                ttl: None,
                weight: entry_weight(key.len(), value.len()),
            };
            Ok((Arc::from(value), opts))
        })?;
        out_value.write(ffi::into_raw(keel_bytes::new(value)));
        Ok(())
    })
}
