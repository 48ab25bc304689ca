//! The metrics registry: counters and histograms in base units with bounded labels, exposed in
//! the Prometheus text format and OpenMetrics. (Being built: issue 10.)

/// `[telemetry.metrics]` of the Engine configuration. (Placeholder created by the tracing half of
/// issue 10 so `[telemetry]` parses; the metrics half owns its fields.)
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {}
