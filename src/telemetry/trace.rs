//! Tracing: keel's `tracing` spans exported with OpenTelemetry (OTLP over HTTP/protobuf), the
//! host's trace context, and keel's `tracing` events as structured logs.
//!
//! Every public operation that does I/O or real work opens a `tracing` span (store, memory, auth,
//! audit, retrieval stages). Nothing here runs until the host turns telemetry on: before [`init`]
//! (or an Engine whose `[telemetry.traces]` / `[telemetry.logs]` is enabled) no subscriber is
//! installed, so a span costs one relaxed load of `tracing`'s global level (off).
//!
//! Invariants:
//! - One global subscriber, installed on the first [`init`] and never replaced: a registry, the
//!   `tracing-opentelemetry` layer behind a reloadable level filter, and the log layer behind its
//!   own. [`init`] again reconfigures; [`shutdown`] flushes and sets both filters to off.
//! - One `SdkTracerProvider` for the life of the process. What changes on reconfiguration (the
//!   exporter, its batch processor, the resource, the sampler) lives behind [`Switch`] and
//!   [`SwitchSampler`], so a reconfiguration never leaves a layer holding a dead tracer.
//! - Fork-safe: the batch processor's thread does not survive `fork()`. Every span end compares
//!   the process id with the one that built the exporter; a forked child builds its own exporter
//!   and processor from the same settings on its first span, and leaks (never joins) the inherited
//!   one, whose thread and locks belong to the parent.
//! - No attribute carries a secret, key, message content, or tenant/user/session id: the spans
//!   are written that way at their call sites, and the tests scan every exported attribute.
//! - The host's context: a root keel span is a child of the OpenTelemetry context current on the
//!   thread ([`HostContext`], [`set_thread_context`], or the Rust host's own attached `Context`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, ContextGuard, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SamplingResult, SdkTracerProvider,
    ShouldSample, SpanData, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, Layer};

use crate::error::{Error, Result, TraceError};

pub use opentelemetry::ContextGuard as HostContextGuard;
pub use tracing::Level;

/// Opens an INFO span `keel.probe` with attribute `keel.probe = value` and emits one WARN event
/// with the same field inside it: lets a door's tests prove that the exporter, the log sink and
/// the attribute scan see what keel emits (a scan for a canary must find this one).
pub fn probe(value: &str) {
    let _s = tracing::info_span!("keel.probe", keel.probe = %value).entered();
    tracing::warn!(keel.probe = %value, "probe event");
}

/// The service name when neither the options nor `OTEL_SERVICE_NAME` give one.
pub const DEFAULT_SERVICE_NAME: &str = "keel";
/// The level of spans exported when the options do not say.
pub const DEFAULT_TRACE_LEVEL: &str = "info";
/// The level of events logged when the options do not say.
pub const DEFAULT_LOG_LEVEL: &str = "warn";
/// The instrumentation scope of keel's spans.
pub const SCOPE_NAME: &str = "keel";

/// Where spans go once recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exporter {
    /// OTLP over HTTP/protobuf (`endpoint`, or `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, or
    /// `http://localhost:4318`).
    #[default]
    Otlp,
    /// Spans are created, sampled and ended but sent nowhere (measures the cost of the
    /// instrumentation alone; `OTEL_TRACES_EXPORTER=none`).
    None,
}

/// Batch settings of the span processor; unset fields take `OTEL_BSP_*` or the SDK default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOptions {
    /// Most spans queued before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub max_queue_size: Option<usize>,
    /// Most spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_export_batch_size: Option<usize>,
    /// Delay between two exports (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub scheduled_delay: Option<Duration>,
    /// Longest export request (`OTEL_BSP_EXPORT_TIMEOUT`, 30 s).
    pub export_timeout: Option<Duration>,
}

/// How keel exports its spans. Every `None` field falls back to the standard `OTEL_*`
/// environment variable, then to the default named on the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceOptions {
    /// The OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` is appended unless the
    /// path already ends with it. Else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`), else `http://localhost:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// Extra HTTP headers of each export request (e.g. an API key of the tracing vendor; never
    /// logged). Else `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`.
    pub headers: Vec<(String, String)>,
    /// `service.name` of the resource. Else `OTEL_SERVICE_NAME`, else [`DEFAULT_SERVICE_NAME`].
    pub service_name: Option<String>,
    /// Parent-based ratio sampler: a span with a parent follows the parent's decision, a root
    /// span is kept with this probability (0.0 to 1.0). Else `OTEL_TRACES_SAMPLER` (+ `_ARG`),
    /// else 1.0.
    pub sample_ratio: Option<f64>,
    /// The most detailed span level exported (`error` .. `trace`). Else
    /// [`DEFAULT_TRACE_LEVEL`].
    pub level: Option<String>,
    /// Where spans go. Else `OTEL_TRACES_EXPORTER` (`otlp` or `none`), else OTLP.
    pub exporter: Option<Exporter>,
    /// Batch processor settings.
    pub batch: BatchOptions,
}

/// One structured log record: a keel `tracing` event with the ids of the span it happened in.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: tracing::Level,
    /// The module that emitted it (`keel::store`).
    pub target: String,
    /// The event's message.
    pub message: String,
    /// The event's other fields, formatted.
    pub fields: Vec<(String, String)>,
    /// The W3C trace id (32 hex digits) of the current span, if a trace is current.
    pub trace_id: Option<String>,
    /// The W3C span id (16 hex digits) of the current span, if a trace is current.
    pub span_id: Option<String>,
}

impl LogRecord {
    /// The record as one JSON object (no newline).
    pub fn to_json(&self) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("timestamp".into(), serde_json::Value::String(rfc3339_now()));
        obj.insert("level".into(), self.level.as_str().into());
        obj.insert("target".into(), self.target.clone().into());
        obj.insert("message".into(), self.message.clone().into());
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone().into());
        }
        if let Some(t) = &self.trace_id {
            obj.insert("trace_id".into(), t.clone().into());
        }
        if let Some(s) = &self.span_id {
            obj.insert("span_id".into(), s.clone().into());
        }
        serde_json::Value::Object(obj).to_string()
    }
}

/// The wall-clock time as RFC 3339 UTC with microseconds (`2026-01-02T03:04:05.123456Z`).
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// A host function receiving each log record (e.g. the Python door's bridge to `logging`).
pub type LogCallback = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Where log records go.
#[derive(Clone, Default)]
pub enum LogSink {
    /// The host's logger registered with [`set_host_log_sink`] (the Python door registers
    /// `logging`), else [`LogSink::Stderr`].
    #[default]
    Host,
    /// One JSON object per line on standard error.
    Stderr,
    /// A host function.
    Callback(LogCallback),
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host => f.write_str("Host"),
            Self::Stderr => f.write_str("Stderr"),
            Self::Callback(_) => f.write_str("Callback"),
        }
    }
}

static HOST_SINK: RwLock<Option<LogCallback>> = RwLock::new(None);

/// Registers the host's logger, used by [`LogSink::Host`] (a door calls it once at load; it
/// costs nothing while logs are off).
pub fn set_host_log_sink(callback: Option<LogCallback>) {
    *HOST_SINK.write().unwrap_or_else(|e| e.into_inner()) = callback;
}

/// How keel logs its `tracing` events.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// The most detailed level logged (`error` .. `trace`). Else [`DEFAULT_LOG_LEVEL`].
    pub level: Option<String>,
    /// Where records go.
    pub sink: LogSink,
}

/// Everything [`init`] turns on: traces, logs, or both (`None` = that half off).
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// Span export.
    pub traces: Option<TraceOptions>,
    /// Structured logs.
    pub logs: Option<LogOptions>,
}

impl From<TraceOptions> for TelemetryOptions {
    fn from(traces: TraceOptions) -> Self {
        Self {
            traces: Some(traces),
            logs: None,
        }
    }
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, `off`), naming `field` in
/// the error.
pub fn parse_level(field: &str, value: &str) -> Result<LevelFilter> {
    value.trim().parse::<LevelFilter>().map_err(|_| {
        Error::InvalidArgument(format!(
            "{field} = {value:?}: use \"error\", \"warn\", \"info\", \"debug\", \"trace\" or \"off\""
        ))
    })
}

/// Checks a sampling ratio.
pub fn check_ratio(field: &str, ratio: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(Error::InvalidArgument(format!(
            "{field} = {ratio}: a sampling ratio is between 0.0 and 1.0"
        )));
    }
    Ok(ratio)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The export settings after the options and the environment are combined.
#[derive(Debug, Clone)]
struct Resolved {
    exporter: Exporter,
    endpoint: Option<String>,
    headers: HashMap<String, String>,
    service_name: String,
    ratio: f64,
    level: LevelFilter,
    batch: BatchOptions,
}

fn resolve(o: &TraceOptions) -> Result<Resolved> {
    let exporter = match o.exporter {
        Some(e) => e,
        None => match env("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => Exporter::Otlp,
            Some("none") => Exporter::None,
            Some(other) => {
                return Err(TraceError::Config(format!(
                    "OTEL_TRACES_EXPORTER = {other:?}: keel exports \"otlp\" or \"none\""
                ))
                .into())
            }
        },
    };
    let endpoint = match &o.endpoint {
        Some(url) => {
            let url = url.trim().trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(TraceError::Config(format!(
                    "endpoint = {url:?}: an OTLP/HTTP endpoint starts with http:// or https://"
                ))
                .into());
            }
            Some(if url.ends_with("/v1/traces") {
                url.to_owned()
            } else {
                format!("{url}/v1/traces")
            })
        }
        None => None,
    };
    let ratio = match o.sample_ratio {
        Some(r) => check_ratio("sample_ratio", r)?,
        None => ratio_from_env()?,
    };
    let level = parse_level(
        "traces.level",
        o.level.as_deref().unwrap_or(DEFAULT_TRACE_LEVEL),
    )?;
    let service_name = o
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Ok(Resolved {
        exporter,
        endpoint,
        headers: o.headers.iter().cloned().collect(),
        service_name,
        ratio,
        level,
        batch: o.batch.clone(),
    })
}

/// The root-span ratio from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (keel's sampler
/// is always parent-based).
fn ratio_from_env() -> Result<f64> {
    let Some(sampler) = env("OTEL_TRACES_SAMPLER") else {
        return Ok(1.0);
    };
    match sampler.trim() {
        "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => {
                let r = arg.trim().parse::<f64>().map_err(|_| {
                    TraceError::Config(format!(
                        "OTEL_TRACES_SAMPLER_ARG = {arg:?}: not a number between 0.0 and 1.0"
                    ))
                })?;
                check_ratio("OTEL_TRACES_SAMPLER_ARG", r)
            }
        },
        other => Err(TraceError::Config(format!(
            "OTEL_TRACES_SAMPLER = {other:?}: keel samples parent-based; use \
             parentbased_traceidratio, parentbased_always_on or parentbased_always_off"
        ))
        .into()),
    }
}

/// The batch processor in use and the process that built it.
struct Inner {
    pid: u32,
    settings: Resolved,
    processor: Option<BatchSpanProcessor>,
}

fn build_inner(settings: Resolved) -> Result<Inner> {
    let processor = match settings.exporter {
        Exporter::None => None,
        Exporter::Otlp => {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(url) = &settings.endpoint {
                b = b.with_endpoint(url.clone());
            }
            if !settings.headers.is_empty() {
                b = b.with_headers(settings.headers.clone());
            }
            if let Some(t) = settings.batch.export_timeout {
                b = b.with_timeout(t);
            }
            let exporter = b.build().map_err(|e| TraceError::Exporter(e.to_string()))?;
            let mut cfg = BatchConfigBuilder::default();
            let bo = &settings.batch;
            if let Some(n) = bo.max_queue_size {
                cfg = cfg.with_max_queue_size(n);
            }
            if let Some(n) = bo.max_export_batch_size {
                cfg = cfg.with_max_export_batch_size(n);
            }
            if let Some(d) = bo.scheduled_delay {
                cfg = cfg.with_scheduled_delay(d);
            }
            let mut p = BatchSpanProcessor::builder(exporter)
                .with_batch_config(cfg.build())
                .build();
            p.set_resource(
                &Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            );
            Some(p)
        }
    };
    Ok(Inner {
        pid: std::process::id(),
        settings,
        processor,
    })
}

/// The span processor the provider holds for the life of the process; what it forwards to is
/// replaced on reconfiguration and after a fork.
#[derive(Default)]
struct Switch {
    inner: RwLock<Option<Inner>>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("keel::telemetry::trace::Switch")
    }
}

impl Switch {
    fn set(&self, next: Option<Inner>) -> Option<Inner> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, next)
    }

    /// In a forked child: a fresh exporter and processor; the inherited ones are leaked.
    fn rebuild_after_fork(&self, pid: u32) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(old) = g.as_ref() else { return };
        if old.pid == pid {
            return;
        }
        let fresh = build_inner(old.settings.clone()).ok();
        if let Some(old) = std::mem::replace(&mut *g, fresh) {
            // Its thread lives only in the parent: joining it here would wait forever.
            std::mem::forget(old);
        }
    }

    fn flush(&self) -> Result<()> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(Inner {
                processor: Some(p),
                pid,
                ..
            }) if *pid == std::process::id() => p
                .force_flush()
                .map_err(|e| TraceError::Exporter(e.to_string()).into()),
            _ => Ok(()),
        }
    }
}

/// The provider's handle on the process-wide [`Switch`].
#[derive(Debug, Clone)]
struct SwitchRef(Arc<Switch>);

impl SpanProcessor for SwitchRef {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let pid = std::process::id();
        {
            let g = self.0.inner.read().unwrap_or_else(|e| e.into_inner());
            match g.as_ref() {
                None => return,
                Some(i) if i.pid == pid => {
                    if let Some(p) = &i.processor {
                        p.on_end(span);
                    }
                    return;
                }
                Some(_) => {}
            }
        }
        self.0.rebuild_after_fork(pid);
        let g = self.0.inner.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Inner {
            processor: Some(p), ..
        }) = g.as_ref()
        {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// The sampler the provider holds; its ratio is replaced on reconfiguration.
#[derive(Debug, Clone)]
struct SwitchSampler(Arc<RwLock<Sampler>>);

impl ShouldSample for SwitchSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

fn parent_ratio(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

type SetLevel = Box<dyn Fn(LevelFilter) + Send + Sync>;

/// The process-wide subscriber's handles.
struct Global {
    switch: Arc<Switch>,
    sampler: Arc<RwLock<Sampler>>,
    set_trace_level: SetLevel,
    set_log_level: SetLevel,
    log_sink: Arc<RwLock<LogSink>>,
    _provider: SdkTracerProvider,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();
/// Serialises [`init`] and [`shutdown`].
static CONFIGURE: Mutex<()> = Mutex::new(());
/// Whether span export is on (the doors check it before looking for a host context).
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (traces turned on and not shut down). One relaxed load: the
/// doors call it on every operation before looking for the host's trace context.
#[inline]
pub fn enabled() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

fn install() -> Result<&'static Global> {
    if let Some(g) = GLOBAL.get() {
        return Ok(g);
    }
    let switch = Arc::new(Switch::default());
    let sampler = Arc::new(RwLock::new(parent_ratio(1.0)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SwitchRef(Arc::clone(&switch)))
        .with_sampler(SwitchSampler(Arc::clone(&sampler)))
        .build();
    let tracer = provider.tracer(SCOPE_NAME);
    let (trace_filter, trace_handle) = reload::Layer::new(LevelFilter::OFF);
    let (log_filter, log_handle) = reload::Layer::new(LevelFilter::OFF);
    let log_sink = Arc::new(RwLock::new(LogSink::Host));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(trace_filter);
    let logs = LogLayer {
        sink: Arc::clone(&log_sink),
    }
    .with_filter(log_filter);
    let subscriber = tracing_subscriber::registry().with(otel).with(logs);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| TraceError::Subscriber)?;
    let g = Global {
        switch,
        sampler,
        set_trace_level: Box::new(move |l| {
            let _ = trace_handle.reload(l);
        }),
        set_log_level: Box::new(move |l| {
            let _ = log_handle.reload(l);
        }),
        log_sink,
        _provider: provider,
    };
    Ok(GLOBAL.get_or_init(|| g))
}

/// Turns telemetry on (or reconfigures it): installs keel's global `tracing` subscriber on the
/// first call, builds the OTLP exporter, and sets the span and log levels. Halves left `None`
/// are turned off. Call [`shutdown`] before the process exits so queued spans are sent.
///
/// Errors: [`TraceError::Config`] for a bad option or `OTEL_*` value, [`TraceError::Exporter`]
/// when the exporter cannot be built, [`TraceError::Subscriber`] when the process already has
/// another global `tracing` subscriber (a Rust host with its own subscriber adds
/// `tracing-opentelemetry` to it instead: keel's spans are ordinary `tracing` spans).
pub fn init(options: impl Into<TelemetryOptions>) -> Result<()> {
    let options = options.into();
    let _g = CONFIGURE.lock().unwrap_or_else(|e| e.into_inner());
    let traces = match &options.traces {
        Some(t) if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true") => {
            let _ = t;
            None
        }
        Some(t) => Some(resolve(t)?),
        None => None,
    };
    let logs = match &options.logs {
        Some(l) => Some((
            parse_level(
                "logs.level",
                l.level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL),
            )?,
            l.sink.clone(),
        )),
        None => None,
    };
    // Build the exporter before touching the running pipeline: a bad endpoint leaves the old
    // configuration in place.
    let inner = traces.clone().map(build_inner).transpose()?;
    if inner.is_none() && logs.is_none() && GLOBAL.get().is_none() {
        return Ok(());
    }
    let g = install()?;
    if let Some(r) = &traces {
        *g.sampler.write().unwrap_or_else(|e| e.into_inner()) = parent_ratio(r.ratio);
    }
    if let Some(old) = g.switch.set(inner) {
        shut(old);
    }
    TRACES_ON.store(traces.is_some(), Ordering::Relaxed);
    (g.set_trace_level)(traces.map_or(LevelFilter::OFF, |r| r.level));
    match logs {
        Some((level, sink)) => {
            *g.log_sink.write().unwrap_or_else(|e| e.into_inner()) = sink;
            (g.set_log_level)(level);
        }
        None => (g.set_log_level)(LevelFilter::OFF),
    }
    Ok(())
}

fn shut(old: Inner) {
    if old.pid != std::process::id() {
        std::mem::forget(old);
        return;
    }
    if let Some(p) = old.processor {
        let _ = p.shutdown();
    }
}

/// Sends every finished span now (blocks until the exporter answered or timed out).
pub fn flush() -> Result<()> {
    match GLOBAL.get() {
        Some(g) => g.switch.flush(),
        None => Ok(()),
    }
}

/// Flushes queued spans, stops the exporter and turns traces and logs off. Safe to call when
/// telemetry was never on, and more than once; [`init`] may turn it on again.
pub fn shutdown() -> Result<()> {
    let _g = CONFIGURE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = GLOBAL.get() else {
        return Ok(());
    };
    TRACES_ON.store(false, Ordering::Relaxed);
    (g.set_trace_level)(LevelFilter::OFF);
    (g.set_log_level)(LevelFilter::OFF);
    if let Some(old) = g.switch.set(None) {
        shut(old);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The host's trace context.

/// A W3C trace context: the parent keel's root spans join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostContext {
    /// The trace id (non-zero).
    pub trace_id: u128,
    /// The parent span id (non-zero).
    pub span_id: u64,
    /// Whether the parent was sampled (`traceparent` flag 01).
    pub sampled: bool,
}

impl HostContext {
    /// Parses a W3C `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
    pub fn parse(traceparent: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("traceparent {traceparent:?}: {why}"));
        let t = traceparent.trim();
        let parts: Vec<&str> = t.split('-').collect();
        if parts.len() < 4 {
            return Err(bad("expected version-traceid-spanid-flags"));
        }
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let (version, trace, span, flags) = (parts[0], parts[1], parts[2], parts[3]);
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.len() != 4) {
            return Err(bad("unsupported version"));
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return Err(bad(
                "ids are lowercase hex of 32 and 16 digits, flags 2 digits",
            ));
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| bad("bad trace id"))?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| bad("bad span id"))?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad("bad flags"))?;
        if trace_id == 0 || span_id == 0 {
            return Err(bad("all-zero trace or span id"));
        }
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The OpenTelemetry context with this remote parent.
    pub fn context(&self) -> Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// Makes this the parent of keel's root spans on this thread until the guard drops.
    pub fn attach(&self) -> ContextGuard {
        self.context().attach()
    }
}

thread_local! {
    static THREAD_CONTEXT: RefCell<Option<ContextGuard>> = const { RefCell::new(None) };
}

/// Makes `traceparent` the parent of keel's root spans on this thread until
/// [`clear_thread_context`] or the next call (the C door's `keel_trace_context_set`).
pub fn set_thread_context(traceparent: &str) -> Result<()> {
    let host = HostContext::parse(traceparent)?;
    THREAD_CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        // Detach the previous one first, so contexts do not stack up.
        c.take();
        *c = Some(host.attach());
    });
    Ok(())
}

/// Forgets this thread's context set by [`set_thread_context`].
pub fn clear_thread_context() {
    THREAD_CONTEXT.with(|c| {
        c.borrow_mut().take();
    });
}

/// The trace context current on this thread as a `traceparent` (keel's current span, else the
/// host's context), if any.
pub fn current_traceparent() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Logs.

/// Turns `tracing` events into [`LogRecord`]s for the configured sink.
struct LogLayer {
    sink: Arc<RwLock<LogSink>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for LogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields::default();
        event.record(&mut f);
        let cx = Context::current();
        let span = cx.span();
        let sc = span.span_context();
        let (trace_id, span_id) = if sc.is_valid() {
            (
                Some(sc.trace_id().to_string()),
                Some(sc.span_id().to_string()),
            )
        } else {
            (None, None)
        };
        let rec = LogRecord {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message: f.message,
            fields: f.fields,
            trace_id,
            span_id,
        };
        let mut sink = self.sink.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let LogSink::Host = sink {
            sink = match HOST_SINK.read().unwrap_or_else(|e| e.into_inner()).clone() {
                Some(cb) => LogSink::Callback(cb),
                None => LogSink::Stderr,
            };
        }
        match sink {
            LogSink::Host => {}
            LogSink::Stderr => {
                use std::io::Write as _;
                let mut line = rec.to_json();
                line.push('\n');
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            LogSink::Callback(cb) => cb(&rec),
        }
    }
}

#[cfg(test)]
mod tests;
