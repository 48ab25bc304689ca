//! Tracing: `tracing` spans on every public operation, the OpenTelemetry pipeline (OTLP export)
//! and the host's trace context. (Being built: issue 10.)
