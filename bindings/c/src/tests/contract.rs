//! The C calling contract, exercised from Rust: NULL arguments are reported as
//! KEEL_ERR_NULL_ARG with a message naming them, out-parameters are written only on success,
//! and `_free(NULL)` is harmless. (tests/c runs the same API from real C under ASan.)

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};

use crate::*;

fn last_message() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { CStr::from_ptr(keel_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn new_cache(max_entries: u64) -> *mut keel_cache {
    let mut cache = null_mut();
    // SAFETY: `cache` is a valid out-parameter.
    assert_eq!(
        unsafe { keel_cache_new(max_entries, 0, 0, &mut cache) },
        KEEL_OK
    );
    cache
}

/// Asserts a NULL-argument failure whose message names `arg`.
fn assert_null_arg(rc: keel_result, arg: &str) {
    assert_eq!(rc, KEEL_ERR_NULL_ARG, "NULL `{arg}`");
    let msg = last_message();
    assert!(msg.contains(&format!("`{arg}`")), "message {msg:?}");
}

unsafe extern "C" fn write_abc(
    _: *mut c_void,
    _: *const u8,
    _: usize,
    sink: *mut keel_value_sink,
) -> i32 {
    // SAFETY: keel passes a live sink.
    unsafe { keel_value_sink_write(sink, b"abc".as_ptr(), 3) }
}

unsafe extern "C" fn fail_with_42(
    _: *mut c_void,
    _: *const u8,
    _: usize,
    _: *mut keel_value_sink,
) -> i32 {
    42
}

#[test]
fn null_arguments_are_reported_and_outputs_untouched() {
    let cache = new_cache(10);
    let sentinel_cache = std::ptr::dangling_mut::<keel_cache>();
    let sentinel_bytes = std::ptr::dangling_mut::<keel_bytes>();
    let key = b"k".as_ptr();
    // SAFETY: every non-NULL pointer below is valid; NULLs are the point of the test.
    unsafe {
        let mut out = sentinel_cache;
        assert_null_arg(keel_cache_new(10, 0, 0, null_mut()), "out_cache");

        assert_null_arg(keel_cache_set(null(), key, 1, key, 1, 0), "cache");
        assert_null_arg(keel_cache_set(cache, null(), 1, key, 1, 0), "key");
        assert_null_arg(keel_cache_set(cache, key, 1, null(), 1, 0), "value");

        let mut value = sentinel_bytes;
        assert_null_arg(keel_cache_get(null(), key, 1, &mut value), "cache");
        assert_null_arg(keel_cache_get(cache, null(), 1, &mut value), "key");
        assert_null_arg(keel_cache_get(cache, key, 1, null_mut()), "out_value");
        assert_eq!(value, sentinel_bytes);

        let mut found = true;
        assert_null_arg(keel_cache_contains(null(), key, 1, &mut found), "cache");
        assert_null_arg(keel_cache_contains(cache, key, 1, null_mut()), "out_found");
        assert!(found);

        assert_null_arg(keel_cache_remove(null(), key, 1), "cache");
        assert_null_arg(keel_cache_clear(null()), "cache");

        let mut n = 77u64;
        assert_null_arg(keel_cache_len(null(), &mut n), "cache");
        assert_null_arg(keel_cache_len(cache, null_mut()), "out_len");
        assert_null_arg(keel_cache_purge_expired(null(), &mut n), "cache");
        assert_null_arg(keel_cache_purge_expired(cache, null_mut()), "out_purged");
        assert_eq!(n, 77);

        let mut stats = keel_cache_stats {
            hits: 77,
            ..Default::default()
        };
        assert_null_arg(keel_cache_get_stats(null(), &mut stats), "cache");
        assert_null_arg(keel_cache_get_stats(cache, null_mut()), "out_stats");
        assert_eq!(stats.hits, 77);

        let compute: keel_cache_compute_fn = Some(write_abc);
        let ud = null_mut();
        assert_null_arg(
            keel_cache_get_or_insert(null(), key, 1, compute, ud, &mut value),
            "cache",
        );
        assert_null_arg(
            keel_cache_get_or_insert(cache, key, 1, None, ud, &mut value),
            "compute",
        );
        assert_null_arg(
            keel_cache_get_or_insert(cache, key, 1, compute, ud, null_mut()),
            "out_value",
        );
        assert_eq!(value, sentinel_bytes);

        assert_null_arg(keel_value_sink_write(null_mut(), key, 1), "sink");

        assert_eq!(out, sentinel_cache);
        out = null_mut();
        assert_eq!(
            keel_cache_new(0, 0, 0, &mut out),
            KEEL_ERR_CACHE_ZERO_CAPACITY
        );
        assert!(out.is_null());

        keel_cache_free(cache);
    }
}

#[test]
fn empty_buffers_may_be_null() {
    let cache = new_cache(10);
    // SAFETY: NULL with length 0 is allowed for keys and values.
    unsafe {
        assert_eq!(keel_cache_set(cache, null(), 0, null(), 0, 0), KEEL_OK);
        let mut value = null_mut();
        assert_eq!(keel_cache_get(cache, null(), 0, &mut value), KEEL_OK);
        assert_eq!(keel_bytes_len(value), 0);
        assert!(!keel_bytes_data(value).is_null());
        keel_bytes_free(value);
        keel_cache_free(cache);
    }
}

#[test]
fn failures_leave_outputs_untouched() {
    let cache = new_cache(10);
    let sentinel = std::ptr::dangling_mut::<keel_bytes>();
    // SAFETY: valid pointers throughout.
    unsafe {
        let mut value = sentinel;
        assert_eq!(
            keel_cache_get(cache, b"missing".as_ptr(), 7, &mut value),
            KEEL_ERR_NOT_FOUND
        );
        assert_eq!(value, sentinel);

        let rc = keel_cache_get_or_insert(
            cache,
            b"k".as_ptr(),
            1,
            Some(fail_with_42),
            null_mut(),
            &mut value,
        );
        assert_eq!(rc, KEEL_ERR_CALLBACK);
        assert_eq!(value, sentinel);
        assert!(last_message().contains("42"), "{}", last_message());
        let mut found = true;
        assert_eq!(
            keel_cache_contains(cache, b"k".as_ptr(), 1, &mut found),
            KEEL_OK
        );
        assert!(!found, "a failed computation stored something");

        let mut cache_out = std::ptr::dangling_mut::<keel_cache>();
        assert_eq!(
            keel_cache_new(10, 0, u64::MAX, &mut cache_out),
            KEEL_ERR_CACHE_INVALID_TTL
        );
        assert_eq!(cache_out, std::ptr::dangling_mut::<keel_cache>());
        keel_cache_free(cache);
    }
}

#[test]
fn free_and_getters_accept_null() {
    // SAFETY: NULL is documented as accepted by each of these.
    unsafe {
        keel_cache_free(null_mut());
        keel_bytes_free(null_mut());
        assert!(keel_bytes_data(null()).is_null());
        assert_eq!(keel_bytes_len(null()), 0);
    }
}

#[test]
fn messages_never_contain_key_bytes() {
    let cache = new_cache(1);
    let secret = b"SECRET-KEY-BYTES";
    // SAFETY: valid pointers throughout.
    unsafe {
        let mut value = null_mut();
        let rc = keel_cache_get(cache, secret.as_ptr(), secret.len(), &mut value);
        assert_eq!(rc, KEEL_ERR_NOT_FOUND);
        assert!(!last_message().is_empty());
        assert!(!last_message().contains("SECRET"));
        let rc = keel_cache_set(
            cache,
            secret.as_ptr(),
            secret.len(),
            secret.as_ptr(),
            1,
            u64::MAX,
        );
        assert_eq!(rc, KEEL_ERR_CACHE_INVALID_TTL);
        assert!(!last_message().is_empty());
        assert!(!last_message().contains("SECRET"));
        keel_cache_free(cache);
    }
}
