//! Byte buffers crossing the boundary: `keel_bytes` (Rust to C) and `keel_value_sink` (C to Rust).
//!
//! `keel_bytes` shares the buffer the cache stores (`Arc<[u8]>`) instead of copying it, and keeps
//! it alive on its own: a value handed to C stays valid after its entry is replaced, evicted or
//! its cache freed. `keel_value_sink` collects what a C callback writes; it lives on the Rust
//! stack for the duration of one callback.

use std::sync::Arc;

use crate::error::keel_result;
use crate::ffi::{self, try_bytes, try_mut};
use crate::panic::ffi_guard;

/// An immutable byte buffer owned by the caller (e.g. a value returned by `keel_cache_get`).
/// Read it with `keel_bytes_data` and `keel_bytes_len`; release it with `keel_bytes_free`.
pub struct keel_bytes(Arc<[u8]>);

impl keel_bytes {
    pub(crate) fn new(data: Arc<[u8]>) -> Self {
        Self(data)
    }
}

/// Where a compute callback writes the value it produces (see `keel_cache_compute_fn`). Only
/// valid during the callback it was passed to.
pub struct keel_value_sink(Vec<u8>);

impl keel_value_sink {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn into_value(self) -> Vec<u8> {
        self.0
    }
}

/// The first byte of `bytes`.
///
/// Returns: a pointer owned by `bytes`, valid until `keel_bytes_free(bytes)`; never write through
/// it. When the length is 0 it is non-NULL but must not be dereferenced. NULL if `bytes` is NULL.
///
/// Thread-safety: a `keel_bytes` is immutable; any number of threads may read it at once.
#[no_mangle]
pub unsafe extern "C" fn keel_bytes_data(bytes: *const keel_bytes) -> *const u8 {
    ffi_guard!(or std::ptr::null(), {
        // SAFETY: per this doc, `bytes` is NULL or a live keel_bytes.
        unsafe { ffi::ref_or_none(bytes) }.map_or(std::ptr::null(), |b| b.0.as_ptr())
    })
}

/// The number of bytes in `bytes`; 0 if `bytes` is NULL.
///
/// Thread-safety: a `keel_bytes` is immutable; any number of threads may read it at once.
#[no_mangle]
pub unsafe extern "C" fn keel_bytes_len(bytes: *const keel_bytes) -> usize {
    ffi_guard!(or 0, {
        // SAFETY: per this doc, `bytes` is NULL or a live keel_bytes.
        unsafe { ffi::ref_or_none(bytes) }.map_or(0, |b| b.0.len())
    })
}

/// Releases a buffer returned by keel. NULL is a no-op.
///
/// Ownership: takes `bytes`; it and the pointer from `keel_bytes_data` are invalid afterwards.
/// Free each buffer exactly once.
///
/// Thread-safety: may be called from any thread, once no other call uses `bytes`.
#[no_mangle]
pub unsafe extern "C" fn keel_bytes_free(bytes: *mut keel_bytes) {
    // SAFETY: per this doc, `bytes` is NULL or a keel_bytes from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(bytes) } })
}

/// Appends `data_len` bytes to the value a compute callback is producing. It may be called any
/// number of times during the callback; the value is the concatenation, in order.
///
/// Returns: KEEL_OK; KEEL_ERR_NULL_ARG if `sink` is NULL, or `data` is NULL while `data_len` > 0.
///
/// Ownership: copies `data`, which the caller keeps. `sink` belongs to keel and is valid only
/// until the callback it was passed to returns.
///
/// Thread-safety: call it only from the callback, on the thread running that callback.
#[no_mangle]
pub unsafe extern "C" fn keel_value_sink_write(
    sink: *mut keel_value_sink,
    data: *const u8,
    data_len: usize,
) -> keel_result {
    ffi_guard!({
        let sink = try_mut!(sink);
        let data = try_bytes!(data, data_len);
        sink.0.extend_from_slice(data);
        Ok(())
    })
}
