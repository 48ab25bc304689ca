//! The metrics registry (`keel_core::telemetry::metrics`): its exposition for a C host's `/metrics`,
//! the per-call instruments' switch, and named caches.

use std::ffi::c_char;

use keel_core::telemetry::metrics::{self, Format};

use crate::bytes::keel_bytes;
use crate::cache::keel_cache;
use crate::error::keel_result;
use crate::ffi::{self, try_out, try_ref, try_str};
use crate::panic::ffi_guard;

/// `format` of `keel_metrics_text`: the Prometheus text format 0.0.4.
pub const KEEL_METRICS_PROMETHEUS: u32 = 0;
/// `format` of `keel_metrics_text`: OpenMetrics 1.0 text.
pub const KEEL_METRICS_OPENMETRICS: u32 = 1;

fn format_of(format: u32) -> Result<Format, keel_core::Error> {
    match format {
        KEEL_METRICS_PROMETHEUS => Ok(Format::Prometheus),
        KEEL_METRICS_OPENMETRICS => Ok(Format::OpenMetrics),
        other => Err(keel_core::Error::InvalidArgument(format!(
            "unknown metrics format {other}: use KEEL_METRICS_PROMETHEUS or KEEL_METRICS_OPENMETRICS"
        ))),
    }
}

/// Every keel metric of this process, process metrics included (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`...), as the body of a `/metrics` response
/// in `format` (`KEEL_METRICS_PROMETHEUS` or `KEEL_METRICS_OPENMETRICS`; serve it with the
/// `Content-Type` from `keel_metrics_content_type`).
///
/// Returns: KEEL_OK and writes `*out_text` (UTF-8, not NUL-terminated);
/// KEEL_ERR_INVALID_ARGUMENT for an unknown `format`.
///
/// Ownership: the caller frees `*out_text` with `keel_bytes_free`.
/// NULL: `out_text` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread, concurrently with every other keel call.
#[no_mangle]
pub unsafe extern "C" fn keel_metrics_text(
    format: u32,
    out_text: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let out_text = try_out!(out_text);
        let text = metrics::render(format_of(format)?);
        out_text.write(ffi::into_raw(keel_bytes::new(std::sync::Arc::from(
            text.into_bytes(),
        ))));
        Ok(())
    })
}

/// The HTTP `Content-Type` of `format`, a NUL-terminated static string; NULL for an unknown
/// `format`.
///
/// Ownership: static; never free it.
/// Thread-safety: safe from any thread.
#[no_mangle]
pub extern "C" fn keel_metrics_content_type(format: u32) -> *const c_char {
    ffi_guard!(or std::ptr::null(), {
        match format_of(format) {
            Ok(Format::Prometheus) => c"text/plain; version=0.0.4; charset=utf-8".as_ptr(),
            Ok(Format::OpenMetrics) => {
                c"application/openmetrics-text; version=1.0.0; charset=utf-8".as_ptr()
            }
            Err(_) => std::ptr::null(),
        }
    })
}

/// Turns the per-call instruments (operation counts and latencies) on or off for the whole
/// process; an engine's `[telemetry.metrics] enabled` does the same when it opens. Cache and
/// rate-limit statistics are always kept by the primitives themselves.
///
/// Thread-safety: safe from any thread.
#[no_mangle]
pub extern "C" fn keel_metrics_set_enabled(enabled: bool) {
    ffi_guard!(or(), { metrics::set_enabled(enabled) })
}

/// Exports `cache`'s statistics as `keel_cache_*{cache="<name>"}` for as long as the cache
/// lives (caches of an engine are exported under their table name already). Caches registered
/// under one name are summed. The name is a label value: a fixed name per cache, never one
/// derived from a request.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT when `name` is empty, longer than 64 bytes, holds
/// a control character or is not UTF-8.
/// NULL: `cache` NULL, or `name` NULL with a non-zero length, gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently.
#[no_mangle]
pub unsafe extern "C" fn keel_cache_register_metrics(
    cache: *const keel_cache,
    name: *const c_char,
    name_len: usize,
) -> keel_result {
    ffi_guard!({
        let cache = try_ref!(cache);
        let name = try_str!(name, name_len);
        metrics::register_cache(name, &cache.inner)?;
        Ok(())
    })
}
