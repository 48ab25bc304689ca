//! The metrics registry: counters and histograms in base units with bounded labels, exposed in
//! the Prometheus text format and OpenMetrics. (Being built: issue 10.)
