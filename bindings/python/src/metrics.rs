//! `keel.metrics_text`, `keel.metrics_content_type`, `keel.set_metrics_enabled`: the core's
//! metrics registry (`keel::telemetry::metrics`).

use keel::telemetry::metrics::{self, Format};
use pyo3::prelude::*;

fn format(openmetrics: bool) -> Format {
    if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Every keel metric of this process in the Prometheus text format (OpenMetrics with
/// `openmetrics=True`); `process=False` leaves out the `process_*` metrics (when
/// `prometheus_client` exports them already).
#[pyfunction]
#[pyo3(signature = (openmetrics=false, *, process=true))]
pub(crate) fn metrics_text(py: Python<'_>, openmetrics: bool, process: bool) -> String {
    py.allow_threads(|| metrics::render_with(format(openmetrics), process))
}

/// The HTTP Content-Type of `metrics_text(openmetrics)`.
#[pyfunction]
#[pyo3(signature = (openmetrics=false))]
pub(crate) fn metrics_content_type(openmetrics: bool) -> &'static str {
    format(openmetrics).content_type()
}

/// Turns the per-call instruments on or off for the whole process.
#[pyfunction]
pub(crate) fn set_metrics_enabled(enabled: bool) {
    metrics::set_enabled(enabled);
}

/// Whether the per-call instruments are on.
#[pyfunction]
pub(crate) fn metrics_enabled() -> bool {
    metrics::enabled()
}
