//! Telemetry: tracing spans with OpenTelemetry export ([`trace`]) and one metrics registry with
//! Prometheus / OpenMetrics exposition ([`metrics`]). See docs/observability.md.

pub mod metrics;
pub mod trace;
