//! The metrics registry: one per process, counters and histograms in base units (seconds, bytes)
//! with bounded labels, rendered in the Prometheus text format or OpenMetrics by [`render`].
//!
//! Invariants:
//! - Every label value is a `&'static str` chosen by keel (operation, outcome, reason, stage,
//!   model role, backend) or a name the developer gave a cache or a rate limiter: never a key,
//!   a user, a tenant, a session id or message content.
//! - Hot paths pay nothing here: cache hits and rate-limit decisions are counted by the
//!   primitives' own statistics (striped or relaxed atomics) and read at scrape time
//!   ([`register_cache`], and every [`crate::ratelimit::RateLimiter`] on construction). The
//!   operations instrumented per call ([`start`], [`auth_verified`]...) do database or model work
//!   that costs microseconds or more; each adds two clock reads and pre-resolved atomic updates,
//!   with no allocation and no label lookup.
//! - Every series of a bounded label set exists from the first scrape (at zero), so dashboards and
//!   alerts never see a missing series.
//! - [`set_enabled`]`(false)` (configuration `[telemetry.metrics] enabled = false`) turns the
//!   per-call instruments into one relaxed load; the scrape-time statistics stay readable.
//!
//! Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`...) use the standard unprefixed names of the Prometheus client libraries, so
//! one dashboard serves C, Rust and Python hosts; [`render_with`] leaves them out for a host whose
//! own client library exports them already (Python's `prometheus_client`).

mod process;
mod sources;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{AuthError, Error, Result};

pub use sources::{register_cache, CacheSource};
pub(crate) use sources::{register_limiter, LimiterCounters};

/// Whether the metrics are on when nothing configured them.
pub const DEFAULT_ENABLED: bool = true;

static ENABLED: AtomicBool = AtomicBool::new(DEFAULT_ENABLED);

/// Turns the per-call instruments on or off, process-wide (the scrape-time statistics of
/// caches and rate limiters are always kept by the primitives themselves).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the per-call instruments are on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (what `prometheus_client` and most exporters serve).
    Prometheus,
    /// OpenMetrics 1.0 text (units, `# EOF`).
    OpenMetrics,
}

impl Format {
    /// The HTTP `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Parses `"prometheus"` or `"openmetrics"` (any case), as the C and Python doors pass it.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "prometheus" | "text" => Ok(Format::Prometheus),
            "openmetrics" => Ok(Format::OpenMetrics),
            _ => Err(Error::InvalidArgument(format!(
                "unknown metrics format {name:?}: use \"prometheus\" or \"openmetrics\""
            ))),
        }
    }
}

/// Every metric, in `format`, including the process metrics.
pub fn render(format: Format) -> String {
    render_with(format, true)
}

/// Every metric, in `format`; `process` includes the process metrics (leave them out when the
/// host's own client library exports `process_*` already).
pub fn render_with(format: Format, process: bool) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; a collector error would only truncate the output.
    let _ = encode_registry(&mut out, &STATE.0);
    if process {
        let _ = encode_registry(&mut out, &PROCESS);
    }
    match format {
        Format::OpenMetrics => {
            let _ = encode_eof(&mut out);
            out
        }
        Format::Prometheus => to_prometheus_text(&out),
    }
}

/// OpenMetrics text to the Prometheus text format: counters are declared under their `_total`
/// sample name, and `# UNIT` / `# EOF` lines (unknown to the older format) go.
fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Operations: count by outcome, latency.

/// An instrumented operation (the `operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `memory.append` (one call, any number of messages).
    MemoryAppend,
    /// `memory.load`: history, window and export reads.
    MemoryLoad,
    /// `memory.sessions`: listing sessions.
    MemorySessions,
    /// `memory.delete`: deleting a session, a user or idle sessions.
    MemoryDelete,
    /// `auth.verify`: a presented API key checked (a refusal is not an error).
    AuthVerify,
    /// `auth.admin`: create, revoke, rotate.
    AuthAdmin,
    /// `audit.append`.
    AuditAppend,
    /// `retrieval.search`: one query through a retriever or a pipeline.
    RetrievalSearch,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::MemoryAppend,
        Op::MemoryLoad,
        Op::MemorySessions,
        Op::MemoryDelete,
        Op::AuthVerify,
        Op::AuthAdmin,
        Op::AuditAppend,
        Op::RetrievalSearch,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Op::MemoryAppend => "memory.append",
            Op::MemoryLoad => "memory.load",
            Op::MemorySessions => "memory.sessions",
            Op::MemoryDelete => "memory.delete",
            Op::AuthVerify => "auth.verify",
            Op::AuthAdmin => "auth.admin",
            Op::AuditAppend => "audit.append",
            Op::RetrievalSearch => "retrieval.search",
        }
    }

    fn primitive(self) -> &'static str {
        self.name().split('.').next().unwrap_or("")
    }
}

/// How an operation ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did its work.
    Ok,
    /// It refused its input as the caller's fault (an API key refused, a bad argument): not an
    /// error of the service, not counted against availability.
    Refused,
    /// It failed (storage, crypto, model): counted against availability.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Refused, Outcome::Error];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a result: caller mistakes are refusals, everything else an error.
    pub fn of<T>(result: &Result<T>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) if is_refusal(e) => Outcome::Refused,
            Err(_) => Outcome::Error,
        }
    }
}

fn is_refusal(e: &Error) -> bool {
    use crate::error::MemoryError as M;
    matches!(
        e,
        Error::InvalidArgument(_)
            | Error::Auth(_)
            | Error::Rag(
                crate::error::RagError::InvalidConfig(_)
                    | crate::error::RagError::InvalidMetadata(_)
            )
            | Error::Memory(M::SessionNotFound | M::ContentTooLarge { .. } | M::InvalidMetadata(_))
    )
}

/// Times one operation: [`OpTimer::finish`] records its outcome and latency. Dropped without
/// `finish` (a panic, or an early return that bypassed it), it records an error: give `finish`
/// the operation's whole result so that refusals are told from errors.
#[must_use = "call finish(result) on the operation's result"]
pub struct OpTimer {
    op: Op,
    started: Option<Instant>,
}

/// Starts timing `op` (nothing when the metrics are off).
#[inline]
pub fn start(op: Op) -> OpTimer {
    OpTimer {
        op,
        started: enabled().then(Instant::now),
    }
}

impl OpTimer {
    /// Records the outcome of `result` and the time since [`start`], and passes `result` on.
    #[inline]
    pub fn finish<T>(mut self, result: Result<T>) -> Result<T> {
        self.record(Outcome::of(&result));
        result
    }

    /// Records `outcome` and the time since [`start`].
    pub fn finish_as(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if let Some(t0) = self.started.take() {
            let i = self.op as usize;
            let m = &*METRICS;
            m.ops[i][outcome as usize].inc();
            m.op_seconds[i].observe(t0.elapsed().as_secs_f64());
        }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        self.record(Outcome::Error);
    }
}

// ---------------------------------------------------------------------------------------------
// Auth.

const AUTH_REASONS: [&str; 10] = [
    "none",
    "malformed",
    "bad_checksum",
    "unknown_key",
    "revoked",
    "expired",
    "tampered",
    "wrong_environment",
    "missing_scope",
    "error",
];

fn auth_reason(result: &Result<impl Sized>) -> usize {
    match result {
        Ok(_) => 0,
        Err(Error::Auth(a)) => match a {
            AuthError::Malformed | AuthError::InvalidEnv => 1,
            AuthError::BadChecksum => 2,
            AuthError::UnknownKey => 3,
            AuthError::Revoked => 4,
            AuthError::Expired => 5,
            AuthError::Tampered => 6,
            AuthError::WrongEnvironment { .. } => 7,
            AuthError::MissingScope { .. } => 8,
        },
        Err(_) => 9,
    }
}

/// Records one API-key verification: `keel_auth_verifications_total{outcome, reason}` and the
/// `auth.verify` operation.
pub fn auth_verified<T>(timer: OpTimer, result: &Result<T>) {
    if !enabled() {
        std::mem::forget(timer);
        return;
    }
    let outcome = Outcome::of(result);
    METRICS.auth[auth_reason(result)].inc();
    timer.finish_as(outcome);
}

// ---------------------------------------------------------------------------------------------
// Business counters, store, retrieval, models.

/// A message batch stored: `messages` messages of `bytes` content bytes in total, `new_session`
/// when the append created the conversation.
pub fn messages_stored(messages: usize, bytes: usize, new_session: bool) {
    if !enabled() {
        return;
    }
    let m = &*METRICS;
    m.messages.inc_by(messages as u64);
    m.message_bytes.inc_by(bytes as u64);
    if new_session {
        m.conversations.inc();
    }
}

/// The database backend (the `backend` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    fn index(self) -> usize {
        match self {
            Self::Sqlite => 0,
            Self::Postgres => 1,
        }
    }
}

/// Time spent waiting for a pooled connection.
#[inline]
pub fn db_pool_wait(backend: Backend, started: Instant) {
    if enabled() {
        METRICS.pool_wait[backend.index()].observe(started.elapsed().as_secs_f64());
    }
}

/// A write transaction found the database locked past `busy_timeout`: `retried` when it will run
/// again, else it failed as busy.
pub fn db_busy(backend: Backend, retried: bool) {
    if enabled() {
        let m = &*METRICS;
        if retried {
            m.busy_retries[backend.index()].inc();
        } else {
            m.busy_failures[backend.index()].inc();
        }
    }
}

/// A retrieval stage (the `stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// BM25 scoring.
    Bm25,
    /// Query embedding.
    Embed,
    /// Dense (vector) search.
    Dense,
    /// Fusion of ranked lists.
    Fuse,
    /// Cross-encoder rerank.
    Rerank,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Bm25,
        Stage::Embed,
        Stage::Dense,
        Stage::Fuse,
        Stage::Rerank,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Bm25 => "bm25",
            Stage::Embed => "embed",
            Stage::Dense => "dense",
            Stage::Fuse => "fuse",
            Stage::Rerank => "rerank",
        }
    }
}

/// Starts timing a retrieval stage (`None` when the metrics are off).
#[inline]
pub fn stage_start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records a retrieval stage's latency and how many candidates it produced; a `Bm25` or `Dense`
/// stage is also one retrieval query (operation `retrieval.search`), a `Rerank` stage one rerank.
pub fn stage_done(stage: Stage, started: Option<Instant>, candidates: usize) {
    let Some(t0) = started else { return };
    let m = &*METRICS;
    let i = stage as usize;
    let seconds = t0.elapsed().as_secs_f64();
    m.stage_seconds[i].observe(seconds);
    m.candidates[i].observe(candidates as f64);
    match stage {
        Stage::Bm25 | Stage::Dense => {
            m.queries[i].inc();
            let op = Op::RetrievalSearch as usize;
            m.ops[op][Outcome::Ok as usize].inc();
            m.op_seconds[op].observe(seconds);
        }
        Stage::Rerank => {
            m.reranks.inc();
        }
        Stage::Embed | Stage::Fuse => {}
    }
}

/// [`stage_done`] for a stage's result: a failed `Bm25` or `Dense` stage is a failed
/// `retrieval.search` (an invalid query, such as a vector of the wrong dimension, a refused one).
pub fn stage_result<T, E: Into<Error> + Clone>(
    stage: Stage,
    started: Option<Instant>,
    result: std::result::Result<Vec<T>, E>,
) -> std::result::Result<Vec<T>, E> {
    match &result {
        Ok(v) => stage_done(stage, started, v.len()),
        Err(e) if started.is_some() && matches!(stage, Stage::Bm25 | Stage::Dense) => {
            let outcome = Outcome::of::<()>(&Err(e.clone().into()));
            METRICS.ops[Op::RetrievalSearch as usize][outcome as usize].inc();
        }
        Err(_) => {}
    }
    result
}

/// A model's role (the `model` label: the role, never a path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Model {
    /// The embedding model.
    Embedder,
    /// The cross-encoder.
    CrossEncoder,
}

/// One model batch of `size` inputs ran, started at `started` (from [`stage_start`]).
pub fn model_batch(model: Model, size: usize, started: Option<Instant>) {
    let Some(t0) = started else { return };
    let m = &*METRICS;
    let i = model as usize;
    m.batch_size[i].observe(size as f64);
    m.inference_seconds[i].observe(t0.elapsed().as_secs_f64());
}

/// An exporter (such as the OTLP trace exporter) failed to deliver a batch.
pub fn export_failed() {
    METRICS.export_failures.inc();
}

// ---------------------------------------------------------------------------------------------
// The registry.

type Labels = Vec<(&'static str, &'static str)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds: 50 µs to 10 s.
const SECONDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
/// Count buckets (candidates, batch sizes).
const COUNTS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS)
}
fn counts_histogram() -> Histogram {
    Histogram::new(COUNTS)
}

struct Metrics {
    ops: Vec<[Counter; 3]>,
    op_seconds: Vec<Histogram>,
    auth: Vec<Counter>,
    messages: Counter,
    message_bytes: Counter,
    conversations: Counter,
    /// Per [`Backend`], by [`Backend::index`].
    pool_wait: [Histogram; 2],
    busy_retries: [Counter; 2],
    busy_failures: [Counter; 2],
    stage_seconds: Vec<Histogram>,
    candidates: Vec<Histogram>,
    queries: Vec<Counter>,
    reranks: Counter,
    batch_size: Vec<Histogram>,
    inference_seconds: Vec<Histogram>,
    export_failures: Counter,
}

/// The registry and the handles that share its atomics (every handle is an `Arc`).
static STATE: LazyLock<(Registry, Metrics)> = LazyLock::new(construct);
static PROCESS: LazyLock<Registry> = LazyLock::new(|| {
    let mut r = Registry::default();
    r.register_collector(Box::new(process::ProcessCollector));
    r
});

struct Handles;
/// The pre-resolved handles (`METRICS.ops[op][outcome]`...).
static METRICS: Handles = Handles;
impl std::ops::Deref for Handles {
    type Target = Metrics;
    #[inline]
    fn deref(&self) -> &Metrics {
        &STATE.1
    }
}

fn construct() -> (Registry, Metrics) {
    let mut r = Registry::default();

    let ops_family = Family::<Labels, Counter>::default();
    let op_seconds_family = HistogramFamily::new_with_constructor(seconds_histogram);
    let ops = Op::ALL
        .iter()
        .map(|op| {
            Outcome::ALL.map(|o| {
                ops_family.get_or_create_owned(&vec![
                    ("primitive", op.primitive()),
                    ("operation", op.name()),
                    ("outcome", o.name()),
                ])
            })
        })
        .collect();
    let op_seconds = Op::ALL
        .iter()
        .map(|op| {
            op_seconds_family.get_or_create_owned(&vec![
                ("primitive", op.primitive()),
                ("operation", op.name()),
            ])
        })
        .collect();
    r.register(
        "keel_operations",
        "Operations of keel's primitives by outcome (ok, refused: the caller's input, error)",
        ops_family,
    );
    r.register_with_unit(
        "keel_operation_duration",
        "Latency of keel's operations",
        Unit::Seconds,
        op_seconds_family,
    );

    let auth_family = Family::<Labels, Counter>::default();
    let auth = AUTH_REASONS
        .iter()
        .map(|&reason| {
            let outcome = match reason {
                "none" => "ok",
                "error" => "error",
                _ => "refused",
            };
            auth_family.get_or_create_owned(&vec![("outcome", outcome), ("reason", reason)])
        })
        .collect();
    r.register(
        "keel_auth_verifications",
        "API-key verifications by outcome and refusal reason",
        auth_family,
    );

    let messages = Counter::default();
    let message_bytes = Counter::default();
    let conversations = Counter::default();
    r.register(
        "keel_messages_stored",
        "Conversation messages stored",
        messages.clone(),
    );
    r.register_with_unit(
        "keel_message_content",
        "Content bytes of the conversation messages stored",
        Unit::Bytes,
        message_bytes.clone(),
    );
    r.register(
        "keel_conversations_started",
        "Conversations (memory sessions) started",
        conversations.clone(),
    );

    let pool_family = HistogramFamily::new_with_constructor(seconds_histogram);
    let busy_retry_family = Family::<Labels, Counter>::default();
    let busy_fail_family = Family::<Labels, Counter>::default();
    // One series per backend, in `Backend::index` order.
    let backends: [Labels; 2] = [vec![("backend", "sqlite")], vec![("backend", "postgres")]];
    let pool_wait = backends
        .clone()
        .map(|l| pool_family.get_or_create_owned(&l));
    let busy_retries = backends
        .clone()
        .map(|l| busy_retry_family.get_or_create_owned(&l));
    let busy_failures = backends.map(|l| busy_fail_family.get_or_create_owned(&l));
    r.register_with_unit(
        "keel_db_pool_wait",
        "Time spent waiting for a pooled database connection",
        Unit::Seconds,
        pool_family,
    );
    r.register(
        "keel_db_busy_retries",
        "Write transactions run again because the database stayed locked past busy_timeout",
        busy_retry_family,
    );
    r.register(
        "keel_db_busy_failures",
        "Write transactions that failed as busy after busy_deadline",
        busy_fail_family,
    );

    let stage_family = HistogramFamily::new_with_constructor(seconds_histogram);
    let cand_family = HistogramFamily::new_with_constructor(counts_histogram);
    let queries_family = Family::<Labels, Counter>::default();
    let stage_seconds = Stage::ALL
        .iter()
        .map(|s| stage_family.get_or_create_owned(&vec![("stage", s.name())]))
        .collect();
    let candidates = Stage::ALL
        .iter()
        .map(|s| cand_family.get_or_create_owned(&vec![("stage", s.name())]))
        .collect();
    // Queries are counted per retriever (bm25, dense); the other stages have no series.
    let queries = Stage::ALL
        .iter()
        .map(|s| match s {
            Stage::Bm25 | Stage::Dense => {
                queries_family.get_or_create_owned(&vec![("retriever", s.name())])
            }
            _ => Counter::default(),
        })
        .collect();
    let reranks = Counter::default();
    r.register_with_unit(
        "keel_retrieval_stage_duration",
        "Latency of each retrieval stage",
        Unit::Seconds,
        stage_family,
    );
    r.register(
        "keel_retrieval_candidates",
        "Candidates produced by each retrieval stage",
        cand_family,
    );
    r.register(
        "keel_retrieval_queries",
        "Retrieval queries by retriever",
        queries_family,
    );
    r.register(
        "keel_reranks",
        "Rerank passes (one per query)",
        reranks.clone(),
    );

    let batch_family = HistogramFamily::new_with_constructor(counts_histogram);
    let infer_family = HistogramFamily::new_with_constructor(seconds_histogram);
    let roles = ["embedder", "cross_encoder"];
    let batch_size = roles
        .iter()
        .map(|&m| batch_family.get_or_create_owned(&vec![("model", m)]))
        .collect();
    let inference_seconds = roles
        .iter()
        .map(|&m| infer_family.get_or_create_owned(&vec![("model", m)]))
        .collect();
    r.register(
        "keel_model_batch_size",
        "Inputs per model batch",
        batch_family,
    );
    r.register_with_unit(
        "keel_model_inference_duration",
        "Time per model batch",
        Unit::Seconds,
        infer_family,
    );

    let export_failures = Counter::default();
    r.register(
        "keel_telemetry_export_failures",
        "Batches a telemetry exporter failed to deliver",
        export_failures.clone(),
    );
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", crate::VERSION)])
        .set(1);
    r.register("keel_build_info", "keel's version (value 1)", info);

    r.register_collector(Box::new(sources::SourcesCollector));

    let m = Metrics {
        ops,
        op_seconds,
        auth,
        messages,
        message_bytes,
        conversations,
        pool_wait,
        busy_retries,
        busy_failures,
        stage_seconds,
        candidates,
        queries,
        reranks,
        batch_size,
        inference_seconds,
        export_failures,
    };
    (r, m)
}

#[cfg(test)]
mod tests;
