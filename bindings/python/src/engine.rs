//! `keel.Engine`: every primitive built from one configuration, as attributes.
//!
//! The attributes wrap the engine's own core objects (`engine.memory`, `engine.api_keys`,
//! `engine.audit`, `engine.rate_limiters[name]`): one SQLite pool for memory, API keys and the
//! audit log, one budget per limiter. Each wrapper is made once, so `engine.memory is
//! engine.memory`.
//!
//! Caches are the exception, by necessity: `keel.Cache` holds Python objects, which a core byte
//! cache (what Rust and C get from `Engine::cache`) cannot hold. `engine.caches[name]` is
//! therefore a `keel.Cache` built from the same `[cache.<name>]` bounds, one per engine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use keel::Engine;
use pyo3::prelude::*;

use crate::telemetry::Traced;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use crate::auth::{PyApiKeys, PyAuditLog};
use crate::cache::PyCache;
use crate::errors::to_py;
use crate::memory::{PyKeyring, PyMemory};
use crate::neural::{register_onnxruntime, PyCrossEncoder, PyDenseIndex, PyEmbedder};
use crate::rag::PyBm25Index;
use crate::ratelimit::PyRateLimiter;

/// One store, one keyring, and every primitive built from one configuration.
#[pyclass(module = "keel._native", name = "Engine", frozen)]
pub struct PyEngine {
    inner: Arc<Engine>,
    memory: Py<PyMemory>,
    api_keys: Py<PyApiKeys>,
    audit: Option<Py<PyAuditLog>>,
    rate_limiters: BTreeMap<String, Py<PyRateLimiter>>,
    caches: BTreeMap<String, Py<PyCache>>,
    bm25: GILOnceCell<Py<PyBm25Index>>,
    embedder: GILOnceCell<Py<PyEmbedder>>,
    cross_encoder: GILOnceCell<Py<PyCrossEncoder>>,
    dense: GILOnceCell<Py<PyDenseIndex>>,
}

impl PyEngine {
    fn build(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        let engine = py.traced(|| Engine::open(path.as_deref())).map_err(to_py)?;
        let engine = Arc::new(engine);
        let mut rate_limiters = BTreeMap::new();
        for name in engine.rate_limiter_names() {
            let core = Arc::clone(engine.rate_limiter(&name).map_err(to_py)?);
            rate_limiters.insert(name, Py::new(py, PyRateLimiter::from_core(core)?)?);
        }
        let mut caches = BTreeMap::new();
        for name in engine.cache_names() {
            let config = engine.cache_config(&name).map_err(to_py)?.clone();
            let cache = Py::new(py, PyCache::from_config(config, &name)?)?;
            caches.insert(name, cache);
        }
        Ok(Self {
            memory: Py::new(py, PyMemory::from_core(Arc::clone(engine.memory())))?,
            api_keys: Py::new(
                py,
                PyApiKeys {
                    inner: Arc::clone(engine.api_keys()),
                },
            )?,
            audit: engine
                .audit()
                .map(|a| {
                    Py::new(
                        py,
                        PyAuditLog {
                            inner: Arc::clone(a),
                        },
                    )
                })
                .transpose()?,
            rate_limiters,
            caches,
            inner: engine,
            bm25: GILOnceCell::new(),
            embedder: GILOnceCell::new(),
            cross_encoder: GILOnceCell::new(),
            dense: GILOnceCell::new(),
        })
    }
}

#[pymethods]
impl PyEngine {
    /// Reads the TOML file at `config_path` (if given) and the `KEEL_*` environment variables
    /// (which override the file field by field), then opens everything. See docs/engine.md.
    #[new]
    #[pyo3(signature = (config_path = None))]
    fn new(py: Python<'_>, config_path: Option<PathBuf>) -> PyResult<Self> {
        Self::build(py, config_path)
    }

    /// An engine configured by `KEEL_*` environment variables alone.
    #[staticmethod]
    fn from_env(py: Python<'_>) -> PyResult<Self> {
        Self::build(py, None)
    }

    /// Conversation memory (`keel.Memory`) on the engine's database.
    #[getter]
    fn memory(&self, py: Python<'_>) -> Py<PyMemory> {
        self.memory.clone_ref(py)
    }

    /// The API-key registry (`keel.ApiKeys`), audited in `engine.audit` unless
    /// `api_keys.audit = false`.
    #[getter]
    fn api_keys(&self, py: Python<'_>) -> Py<PyApiKeys> {
        self.api_keys.clone_ref(py)
    }

    /// The audit log (`keel.AuditLog`), or None when `api_keys.audit = false`.
    #[getter]
    fn audit(&self, py: Python<'_>) -> Option<Py<PyAuditLog>> {
        self.audit.as_ref().map(|a| a.clone_ref(py))
    }

    /// The keyring every primitive uses.
    #[getter]
    fn keyring(&self) -> PyKeyring {
        PyKeyring {
            inner: self.inner.keyring(),
        }
    }

    /// The rate limiters of the `[ratelimit.<name>]` tables, by name (a new dict each time;
    /// the limiters in it are the engine's own).
    #[getter]
    fn rate_limiters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, l) in &self.rate_limiters {
            d.set_item(name, l.clone_ref(py))?;
        }
        Ok(d)
    }

    /// The caches of the `[cache.<name>]` tables, by name (a new dict each time; the caches in
    /// it are the engine's own).
    #[getter]
    fn caches<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, c) in &self.caches {
            d.set_item(name, c.clone_ref(py))?;
        }
        Ok(d)
    }

    /// The rate limiter `name`; `keel.UnknownComponent` (a `KeyError`) listing the configured
    /// names when there is none.
    fn rate_limiter(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyRateLimiter>> {
        match self.rate_limiters.get(name) {
            Some(l) => Ok(l.clone_ref(py)),
            None => Err(to_py(self.inner.rate_limiter(name).unwrap_err())),
        }
    }

    /// The shared cache of a `[cache.<name>]` table with `l2 = true` (L1 here, L2 in Redis,
    /// invalidated on every host); `keel.ConfigError` naming `cache.<name>.l2` otherwise.
    fn shared_cache(
        &self,
        py: Python<'_>,
        name: &str,
    ) -> PyResult<crate::shared_cache::PySharedCache> {
        let engine = Arc::clone(&self.inner);
        let name = name.to_owned();
        let inner = py
            .allow_threads(move || engine.shared_cache(&name))
            .map_err(to_py)?;
        Ok(crate::shared_cache::PySharedCache { inner })
    }

    /// Waits (without the GIL) until the engine's Redis invalidation subscriber is subscribed;
    /// returns whether it is (False after `timeout` seconds, or with no `[redis]` section).
    #[pyo3(signature = (timeout=5.0))]
    fn wait_redis_subscribed(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = std::time::Duration::try_from_secs_f64(timeout).map_err(|_| {
            crate::errors::invalid(format!(
                "timeout must be a finite number of seconds >= 0 (got {timeout})"
            ))
        })?;
        let Some(r) = self.inner.redis().cloned() else {
            return Ok(false);
        };
        Ok(py.allow_threads(move || r.wait_subscribed(timeout)))
    }

    /// The cache `name`; `keel.UnknownComponent` (a `KeyError`) listing the configured names
    /// when there is none.
    fn cache(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyCache>> {
        match self.caches.get(name) {
            Some(c) => Ok(c.clone_ref(py)),
            None => Err(to_py(self.inner.cache_config(name).unwrap_err())),
        }
    }

    /// The identity of the connection pool shared by memory, API keys and the audit log.
    #[getter]
    fn store_id(&self) -> u64 {
        self.inner.store_id()
    }

    /// The BM25 index (`keel.BM25Index`): `retrieval.bm25_index` opened when the file exists,
    /// else an empty index (save it there); in memory when no path is configured. Built on the
    /// first call, the same object afterwards.
    fn bm25(&self, py: Python<'_>) -> PyResult<Py<PyBm25Index>> {
        let engine = Arc::clone(&self.inner);
        self.bm25
            .get_or_try_init(py, || {
                let inner = py.traced(|| engine.bm25()).map_err(to_py)?;
                Py::new(py, PyBm25Index { inner })
            })
            .map(|v| v.clone_ref(py))
    }

    /// The embedding model of `retrieval.embedder` (`keel.Embedder`), loaded on the first call.
    fn embedder(&self, py: Python<'_>) -> PyResult<Py<PyEmbedder>> {
        // This interpreter's onnxruntime wheel, registered as for keel.Embedder.
        register_onnxruntime(py)?;
        let engine = Arc::clone(&self.inner);
        self.embedder
            .get_or_try_init(py, || {
                let inner = py.traced(|| engine.embedder()).map_err(to_py)?;
                Py::new(py, PyEmbedder { inner })
            })
            .map(|v| v.clone_ref(py))
    }

    /// The cross-encoder of `retrieval.cross_encoder` (`keel.CrossEncoder`), loaded on the
    /// first call.
    fn cross_encoder(&self, py: Python<'_>) -> PyResult<Py<PyCrossEncoder>> {
        // This interpreter's onnxruntime wheel, registered as for keel.Embedder.
        register_onnxruntime(py)?;
        let engine = Arc::clone(&self.inner);
        self.cross_encoder
            .get_or_try_init(py, || {
                let inner = py.traced(|| engine.cross_encoder()).map_err(to_py)?;
                Py::new(py, PyCrossEncoder { inner })
            })
            .map(|v| v.clone_ref(py))
    }

    /// The dense index of `retrieval.dense_index` (`keel.DenseIndex`), searching with the
    /// engine's embedder; built on the first call.
    fn dense(&self, py: Python<'_>) -> PyResult<Py<PyDenseIndex>> {
        // This interpreter's onnxruntime wheel, registered as for keel.Embedder.
        register_onnxruntime(py)?;
        let engine = Arc::clone(&self.inner);
        self.dense
            .get_or_try_init(py, || {
                let inner = py.traced(|| engine.dense()).map_err(to_py)?;
                Py::new(py, PyDenseIndex { inner })
            })
            .map(|v| v.clone_ref(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.Engine(database={:?}, rate_limiters={:?}, caches={:?})",
            self.inner.location(),
            self.rate_limiters.keys().collect::<Vec<_>>(),
            self.caches.keys().collect::<Vec<_>>()
        )
    }
}
