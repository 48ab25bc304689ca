//! `keel.RateLimiter`, `keel.Decision`, `keel.check_all`.
//!
//! A decision takes about a hundred nanoseconds and never blocks, so these calls keep the GIL
//! (releasing and re-taking it would cost more than the decision). Headers are rendered on demand:
//! `headers()` as `str` pairs, `raw_headers()` as the `bytes` pairs an ASGI response wants.

use std::sync::Arc;
use std::time::Duration;

use keel::ratelimit::{
    policy_value, ratelimit_value, window_from_secs, window_secs, Algorithm, Decision,
    LimiterOptions, Policy, RateLimiter, HEADER_NAMES,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use std::cell::RefCell;

use pyo3::pybacked::PyBackedStr;
use pyo3::sync::{GILOnceCell, GILProtected};
use pyo3::types::{PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{deprecated, deprecated_once, invalid, to_py};
use std::sync::atomic::AtomicBool;

/// An integer argument: its value if it fits a `u64`, else why not (negative or too large,
/// with the value's text for the message). Anything but an `int` is a `TypeError` naming the
/// argument and the type received.
enum IntArg {
    Fits(u64),
    Negative(String),
    TooLarge(String),
}

fn type_error(name: &str, expected: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let got = obj
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string());
    PyTypeError::new_err(format!("{name} must be {expected}, not {got}"))
}

fn int_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<IntArg> {
    if !obj.is_instance_of::<PyInt>() {
        return Err(type_error(name, "an int", obj));
    }
    if let Ok(n) = obj.extract::<u64>() {
        return Ok(IntArg::Fits(n));
    }
    let text = obj.str().map_or_else(|_| "?".to_owned(), |s| s.to_string());
    Ok(if obj.lt(0)? {
        IntArg::Negative(text)
    } else {
        IntArg::TooLarge(text)
    })
}

/// Seconds as a float (or an `int`; one too large for a float is refused naming its value).
fn secs_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<f64>().map_err(|_| {
            let text = obj.str().map_or_else(|_| "?".to_owned(), |s| s.to_string());
            policy_err(format!("{name} of {text} seconds is out of range"))
        });
    }
    if obj.is_instance_of::<PyFloat>() {
        return obj.extract::<f64>();
    }
    Err(type_error(name, "a number of seconds (int or float)", obj))
}

/// A key: only `str` (a `TypeError` naming the type otherwise; never the value, which may be
/// sensitive).
/// A key argument: a `str`, read as UTF-8 without a copy where the ABI allows (`PyBackedStr`
/// borrows the str's own UTF-8 on Python >= 3.10; the 3.9 stable ABI of the abi3 wheel has no
/// such view, so there it holds an encoded bytes object).
fn key_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<PyBackedStr> {
    let s = obj
        .downcast::<PyString>()
        .map_err(|_| type_error(name, "a str", obj))?;
    PyBackedStr::try_from(s.clone())
}

fn policy_err(msg: String) -> PyErr {
    to_py(keel::RateLimitError::InvalidPolicy(msg).into())
}

fn make_policy(
    name: &str,
    limit: &Bound<'_, PyAny>,
    window: &Bound<'_, PyAny>,
    algorithm: &str,
) -> PyResult<Policy> {
    let limit = match int_arg(limit, "limit")? {
        IntArg::Fits(n) => n,
        IntArg::Negative(v) => {
            return Err(policy_err(format!("limit must be at least 1 (got {v})")))
        }
        IntArg::TooLarge(v) => {
            return Err(policy_err(format!(
                "limit must be at most {} (got {v})",
                u64::MAX
            )))
        }
    };
    let window = window_from_secs(secs_arg(window, "window")?).map_err(to_py)?;
    let algorithm = Algorithm::parse(algorithm).map_err(to_py)?;
    Policy::new(name, limit, window, algorithm).map_err(to_py)
}

fn cost_of(cost: &Bound<'_, PyAny>) -> PyResult<u64> {
    match int_arg(cost, "cost")? {
        IntArg::Fits(n) => Ok(n),
        IntArg::Negative(v) => Err(invalid(format!("cost must not be negative (got {v})"))),
        IntArg::TooLarge(v) => Err(invalid(format!(
            "cost must be at most {} (got {v})",
            u64::MAX
        ))),
    }
}

/// `max_keys=`: `None` leaves the bound to the core ([`LimiterOptions::max_keys`]).
fn max_keys_of(max_keys: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    let Some(obj) = max_keys.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    match int_arg(obj, "max_keys")? {
        IntArg::Fits(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        IntArg::Negative(v) => Err(invalid(format!("max_keys must be at least 1 (got {v})"))),
        IntArg::TooLarge(v) => Err(invalid(format!(
            "max_keys must be at most {} (got {v})",
            u64::MAX
        ))),
    }
}

/// Limits each key to `limit` units of cost per `window` seconds.
#[pyclass(module = "keel._native", name = "RateLimiter", frozen)]
pub struct PyRateLimiter {
    inner: Arc<RateLimiter>,
    /// The default policy's constant headers, rendered once: a 2-tuple of ASGI header tuples.
    consts: Py<PolicyHeaders>,
}

/// The two headers that depend only on the policy (`RateLimit-Policy`, `X-RateLimit-Limit`),
/// as a 2-tuple of ready ASGI `(name, value)` tuples.
fn policy_headers<'py>(py: Python<'py>, d: &Decision) -> PyResult<Bound<'py, PyTuple>> {
    let mut v = String::new();
    policy_value(&mut v, &d.policy, d.limit, window_secs(d));
    PyTuple::new(
        py,
        [
            pair(py, 0, v.as_bytes())?,
            pair(py, 2, itoa::Buffer::new().format(d.limit).as_bytes())?,
        ],
    )
}

impl PyRateLimiter {
    /// Wraps a core limiter (also one an `Engine` shares), rendering its policy headers once.
    pub(crate) fn from_core(inner: Arc<RateLimiter>) -> PyResult<Self> {
        let p = inner.policy();
        let template = Decision {
            allowed: true,
            limit: p.limit(),
            remaining: p.limit(),
            reset: Duration::ZERO,
            retry_after: None,
            policy: inner.policy_name().clone(),
            window: p.window(),
            degraded: false,
        };
        let consts = Python::with_gil(|py| {
            Py::new(
                py,
                PolicyHeaders {
                    fixed: policy_headers(py, &template)?.unbind(),
                    recent: GILProtected::new(RefCell::new(vec![None; RECENT_SLOTS])),
                },
            )
        })?;
        Ok(Self { inner, consts })
    }

    /// The cached policy headers when `d` was decided by the default policy.
    fn consts_for(&self, py: Python<'_>, d: &Decision) -> Option<Py<PolicyHeaders>> {
        Arc::ptr_eq(&d.policy, self.inner.policy_name()).then(|| self.consts.clone_ref(py))
    }
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (limit, window, *, algorithm=None, name=None, max_keys=None, shared_path=None, shared=None, redis_url=None, on_redis_error=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        algorithm: Option<&str>,
        name: Option<&str>,
        max_keys: Option<&Bound<'_, PyAny>>,
        shared_path: Option<&Bound<'_, PyAny>>,
        shared: Option<&Bound<'_, PyAny>>,
        redis_url: Option<&str>,
        on_redis_error: Option<&str>,
    ) -> PyResult<Self> {
        let shared_path = shared_path.filter(|s| !s.is_none());
        let shared = match shared.filter(|s| !s.is_none()) {
            Some(_) if shared_path.is_some() => {
                return Err(invalid(
                    "give shared_path= only (shared= is its deprecated old name)",
                ))
            }
            Some(old) => {
                deprecated(
                    py,
                    c"RateLimiter(shared=...) is deprecated: use shared_path=...",
                )?;
                Some(old)
            }
            None => shared_path,
        };
        let policy = make_policy(
            name.unwrap_or(Policy::DEFAULT_NAME),
            limit,
            window,
            algorithm.unwrap_or(Algorithm::DEFAULT.as_str()),
        )?;
        // None: the core's default (OnRedisError::default()).
        let on_error = on_redis_error
            .map(keel::ratelimit::OnRedisError::parse)
            .transpose()
            .map_err(to_py)?
            .unwrap_or_default();
        if let Some(url) = redis_url {
            if shared.is_some() || max_keys.is_some_and(|m| !m.is_none()) {
                return Err(crate::errors::invalid(
                    "redis_url: a Redis limiter takes neither shared_path nor max_keys",
                ));
            }
            let r = keel::redis::Redis::open(url, keel::redis::RedisOptions::default())
                .map_err(to_py)?;
            let inner = RateLimiter::redis(policy, r, on_error).map_err(to_py)?;
            return Self::from_core(Arc::new(inner));
        }
        let shared_path = match shared.filter(|s| !s.is_none()) {
            None => None,
            Some(obj) => Some(
                obj.extract::<std::path::PathBuf>()
                    .map_err(|_| type_error("shared_path", "a str or os.PathLike path", obj))?,
            ),
        };
        let options = LimiterOptions {
            shared_path,
            max_keys: max_keys_of(max_keys)?,
        };
        // Opening a shared limiter maps a file (and may create it): without the GIL.
        let inner = py
            .allow_threads(|| RateLimiter::open(policy, options))
            .map_err(to_py)?;
        Self::from_core(Arc::new(inner))
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.inner.policy().limit()
    }

    #[getter]
    fn window(&self) -> f64 {
        self.inner.policy().window().as_secs_f64()
    }

    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.policy().algorithm().as_str()
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.policy().name().to_owned()
    }

    /// Whether the state is shared with the other processes of this host.
    #[getter]
    fn shared(&self) -> bool {
        self.inner.is_host_shared()
    }

    /// The host-shared state file (derived from `shared=` and the policy), or None.
    #[getter]
    fn shared_path(&self) -> Option<std::path::PathBuf> {
        self.inner.shared_path().map(std::path::Path::to_path_buf)
    }

    /// Deprecated name of `check` (warns once per process).
    #[pyo3(signature = (key, cost=None), text_signature = "(self, key, cost=1)")]
    fn hit(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyDecision> {
        static WARNED: AtomicBool = AtomicBool::new(false);
        deprecated_once(
            py,
            &WARNED,
            c"RateLimiter.hit is deprecated: use RateLimiter.check (same arguments and result)",
        )?;
        self.check(py, key, cost)
    }

    /// Counts one request of `cost` units for `key`; returns the decision (allowed or not).
    #[pyo3(signature = (key, cost=None), text_signature = "(self, key, cost=1)")]
    fn check(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyDecision> {
        let key = key_arg(key, "key")?;
        let cost = match cost {
            Some(c) => cost_of(c)?,
            None => 1,
        };
        let d = if self.inner.is_host_shared() || self.inner.is_redis() {
            // Other processes may hold the key's stripe lock: wait without the GIL.
            let inner = self.inner.clone();
            let key = key.to_string();
            py.allow_threads(move || inner.check(&key, cost))
        } else {
            self.inner.check(&key, cost)
        }
        .map_err(to_py)?;
        let consts = self.consts_for(py, &d);
        Ok(PyDecision { inner: d, consts })
    }

    /// Uses another limit for one key (e.g. a paid plan's API key).
    #[pyo3(signature = (key, limit, window, *, algorithm=None, name=None))]
    fn set_override(
        &self,
        key: &Bound<'_, PyAny>,
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        algorithm: Option<&str>,
        name: Option<&str>,
    ) -> PyResult<()> {
        let p = self.inner.policy();
        let policy = make_policy(
            name.unwrap_or(p.name()),
            limit,
            window,
            algorithm.unwrap_or(p.algorithm().as_str()),
        )?;
        let key = key_arg(key, "key")?;
        self.inner.set_override(&key, policy).map_err(to_py)
    }

    /// Removes a key's override; returns whether there was one.
    fn remove_override(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.remove_override(&key_arg(key, "key")?))
    }

    /// `{"allowed", "denied", "keys", "evicted_active"}` counters.
    fn stats(&self) -> std::collections::HashMap<&'static str, u64> {
        let s = self.inner.stats();
        [
            ("allowed", s.allowed),
            ("denied", s.denied),
            ("keys", s.keys),
            ("evicted_active", s.evicted_active),
        ]
        .into_iter()
        .collect()
    }

    /// Forgets every key's state.
    fn reset(&self) {
        self.inner.reset();
    }

    fn __repr__(&self) -> String {
        let p = self.inner.policy();
        format!(
            "keel.RateLimiter(limit={}, window={}, algorithm={:?}, name={:?})",
            p.limit(),
            p.window().as_secs_f64(),
            p.algorithm().as_str(),
            p.name()
        )
    }
}

/// The outcome of a rate-limit check.
#[pyclass(module = "keel._native", name = "Decision", frozen)]
pub struct PyDecision {
    inner: Decision,
    /// The deciding policy's constant headers, when its limiter has them rendered already.
    consts: Option<Py<PolicyHeaders>>,
}

const RECENT_SLOTS: usize = 256;

/// What a limiter renders once for its default policy: the two constant headers, and a small
/// direct-mapped cache of recent `RateLimit` header tuples keyed by (remaining, reset).
#[pyclass(frozen)]
struct PolicyHeaders {
    fixed: Py<PyTuple>,
    #[allow(clippy::type_complexity)]
    recent: GILProtected<RefCell<Vec<Option<(u64, u64, Py<PyTuple>)>>>>,
}

impl PolicyHeaders {
    fn ratelimit<'py>(
        &self,
        py: Python<'py>,
        d: &Decision,
        reset: u64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let slot = (d.remaining.wrapping_mul(31).wrapping_add(reset) as usize) % RECENT_SLOTS;
        let mut recent = self.recent.get(py).borrow_mut();
        if let Some((r, t, tuple)) = &recent[slot] {
            if *r == d.remaining && *t == reset {
                return Ok(tuple.bind(py).clone());
            }
        }
        let tuple = ratelimit_pair(py, d, reset)?;
        recent[slot] = Some((d.remaining, reset, tuple.clone().unbind()));
        Ok(tuple)
    }
}

fn ratelimit_pair<'py>(py: Python<'py>, d: &Decision, reset: u64) -> PyResult<Bound<'py, PyTuple>> {
    let mut value = String::with_capacity(48 + d.policy.len());
    ratelimit_value(&mut value, &d.policy, d.remaining, reset);
    pair(py, 1, value.as_bytes())
}

/// Interned ASGI header names (lowercase bytes) and small numbers' header tuples, built once.
struct Interned {
    names: Vec<Py<PyBytes>>,
    /// `(name, b"<n>")` for the remaining / reset / retry-after headers, n < SMALL.
    remaining: Vec<Py<PyTuple>>,
    reset: Vec<Py<PyTuple>>,
    retry_after: Vec<Py<PyTuple>>,
}

const SMALL: u64 = 4096;
static INTERNED: GILOnceCell<Interned> = GILOnceCell::new();

fn interned(py: Python<'_>) -> PyResult<&Interned> {
    INTERNED.get_or_try_init(py, || {
        let names: Vec<Py<PyBytes>> = HEADER_NAMES
            .iter()
            .map(|n| PyBytes::new(py, n.to_ascii_lowercase().as_bytes()).unbind())
            .collect();
        let table = |idx: usize| -> PyResult<Vec<Py<PyTuple>>> {
            let mut buf = itoa::Buffer::new();
            (0..SMALL)
                .map(|n| {
                    let value = PyBytes::new(py, buf.format(n).as_bytes());
                    PyTuple::new(
                        py,
                        [names[idx].bind(py).clone().into_any(), value.into_any()],
                    )
                    .map(Bound::unbind)
                })
                .collect()
        };
        Ok(Interned {
            remaining: table(3)?,
            reset: table(4)?,
            retry_after: table(5)?,
            names,
        })
    })
}

/// An ASGI header tuple `(HEADER_NAMES[idx] lowercased, value)`.
fn pair<'py>(py: Python<'py>, idx: usize, value: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let name = interned(py)?.names[idx].bind(py).clone();
    PyTuple::new(py, [name.into_any(), PyBytes::new(py, value).into_any()])
}

fn number_pair<'py>(
    py: Python<'py>,
    cached: &[Py<PyTuple>],
    idx: usize,
    n: u64,
) -> PyResult<Bound<'py, PyTuple>> {
    match cached.get(n as usize) {
        Some(t) => Ok(t.bind(py).clone()),
        None => pair(py, idx, itoa::Buffer::new().format(n).as_bytes()),
    }
}

#[pymethods]
impl PyDecision {
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.allowed
    }

    /// True when a Redis limiter with ``on_redis_error="open"`` allowed without reaching Redis.
    #[getter]
    fn degraded(&self) -> bool {
        self.inner.degraded
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.inner.limit
    }

    #[getter]
    fn remaining(&self) -> u64 {
        self.inner.remaining
    }

    /// Seconds until the quota is fully available again (GCRA) or the window ends.
    #[getter]
    fn reset(&self) -> f64 {
        self.inner.reset.as_secs_f64()
    }

    /// When denied: seconds after which the same request would be allowed; else None.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after.map(|d| d.as_secs_f64())
    }

    /// The deciding policy's window, in seconds.
    #[getter]
    fn window(&self) -> f64 {
        self.inner.window.as_secs_f64()
    }

    /// The decision as plain JSON-able types: `{"allowed", "limit", "remaining", "reset",
    /// "retry_after", "window", "policy"}` (times in seconds).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        d.set_item("allowed", self.inner.allowed)?;
        d.set_item("limit", self.inner.limit)?;
        d.set_item("remaining", self.inner.remaining)?;
        d.set_item("reset", self.reset())?;
        d.set_item("retry_after", self.retry_after())?;
        d.set_item("window", self.window())?;
        d.set_item("policy", &*self.inner.policy)?;
        Ok(d)
    }

    #[getter]
    fn policy(&self) -> &str {
        &self.inner.policy
    }

    /// The response headers as `(name, value)` strings.
    fn headers(&self) -> Vec<(&'static str, String)> {
        self.inner.headers()
    }

    /// The response headers as lowercase `(name, value)` bytes pairs, ready for ASGI.
    fn raw_headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let d = &self.inner;
        let cache = interned(py)?;
        let reset = d.reset_secs();
        let (consts, ratelimit) = match &self.consts {
            Some(c) => {
                let c = c.get();
                (c.fixed.bind(py).clone(), c.ratelimit(py, d, reset)?)
            }
            None => (policy_headers(py, d)?, ratelimit_pair(py, d, reset)?),
        };
        let consts = (consts.get_item(0)?, consts.get_item(1)?);
        let ratelimit = ratelimit.into_any();
        let remaining = number_pair(py, &cache.remaining, 3, d.remaining)?.into_any();
        let reset = number_pair(py, &cache.reset, 4, reset)?.into_any();
        match d.retry_after_secs() {
            None => PyList::new(py, [consts.0, ratelimit, consts.1, remaining, reset]),
            Some(secs) => {
                let retry = number_pair(py, &cache.retry_after, 5, secs)?.into_any();
                PyList::new(py, [consts.0, ratelimit, consts.1, remaining, reset, retry])
            }
        }
    }

    fn __bool__(&self) -> bool {
        self.inner.allowed
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.Decision(allowed={}, limit={}, remaining={}, reset={:.3}, retry_after={}, policy={:?})",
            if self.inner.allowed { "True" } else { "False" },
            self.inner.limit,
            self.inner.remaining,
            self.inner.reset.as_secs_f64(),
            self.inner
                .retry_after
                .map_or_else(|| "None".to_owned(), |d| format!("{:.3}", d.as_secs_f64())),
            &*self.inner.policy
        )
    }
}

/// Checks one request against several (limiter, key) pairs, all-or-nothing: when one denies,
/// nothing is consumed from the others. Returns the denial, or the tightest allowing decision.
#[pyfunction]
#[pyo3(signature = (checks, cost=None), text_signature = "(checks, cost=1)")]
pub fn check_all(
    checks: Vec<(Bound<'_, PyRateLimiter>, Bound<'_, PyAny>)>,
    cost: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyDecision> {
    let cost = match cost {
        Some(c) => cost_of(c)?,
        None => 1,
    };
    let owned: Vec<(Arc<RateLimiter>, String)> = checks
        .iter()
        .map(|(l, k)| Ok((l.get().inner.clone(), key_arg(k, "key")?.to_string())))
        .collect::<PyResult<_>>()?;
    let decide = move || {
        let pairs: Vec<(&RateLimiter, &str)> =
            owned.iter().map(|(l, k)| (&**l, k.as_str())).collect();
        keel::ratelimit::check_all(&pairs, cost)
    };
    // Host-shared limiters may wait on other processes' stripe locks: do that without the GIL.
    // Redis limiters wait on the network.
    let shared = checks
        .iter()
        .any(|(l, _)| l.get().inner.is_host_shared() || l.get().inner.is_redis());
    let d = if shared {
        checks[0].0.py().allow_threads(decide)
    } else {
        decide()
    }
    .map_err(to_py)?;
    let consts = checks
        .iter()
        .find_map(|(l, _)| l.get().consts_for(l.py(), &d));
    Ok(PyDecision { inner: d, consts })
}
