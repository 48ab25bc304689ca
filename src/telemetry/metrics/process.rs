//! The process metrics, under the standard names every Prometheus client library uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), read from `/proc` at
//! scrape time. Off Linux there is no `/proc/self`: nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What `/proc` says about this process.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

/// Parses `/proc/self/stat` (fields after the parenthesised command name, which may itself hold
/// spaces and parentheses) with the clock tick, page size and boot time.
pub(super) fn parse_stat(stat: &str, ticks: f64, page: f64, boot_time: f64) -> Option<Sample> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5) minus 3 (pid and comm are gone, numbering starts at 1).
    let num = |i: usize| f.get(i - 3)?.parse::<f64>().ok();
    Some(Sample {
        cpu_seconds: (num(14)? + num(15)?) / ticks,
        start_time_seconds: boot_time + num(22)? / ticks,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page,
        open_fds: None,
        max_fds: None,
    })
}

#[cfg(target_os = "linux")]
fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let mut s = parse_stat(&stat, ticks.max(1) as f64, page.max(1) as f64, boot_time)?;
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        s.max_fds = Some(lim.rlim_cur as f64);
    }
    Some(s)
}

#[cfg(not(target_os = "linux"))]
fn sample() -> Option<Sample> {
    None
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(s) = sample() else { return Ok(()) };
        let m = enc.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(s.cpu_seconds).encode(m)?;
        gauge(
            &mut enc,
            "process_resident_memory",
            "Resident memory size in bytes",
            Some(&Unit::Bytes),
            s.resident_bytes,
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory",
            "Virtual memory size in bytes",
            Some(&Unit::Bytes),
            s.virtual_bytes,
        )?;
        gauge(
            &mut enc,
            "process_start_time",
            "Start time of the process since unix epoch in seconds",
            Some(&Unit::Seconds),
            s.start_time_seconds,
        )?;
        if let Some(n) = s.open_fds {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors",
                None,
                n,
            )?;
        }
        if let Some(n) = s.max_fds {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                n,
            )?;
        }
        Ok(())
    }
}
