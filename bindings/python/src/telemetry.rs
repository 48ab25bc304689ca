//! Telemetry over Python: `keel.telemetry.configure()` / `flush()` / `shutdown()`, the host's
//! trace context, and the bridge from keel's log records to `logging`.
//!
//! The host's context. Every call that releases the GIL goes through [`Traced::traced`]: when
//! traces are on (one relaxed load otherwise) it reads the caller's context, first the
//! `traceparent` of `keel.telemetry.context(...)`, else the current span of
//! `opentelemetry-api` when that package is installed, and attaches it on this thread for the
//! duration of the call, so keel's spans become children of the host's span.

use std::sync::Arc;
use std::time::Duration;

use keel::telemetry::trace::{
    self, BatchOptions, Exporter, HostContext, HostContextGuard as ContextGuard, Level, LogOptions,
    LogRecord, LogSink, TelemetryOptions, TraceOptions,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use crate::errors::{invalid, to_py};

/// `opentelemetry.trace.get_current_span`, or None when `opentelemetry-api` is not installed.
static OTEL_CURRENT_SPAN: GILOnceCell<Option<Py<PyAny>>> = GILOnceCell::new();
/// `keel.telemetry._traceparent` (a `ContextVar`).
static KEEL_TRACEPARENT: GILOnceCell<Option<Py<PyAny>>> = GILOnceCell::new();

fn explicit(py: Python<'_>) -> Option<HostContext> {
    let var = KEEL_TRACEPARENT
        .get_or_init(py, || {
            py.import("keel.telemetry")
                .and_then(|m| m.getattr("_traceparent"))
                .map(Bound::unbind)
                .ok()
        })
        .as_ref()?;
    let value = var.bind(py).call_method1("get", (py.None(),)).ok()?;
    let tp: Option<String> = value.extract().ok()?;
    HostContext::parse(&tp?).ok()
}

fn from_opentelemetry(py: Python<'_>) -> Option<HostContext> {
    let get = OTEL_CURRENT_SPAN
        .get_or_init(py, || {
            py.import("opentelemetry.trace")
                .and_then(|m| m.getattr("get_current_span"))
                .map(Bound::unbind)
                .ok()
        })
        .as_ref()?;
    let sc = get
        .bind(py)
        .call0()
        .ok()?
        .call_method0("get_span_context")
        .ok()?;
    if !sc.getattr("is_valid").ok()?.extract::<bool>().ok()? {
        return None;
    }
    Some(HostContext {
        trace_id: sc.getattr("trace_id").ok()?.extract().ok()?,
        span_id: sc.getattr("span_id").ok()?.extract().ok()?,
        sampled: sc.getattr("trace_flags").ok()?.extract::<u8>().ok()? & 1 == 1,
    })
}

/// The caller's trace context attached on this thread (None when traces are off or the caller
/// has none).
pub fn host_context(py: Python<'_>) -> Option<ContextGuard> {
    if !trace::enabled() {
        return None;
    }
    explicit(py)
        .or_else(|| from_opentelemetry(py))
        .map(|h| h.attach())
}

/// `py.allow_threads` that first attaches the caller's trace context.
pub trait Traced {
    /// Runs `f` without the GIL, as a child of the caller's current span.
    fn traced<T: Send, F: Send + FnOnce() -> T>(self, f: F) -> T;
}

impl Traced for Python<'_> {
    #[inline]
    fn traced<T: Send, F: Send + FnOnce() -> T>(self, f: F) -> T {
        let _cx = host_context(self);
        self.allow_threads(f)
    }
}

fn seconds(name: &str, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| invalid(format!("{name} = {s}: a number of seconds >= 0")))
    })
    .transpose()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Hands one record to `keel.telemetry._emit` (Python `logging`).
fn emit(rec: &LogRecord) {
    Python::with_gil(|py| {
        let result = (|| -> PyResult<()> {
            let fields = PyDict::new(py);
            for (k, v) in &rec.fields {
                fields.set_item(k, v)?;
            }
            py.import("keel.telemetry")?.getattr("_emit")?.call1((
                level_name(rec.level),
                rec.target.as_str(),
                rec.message.as_str(),
                fields,
                rec.trace_id.as_deref(),
                rec.span_id.as_deref(),
            ))?;
            Ok(())
        })();
        if let Err(e) = result {
            e.write_unraisable(py, None);
        }
    });
}

/// Registers `logging` as the host's log sink (called at import; costs nothing while logs are
/// off).
pub fn register_log_sink() {
    trace::set_host_log_sink(Some(Arc::new(emit)));
}

/// `keel.telemetry.configure(...)`: see python/keel/telemetry.py.
#[pyfunction]
#[pyo3(signature = (*, traces=true, endpoint=None, headers=None, service_name=None,
    sample_ratio=None, level=None, exporter=None, max_queue_size=None,
    max_export_batch_size=None, scheduled_delay=None, export_timeout=None, logs=false,
    log_level=None, log_sink=None))]
#[allow(clippy::too_many_arguments)]
pub fn telemetry_configure(
    py: Python<'_>,
    traces: bool,
    endpoint: Option<String>,
    headers: Option<Vec<(String, String)>>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
    level: Option<String>,
    exporter: Option<String>,
    max_queue_size: Option<usize>,
    max_export_batch_size: Option<usize>,
    scheduled_delay: Option<f64>,
    export_timeout: Option<f64>,
    logs: bool,
    log_level: Option<String>,
    log_sink: Option<String>,
) -> PyResult<()> {
    let exporter = match exporter.as_deref() {
        None => None,
        Some("otlp") => Some(Exporter::Otlp),
        Some("none") => Some(Exporter::None),
        Some(other) => {
            return Err(invalid(format!(
                "exporter = {other:?}: use \"otlp\" or \"none\""
            )))
        }
    };
    let sink = match log_sink.as_deref() {
        None | Some("logging") => LogSink::Host,
        Some("stderr") => LogSink::Stderr,
        Some(other) => {
            return Err(invalid(format!(
                "log_sink = {other:?}: use \"logging\" or \"stderr\""
            )))
        }
    };
    let options = TelemetryOptions {
        traces: traces.then_some(TraceOptions {
            endpoint,
            headers: headers.unwrap_or_default(),
            service_name,
            sample_ratio,
            level,
            exporter,
            batch: BatchOptions {
                max_queue_size,
                max_export_batch_size,
                scheduled_delay: seconds("scheduled_delay", scheduled_delay)?,
                export_timeout: seconds("export_timeout", export_timeout)?,
            },
        }),
        logs: logs.then_some(LogOptions {
            level: log_level,
            sink,
        }),
    };
    py.allow_threads(|| trace::init(options)).map_err(to_py)
}

/// Sends every finished span now.
#[pyfunction]
pub fn telemetry_flush(py: Python<'_>) -> PyResult<()> {
    py.allow_threads(trace::flush).map_err(to_py)
}

/// Flushes, stops the exporter, turns traces and logs off.
#[pyfunction]
pub fn telemetry_shutdown(py: Python<'_>) -> PyResult<()> {
    py.allow_threads(trace::shutdown).map_err(to_py)
}

/// Whether spans are being exported.
#[pyfunction]
pub fn trace_enabled() -> bool {
    trace::enabled()
}

/// The caller's trace context as keel sees it on this call (`traceparent`), or None.
#[pyfunction]
pub fn current_traceparent(py: Python<'_>) -> Option<String> {
    let _cx = host_context(py);
    trace::current_traceparent()
}

/// Checks a `traceparent` (raises `keel.InvalidArgument` naming it).
#[pyfunction]
pub fn check_traceparent(traceparent: &str) -> PyResult<()> {
    HostContext::parse(traceparent).map(|_| ()).map_err(to_py)
}

/// Emits one WARN event inside an INFO span named `keel.probe` with the given attribute: lets
/// tests prove that the exporter and the attribute scan see what keel emits.
#[pyfunction]
pub fn telemetry_probe(py: Python<'_>, value: String) {
    py.traced(|| trace::probe(&value));
}

/// Registers the module's telemetry functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    register_log_sink();
    m.add_function(wrap_pyfunction!(telemetry_configure, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry_flush, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(trace_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(current_traceparent, m)?)?;
    m.add_function(wrap_pyfunction!(check_traceparent, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry_probe, m)?)?;
    Ok(())
}
