//! `keel.ApiKeys`, `keel.ApiKeyInfo`, `keel.Identity`.
//!
//! Database calls and hashing run without the GIL. A cached verification takes about a
//! microsecond, so `verify` is fine to call from an async handler; the uncached path reads (and
//! once per cache TTL writes `last_used_at`) in SQLite, also without the GIL. That write never
//! waits for another connection's write lock (it is skipped and counted instead), and a refused
//! key's audit entry waits at most 100 ms; the read, though, is blocking I/O: from an event loop,
//! run an uncached verify in a thread pool.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use keel::auth::{ApiKeys, ApiKeysOptions, Identity, KeyInfo, NewKey};
use keel::crypto::{AuditEntry, AuditLog, AuditQuery, NewAuditEntry};
use keel::store::{Store, StoreOptions};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::telemetry::Traced;
use pyo3::types::{PyDict, PyString};

use crate::errors::{deprecated, invalid, to_py};
use crate::memory::PyKeyring;

fn secs_to_duration(what: &str, secs: f64) -> PyResult<Duration> {
    keel::clock::duration_from_secs(what, secs).map_err(to_py)
}

/// A list of strings; a lone `str` (which Python would iterate character by character) is a
/// `TypeError` naming the argument.
fn str_list(what: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of strings (e.g. {what}=[\"...\"]), not a single str"
        )));
    }
    value.extract::<Vec<String>>().map_err(|_| {
        let type_name = value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("{what} must be a list of strings, got {type_name}"))
    })
}

fn ms_to_secs(ms: Option<i64>) -> Option<f64> {
    ms.map(|m| m as f64 / 1000.0)
}

/// A verified key's identity.
#[pyclass(module = "keel._native", name = "Identity", frozen)]
pub struct PyIdentity {
    inner: Arc<Identity>,
}

#[pymethods]
impl PyIdentity {
    #[getter]
    fn key_id(&self) -> i64 {
        self.inner.key_id
    }
    #[getter]
    fn tenant(&self) -> &str {
        &self.inner.tenant
    }
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn env(&self) -> &str {
        &self.inner.env
    }
    #[getter]
    fn scopes(&self) -> Vec<String> {
        self.inner.scopes.clone()
    }
    /// `(limit, window_seconds)` of the key's own rate limit, if any.
    #[getter]
    fn rate_limit(&self) -> Option<(u64, f64)> {
        self.inner.rate_limit.map(|(l, w)| (l, w.as_secs_f64()))
    }
    fn has_scope(&self, scope: &str) -> bool {
        self.inner.has_scope(scope)
    }
    /// Raises `keel.MissingScope` unless the key has `scope`.
    fn require(&self, scope: &str) -> PyResult<()> {
        self.inner.require(scope).map_err(to_py)
    }
    /// The identity as plain JSON-able types: `{"key_id", "tenant", "name", "env", "scopes",
    /// "rate_limit" ({"limit", "window_seconds"} or None)}`; never the key or its hash. Not
    /// picklable: an Identity is proof of a verified key and cannot be rebuilt from data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("key_id", self.inner.key_id)?;
        d.set_item("tenant", &self.inner.tenant)?;
        d.set_item("name", &self.inner.name)?;
        d.set_item("env", &self.inner.env)?;
        d.set_item("scopes", &self.inner.scopes)?;
        d.set_item("rate_limit", rate_limit_dict(py, self.rate_limit())?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.Identity(key_id={}, tenant={:?}, name={:?}, scopes={:?})",
            self.inner.key_id, self.inner.tenant, self.inner.name, self.inner.scopes
        )
    }
}

/// A key's description (never its hash or plaintext).
/// Times are integer milliseconds since the Unix epoch (`*_at_ms`, as in Rust and C); the float
/// seconds names (`created_at`...) and `id` (now `key_id`) are deprecated.
#[pyclass(module = "keel._native", name = "ApiKeyInfo", frozen)]
pub struct PyKeyInfo {
    id: i64,
    #[pyo3(get)]
    tenant: String,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    env: String,
    #[pyo3(get)]
    display: String,
    #[pyo3(get)]
    scopes: Vec<String>,
    #[pyo3(get)]
    metadata: Option<String>,
    #[pyo3(get)]
    rate_limit: Option<(u64, f64)>,
    created_at: f64,
    expires_at: Option<f64>,
    revoked_at: Option<f64>,
    last_used_at: Option<f64>,
    #[pyo3(get)]
    replaced_by: Option<i64>,
}

/// Seconds held as `f64` back to the milliseconds they came from (exact: an epoch time in
/// milliseconds keeps sub-microsecond precision as f64 seconds until the year 2242).
fn secs_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

impl From<KeyInfo> for PyKeyInfo {
    fn from(k: KeyInfo) -> Self {
        Self {
            id: k.id,
            tenant: k.tenant,
            name: k.name,
            env: k.env,
            display: k.display,
            scopes: k.scopes,
            metadata: k.metadata,
            rate_limit: k.rate_limit.map(|(l, w)| (l, w.as_secs_f64())),
            created_at: k.created_at_ms as f64 / 1000.0,
            expires_at: ms_to_secs(k.expires_at_ms),
            revoked_at: ms_to_secs(k.revoked_at_ms),
            last_used_at: ms_to_secs(k.last_used_at_ms),
            replaced_by: k.replaced_by,
        }
    }
}

fn rate_limit_dict(
    py: Python<'_>,
    limit: Option<(u64, f64)>,
) -> PyResult<Option<Bound<'_, PyDict>>> {
    limit
        .map(|(limit, window)| {
            let d = PyDict::new(py);
            d.set_item("limit", limit)?;
            d.set_item("window_seconds", window)?;
            Ok(d)
        })
        .transpose()
}

/// An `ApiKeyInfo`'s fields for pickle, in two tuples (PyO3 converts tuples of up to 12).
type KeyInfoFields = (
    (
        i64,
        String,
        String,
        String,
        String,
        Vec<String>,
        Option<String>,
    ),
    (
        Option<(u64, f64)>,
        f64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
    ),
);

#[pymethods]
impl PyKeyInfo {
    /// The key's id (the `key_id` argument of `get`, `revoke`, `rotate`).
    #[getter]
    fn key_id(&self) -> i64 {
        self.id
    }
    /// Deprecated name of `key_id`.
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<i64> {
        deprecated(py, c"ApiKeyInfo.id is deprecated: use ApiKeyInfo.key_id")?;
        Ok(self.id)
    }
    #[getter]
    fn created_at_ms(&self) -> i64 {
        secs_to_ms(self.created_at)
    }
    #[getter]
    fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at.map(secs_to_ms)
    }
    #[getter]
    fn revoked_at_ms(&self) -> Option<i64> {
        self.revoked_at.map(secs_to_ms)
    }
    #[getter]
    fn last_used_at_ms(&self) -> Option<i64> {
        self.last_used_at.map(secs_to_ms)
    }
    /// Deprecated: `created_at_ms` / 1000.
    #[getter]
    fn created_at(&self, py: Python<'_>) -> PyResult<f64> {
        deprecated(
            py,
            c"ApiKeyInfo.created_at is deprecated: use created_at_ms (integer ms)",
        )?;
        Ok(self.created_at)
    }
    /// Deprecated: `expires_at_ms` / 1000.
    #[getter]
    fn expires_at(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        deprecated(
            py,
            c"ApiKeyInfo.expires_at is deprecated: use expires_at_ms (integer ms)",
        )?;
        Ok(self.expires_at)
    }
    /// Deprecated: `revoked_at_ms` / 1000.
    #[getter]
    fn revoked_at(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        deprecated(
            py,
            c"ApiKeyInfo.revoked_at is deprecated: use revoked_at_ms (integer ms)",
        )?;
        Ok(self.revoked_at)
    }
    /// Deprecated: `last_used_at_ms` / 1000.
    #[getter]
    fn last_used_at(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        deprecated(
            py,
            c"ApiKeyInfo.last_used_at is deprecated: use last_used_at_ms (integer ms)",
        )?;
        Ok(self.last_used_at)
    }

    /// The description as plain JSON-able types: every attribute (`metadata` as its JSON text,
    /// `rate_limit` as {"limit", "window_seconds"} or None, times in Unix seconds); never the key
    /// or its hash.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("key_id", self.id)?;
        d.set_item("id", self.id)?;
        d.set_item("tenant", &self.tenant)?;
        d.set_item("name", &self.name)?;
        d.set_item("env", &self.env)?;
        d.set_item("display", &self.display)?;
        d.set_item("scopes", &self.scopes)?;
        d.set_item("metadata", &self.metadata)?;
        d.set_item("rate_limit", rate_limit_dict(py, self.rate_limit)?)?;
        d.set_item("created_at", self.created_at)?;
        d.set_item("expires_at", self.expires_at)?;
        d.set_item("revoked_at", self.revoked_at)?;
        d.set_item("last_used_at", self.last_used_at)?;
        d.set_item("created_at_ms", self.created_at_ms())?;
        d.set_item("expires_at_ms", self.expires_at_ms())?;
        d.set_item("revoked_at_ms", self.revoked_at_ms())?;
        d.set_item("last_used_at_ms", self.last_used_at_ms())?;
        d.set_item("replaced_by", self.replaced_by)?;
        Ok(d)
    }

    /// Rebuilds a description from its fields (used by pickle).
    #[classmethod]
    fn _restore(_cls: &Bound<'_, pyo3::types::PyType>, f: KeyInfoFields) -> Self {
        let ((id, tenant, name, env, display, scopes, metadata), times) = f;
        let (rate_limit, created_at, expires_at, revoked_at, last_used_at, replaced_by) = times;
        Self {
            id,
            tenant,
            name,
            env,
            display,
            scopes,
            metadata,
            rate_limit,
            created_at,
            expires_at,
            revoked_at,
            last_used_at,
            replaced_by,
        }
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (KeyInfoFields,))> {
        let k = slf.get();
        Ok((
            slf.get_type().getattr("_restore")?,
            ((
                (
                    k.id,
                    k.tenant.clone(),
                    k.name.clone(),
                    k.env.clone(),
                    k.display.clone(),
                    k.scopes.clone(),
                    k.metadata.clone(),
                ),
                (
                    k.rate_limit,
                    k.created_at,
                    k.expires_at,
                    k.revoked_at,
                    k.last_used_at,
                    k.replaced_by,
                ),
            ),),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.ApiKeyInfo(key_id={}, tenant={:?}, name={:?}, display={:?}, scopes={:?}, revoked={})",
            self.id,
            self.tenant,
            self.name,
            self.display,
            self.scopes,
            if self.revoked_at.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// The API-key registry on a SQLite database (the same file as `keel.Memory` may use).
/// `cache_ttl` (seconds) and `cache_entries` default (None) to the core's defaults (1 s, 10 000).
#[pyclass(module = "keel._native", name = "ApiKeys", frozen)]
pub struct PyApiKeys {
    pub(crate) inner: Arc<ApiKeys>,
}

#[pymethods]
impl PyApiKeys {
    /// Identifies the database connection pool this object uses, within the process: objects
    /// that share one pool (e.g. an `Engine`'s memory, API keys and audit log) report the same id.
    #[getter]
    fn store_id(&self) -> Option<u64> {
        self.inner.store_id()
    }

    #[new]
    #[pyo3(signature = (path, keyring, *, cache_ttl = None, cache_entries = None, audit = None, accepted_envs = None))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        keyring: &PyKeyring,
        cache_ttl: Option<f64>,
        cache_entries: Option<u64>,
        audit: Option<&PyAuditLog>,
        accepted_envs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // None: the core's defaults (keel::auth::DEFAULT_CACHE_TTL and DEFAULT_CACHE_ENTRIES).
        let options = ApiKeysOptions::new(
            cache_ttl
                .map(|s| secs_to_duration("cache_ttl", s))
                .transpose()?,
            cache_entries,
            accepted_envs
                .map(|v| str_list("accepted_envs", v))
                .transpose()?,
        )
        .map_err(to_py)?;
        let keyring = keyring.inner.clone();
        let audit = audit.map(|a| a.inner.clone());
        let inner = py
            .traced(|| {
                let store = Store::open(&path, StoreOptions::default())?;
                let keys = ApiKeys::new(store, keyring, options)?;
                match audit {
                    Some(a) => keys.try_with_audit(a),
                    None => Ok(keys),
                }
            })
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Creates a key. Returns `(plaintext, info)`: show the plaintext once, store it nowhere.
    /// `expires_at_ms`: when the key stops working, in ms since the Unix epoch (`expires_at`,
    /// float seconds, is the deprecated old name).
    #[pyo3(signature = (tenant, name, *, env = keel::auth::DEFAULT_ENV.to_owned(), scopes = None, expires_at_ms = None, metadata = None, rate_limit = None, actor = keel::auth::DEFAULT_ACTOR, expires_at = None))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        py: Python<'_>,
        tenant: String,
        name: String,
        env: String,
        scopes: Option<&Bound<'_, PyAny>>,
        expires_at_ms: Option<i64>,
        metadata: Option<String>,
        rate_limit: Option<(u64, f64)>,
        actor: &str,
        expires_at: Option<f64>,
    ) -> PyResult<(String, PyKeyInfo)> {
        let expires_at = match (expires_at_ms, expires_at) {
            (Some(ms), None) => {
                let ms = u64::try_from(ms).map_err(|_| {
                    invalid(format!(
                        "expires_at_ms must be milliseconds since the Unix epoch, >= 0 (got {ms})"
                    ))
                })?;
                Some(UNIX_EPOCH + Duration::from_millis(ms))
            }
            (None, Some(s)) => {
                deprecated(
                    py,
                    c"ApiKeys.create(expires_at=...) is deprecated: use expires_at_ms= (integer ms)",
                )?;
                let d = secs_to_duration("expires_at", s)?;
                Some(UNIX_EPOCH.checked_add(d).ok_or_else(|| {
                    invalid(format!(
                        "expires_at of {s} seconds is beyond the clock's range"
                    ))
                })?)
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give expires_at_ms only (expires_at is its deprecated old name)",
                ))
            }
        };
        let rate_limit = rate_limit
            .map(|(l, w)| secs_to_duration("rate_limit window", w).map(|d| (l, d)))
            .transpose()?;
        let scopes = scopes
            .map(|v| str_list("scopes", v))
            .transpose()?
            .unwrap_or_default();
        let new = NewKey {
            tenant,
            name,
            env,
            scopes,
            expires_at,
            metadata,
            rate_limit,
        };
        let keys = self.inner.clone();
        let (plaintext, info) = py.traced(|| keys.create(actor, &new)).map_err(to_py)?;
        Ok((plaintext.to_string(), info.into()))
    }

    /// Verifies a presented key; raises `keel.AuthError` (with `.reason`) when refused.
    fn verify(&self, py: Python<'_>, key: &str) -> PyResult<PyIdentity> {
        let keys = self.inner.clone();
        let key = key.to_owned();
        let identity = py.traced(move || keys.verify(&key)).map_err(to_py)?;
        Ok(PyIdentity { inner: identity })
    }

    /// Whether `key` has the shape and checksum of a keel API key (offline: no database, no
    /// audit). A key that is not well formed can never verify.
    #[staticmethod]
    fn is_well_formed(key: &str) -> bool {
        keel::auth::parse(key).is_ok()
    }

    /// `last_used_at` writes skipped because the database was busy (they never wait).
    #[getter]
    fn last_used_skipped(&self) -> u64 {
        self.inner.last_used_skipped()
    }

    /// Refused verifications not recorded in the audit log because the database stayed busy.
    #[getter]
    fn refusal_audits_skipped(&self) -> u64 {
        self.inner.refusal_audits_skipped()
    }

    fn get(&self, py: Python<'_>, tenant: &str, key_id: i64) -> PyResult<PyKeyInfo> {
        let keys = self.inner.clone();
        let tenant = tenant.to_owned();
        Ok(py
            .traced(move || keys.get(&tenant, key_id))
            .map_err(to_py)?
            .into())
    }

    fn list(&self, py: Python<'_>, tenant: &str) -> PyResult<Vec<PyKeyInfo>> {
        let keys = self.inner.clone();
        let tenant = tenant.to_owned();
        let infos = py.traced(move || keys.list(&tenant)).map_err(to_py)?;
        Ok(infos.into_iter().map(Into::into).collect())
    }

    /// Revokes a key: refused at once in this process, within `cache_ttl` in others.
    #[pyo3(signature = (tenant, key_id, *, actor = keel::auth::DEFAULT_ACTOR))]
    fn revoke(&self, py: Python<'_>, tenant: &str, key_id: i64, actor: &str) -> PyResult<()> {
        let keys = self.inner.clone();
        let (tenant, actor) = (tenant.to_owned(), actor.to_owned());
        py.traced(move || keys.revoke(&actor, &tenant, key_id))
            .map_err(to_py)
    }

    /// Replaces a key; the old one keeps working for `grace` seconds. Returns `(plaintext, info)`
    /// of the new key. `grace` defaults to the core's `DEFAULT_ROTATION_GRACE` (3600 s).
    #[pyo3(signature = (tenant, key_id, *, grace = keel::auth::DEFAULT_ROTATION_GRACE.as_secs_f64(), actor = keel::auth::DEFAULT_ACTOR))]
    fn rotate(
        &self,
        py: Python<'_>,
        tenant: &str,
        key_id: i64,
        grace: f64,
        actor: &str,
    ) -> PyResult<(String, PyKeyInfo)> {
        let grace = secs_to_duration("grace", grace)?;
        let keys = self.inner.clone();
        let (tenant, actor) = (tenant.to_owned(), actor.to_owned());
        let (plaintext, info) = py
            .traced(move || keys.rotate(&actor, &tenant, key_id, grace))
            .map_err(to_py)?;
        Ok((plaintext.to_string(), info.into()))
    }
}

/// One recorded audit entry.
/// `at_ms`: milliseconds since the Unix epoch (`at`, float seconds, is deprecated).
#[pyclass(module = "keel._native", name = "AuditEntry", frozen)]
pub struct PyAuditEntry {
    #[pyo3(get)]
    seq: i64,
    at: f64,
    #[pyo3(get)]
    actor: String,
    #[pyo3(get)]
    action: String,
    #[pyo3(get)]
    target: String,
    #[pyo3(get)]
    outcome: String,
    #[pyo3(get)]
    request_id: Option<String>,
}

impl From<AuditEntry> for PyAuditEntry {
    fn from(e: AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: e.at_ms as f64 / 1000.0,
            actor: e.entry.actor,
            action: e.entry.action,
            target: e.entry.target,
            outcome: e.entry.outcome,
            request_id: e.entry.request_id,
        }
    }
}

type AuditEntryFields = (i64, f64, String, String, String, String, Option<String>);

#[pymethods]
impl PyAuditEntry {
    #[getter]
    fn at_ms(&self) -> i64 {
        secs_to_ms(self.at)
    }
    /// Deprecated: `at_ms` / 1000.
    #[getter]
    fn at(&self, py: Python<'_>) -> PyResult<f64> {
        deprecated(
            py,
            c"AuditEntry.at is deprecated: use AuditEntry.at_ms (integer ms)",
        )?;
        Ok(self.at)
    }

    /// The entry as plain JSON-able types: `{"seq", "at" (Unix seconds), "actor", "action",
    /// "target", "outcome", "request_id"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("seq", self.seq)?;
        d.set_item("at", self.at)?;
        d.set_item("at_ms", self.at_ms())?;
        d.set_item("actor", &self.actor)?;
        d.set_item("action", &self.action)?;
        d.set_item("target", &self.target)?;
        d.set_item("outcome", &self.outcome)?;
        d.set_item("request_id", &self.request_id)?;
        Ok(d)
    }

    /// Rebuilds an entry from its fields (used by pickle).
    #[classmethod]
    fn _restore(_cls: &Bound<'_, pyo3::types::PyType>, f: AuditEntryFields) -> Self {
        Self {
            seq: f.0,
            at: f.1,
            actor: f.2,
            action: f.3,
            target: f.4,
            outcome: f.5,
            request_id: f.6,
        }
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (AuditEntryFields,))> {
        let e = slf.get();
        Ok((
            slf.get_type().getattr("_restore")?,
            ((
                e.seq,
                e.at,
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.outcome.clone(),
                e.request_id.clone(),
            ),),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.AuditEntry(seq={}, actor={:?}, action={:?}, target={:?}, outcome={:?})",
            self.seq, self.actor, self.action, self.target, self.outcome
        )
    }
}

/// The tamper-evident, encrypted audit log (in the same SQLite file as the keys it audits).
#[pyclass(module = "keel._native", name = "AuditLog", frozen)]
pub struct PyAuditLog {
    pub(crate) inner: Arc<AuditLog>,
}

#[pymethods]
impl PyAuditLog {
    /// Identifies the database connection pool this object uses, within the process: objects
    /// that share one pool (e.g. an `Engine`'s memory, API keys and audit log) report the same id.
    #[getter]
    fn store_id(&self) -> Option<u64> {
        self.inner.store_id()
    }

    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf, keyring: &PyKeyring) -> PyResult<Self> {
        let keyring = keyring.inner.clone();
        let store = py
            .traced(|| Store::open(&path, StoreOptions::default()))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(AuditLog::new(store, keyring)),
        })
    }

    /// Records an entry; returns its sequence number.
    #[pyo3(signature = (actor, action, target = String::new(), outcome = keel::crypto::audit::DEFAULT_OUTCOME.to_owned(), request_id = None))]
    fn append(
        &self,
        py: Python<'_>,
        actor: String,
        action: String,
        target: String,
        outcome: String,
        request_id: Option<String>,
    ) -> PyResult<i64> {
        let e = NewAuditEntry {
            actor,
            action,
            target,
            outcome,
            request_id,
        };
        let log = self.inner.clone();
        py.traced(move || log.append(&e)).map_err(to_py)
    }

    /// Entries (oldest first) by actor and/or time range `[since_ms, until_ms)` in epoch
    /// milliseconds; at most `limit`, which defaults to the core's `DEFAULT_QUERY_LIMIT` (1000).
    /// `since` / `until` (float seconds) are the deprecated old names.
    #[pyo3(signature = (*, actor = None, since_ms = None, until_ms = None, limit = i64::from(keel::crypto::audit::DEFAULT_QUERY_LIMIT), since = None, until = None))]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        actor: Option<String>,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        limit: i64,
        since: Option<f64>,
        until: Option<f64>,
    ) -> PyResult<Vec<PyAuditEntry>> {
        let bound = |new: Option<i64>, old: Option<f64>, name: &str| -> PyResult<Option<i64>> {
            match (new, old) {
                (_, None) => Ok(new),
                (Some(_), Some(_)) => Err(invalid(format!(
                    "give {name}_ms only ({name} is its deprecated old name)"
                ))),
                (None, Some(s)) => {
                    let msg = std::ffi::CString::new(format!(
                        "AuditLog.query({name}=...) is deprecated: use {name}_ms= (integer ms)"
                    ))
                    .unwrap_or_default();
                    deprecated(py, &msg)?;
                    Ok(Some((s * 1000.0) as i64))
                }
            }
        };
        let since_ms = bound(since_ms, since, "since")?;
        let until_ms = bound(until_ms, until, "until")?;
        let limit = u32::try_from(limit).map_err(|_| {
            invalid(format!(
                "limit must be between 0 and {} (got {limit}); 0 means {}",
                u32::MAX,
                keel::crypto::audit::DEFAULT_QUERY_LIMIT
            ))
        })?;
        let q = AuditQuery {
            actor,
            from_ms: since_ms,
            until_ms,
            limit,
        };
        let log = self.inner.clone();
        let entries = py.traced(move || log.query(&q)).map_err(to_py)?;
        Ok(entries.into_iter().map(Into::into).collect())
    }

    /// Checks the whole chain; returns a `keel.AuditVerification` (a tuple
    /// `(entries, head_hex)` with those field names) or raises `keel.AuditTampered`.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        static RECORD: pyo3::sync::GILOnceCell<Py<PyAny>> = pyo3::sync::GILOnceCell::new();
        let log = self.inner.clone();
        let v = py.traced(move || log.verify()).map_err(to_py)?;
        let head: String = v.head.iter().map(|b| format!("{b:02x}")).collect();
        let record = RECORD.get_or_try_init(py, || {
            py.import("keel._types")?
                .getattr("AuditVerification")
                .map(Bound::unbind)
        })?;
        record.bind(py).call1((v.entries, head))
    }
}
