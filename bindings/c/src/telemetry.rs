//! Telemetry over C: turn trace export and JSON logs on without an engine, flush and shut down,
//! and hand keel the caller's trace context per thread.

use std::ffi::c_char;

use keel_core::config::TelemetryConfig;
use keel_core::telemetry::trace;

use crate::error::keel_result;
use crate::ffi::try_str;
use crate::panic::ffi_guard;

/// Turns telemetry on (or reconfigures it) from the body of a `[telemetry]` section:
/// `config_toml` (`config_toml_len` bytes of UTF-8 TOML) holds `[traces]` and `[logs]` tables
/// with the fields of `[telemetry.traces]` / `[telemetry.logs]` in docs/observability.md
/// (e.g. `[traces]\nenabled = true\nendpoint = "http://collector:4318"`), and
/// `KEEL_TELEMETRY__*` variables override it; unset fields fall back to the standard `OTEL_*`
/// variables. A half not enabled is turned off. An engine whose configuration has a
/// `[telemetry]` section does the same when it opens.
///
/// Call `keel_telemetry_shutdown` before the process exits, or queued spans are lost. After
/// `fork()`, the child's first span builds the child's own exporter.
///
/// Returns: KEEL_OK; KEEL_ERR_CONFIG_PARSE (TOML syntax, unknown field); KEEL_ERR_CONFIG_INVALID
/// or KEEL_ERR_INVALID_ARGUMENT (a value out of range, named); KEEL_ERR_TELEMETRY_CONFIG (a bad
/// `OTEL_*` variable); KEEL_ERR_TELEMETRY_EXPORTER (the exporter cannot be built);
/// KEEL_ERR_TELEMETRY_SUBSCRIBER; KEEL_ERR_INVALID_UTF8.
/// NULL: `config_toml` may be NULL only with length 0 (the environment alone).
/// Thread-safety: safe from any thread; calls are serialised.
#[no_mangle]
pub unsafe extern "C" fn keel_telemetry_init(
    config_toml: *const c_char,
    config_toml_len: usize,
) -> keel_result {
    ffi_guard!({
        let text = try_str!(config_toml, config_toml_len);
        trace::init(TelemetryConfig::from_toml(text)?.options()?)?;
        Ok(())
    })
}

/// Sends every finished span now, waiting for the exporter (up to its timeout).
///
/// Returns: KEEL_OK (also when telemetry is off); KEEL_ERR_TELEMETRY_EXPORTER when the export
/// failed.
/// Thread-safety: safe from any thread.
#[no_mangle]
pub extern "C" fn keel_telemetry_flush() -> keel_result {
    ffi_guard!({
        trace::flush()?;
        Ok(())
    })
}

/// Flushes queued spans, stops the exporter and turns traces and logs off. Safe when telemetry
/// was never on, and more than once; `keel_telemetry_init` may turn it on again.
///
/// Returns: KEEL_OK.
/// Thread-safety: safe from any thread.
#[no_mangle]
pub extern "C" fn keel_telemetry_shutdown() -> keel_result {
    ffi_guard!({
        trace::shutdown()?;
        Ok(())
    })
}

/// Makes the W3C `traceparent` (`traceparent_len` bytes, e.g. the incoming request's header
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) the parent of keel's spans on the
/// calling thread, until `keel_trace_context_clear` or the next call on this thread.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (malformed: the message quotes it);
/// KEEL_ERR_INVALID_UTF8.
/// NULL: `traceparent` NULL gives KEEL_ERR_NULL_ARG unless `traceparent_len` is 0, which is
/// KEEL_ERR_INVALID_ARGUMENT.
/// Thread-safety: per thread; other threads are not affected.
#[no_mangle]
pub unsafe extern "C" fn keel_trace_context_set(
    traceparent: *const c_char,
    traceparent_len: usize,
) -> keel_result {
    ffi_guard!({
        let tp = try_str!(traceparent, traceparent_len);
        trace::set_thread_context(tp)?;
        Ok(())
    })
}

/// Forgets the calling thread's context set by `keel_trace_context_set` (no-op when none).
///
/// Thread-safety: per thread.
#[no_mangle]
pub extern "C" fn keel_trace_context_clear() {
    ffi_guard!(or(), { trace::clear_thread_context() })
}
