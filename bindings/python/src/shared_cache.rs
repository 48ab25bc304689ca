//! `keel.SharedCache`: the core's `SharedCache` (an in-process L1 over a Redis L2, invalidated on
//! every host). Keys and values are bytes; `str` is accepted and stored as UTF-8 (values come
//! back as `bytes`). Every call that may reach Redis runs without the GIL.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use keel::cache::{CacheConfig, SharedCache};

use crate::errors::{invalid, to_py};

fn bytes_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = obj.extract::<String>() {
        return Ok(s.into_bytes());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{what} must be bytes or str (got {})",
        obj.get_type().name()?
    )))
}

/// A byte cache shared by every host on one Redis: L1 in this process, L2 in Redis, and a delete
/// or update on one host drops the other hosts' L1 copies (one pub/sub delivery).
#[pyclass(module = "keel._native", name = "SharedCache", frozen)]
pub struct PySharedCache {
    pub(crate) inner: Arc<SharedCache>,
}

#[pymethods]
impl PySharedCache {
    #[new]
    #[pyo3(signature = (name, max_entries, *, redis_url, ttl=None))]
    fn new(
        py: Python<'_>,
        name: &str,
        max_entries: u64,
        redis_url: &str,
        ttl: Option<f64>,
    ) -> PyResult<Self> {
        let mut config = CacheConfig::new(max_entries);
        if let Some(t) = ttl {
            config = config.ttl(keel::cache::ttl_from_secs_f64(t).map_err(to_py)?);
        }
        let redis = keel::redis::Redis::open(redis_url, keel::redis::RedisOptions::default())
            .map_err(to_py)?;
        let name = name.to_owned();
        let inner = py
            .allow_threads(move || SharedCache::new(&name, config, redis))
            .map_err(to_py)?;
        Ok(Self { inner })
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The value of `key` (bytes), or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = bytes_of(key, "key")?;
        let inner = Arc::clone(&self.inner);
        let v = py.allow_threads(move || inner.get(&key)).map_err(to_py)?;
        Ok(v.map(|v| PyBytes::new(py, &v)))
    }

    /// Stores `value` under `key` on every host.
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = bytes_of(key, "key")?;
        let value = bytes_of(value, "value")?;
        let inner = Arc::clone(&self.inner);
        py.allow_threads(move || inner.set(&key, &value))
            .map_err(to_py)
    }

    /// Deletes `key` on every host; returns whether Redis held it.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = bytes_of(key, "key")?;
        let inner = Arc::clone(&self.inner);
        py.allow_threads(move || inner.delete(&key)).map_err(to_py)
    }

    /// Deletes every entry on every host.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let inner = Arc::clone(&self.inner);
        py.allow_threads(move || inner.clear()).map_err(to_py)
    }

    /// Entries in this process's L1.
    fn l1_len(&self) -> usize {
        self.inner.l1().len()
    }

    /// L2 reads that failed because Redis was unreachable (served as misses).
    #[getter]
    fn l2_errors(&self) -> u64 {
        self.inner.l2_errors()
    }

    /// Waits (without the GIL) until the invalidation subscriber is subscribed; returns whether
    /// it is after `timeout` seconds.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_subscribed(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = std::time::Duration::try_from_secs_f64(timeout).map_err(|_| {
            invalid(format!(
                "timeout must be a finite number of seconds >= 0 (got {timeout})"
            ))
        })?;
        let inner = Arc::clone(&self.inner);
        Ok(py.allow_threads(move || inner.redis().wait_subscribed(timeout)))
    }

    fn __repr__(&self) -> String {
        format!(
            "keel.SharedCache(name={:?}, redis={:?})",
            self.inner.name(),
            self.inner.redis().endpoint()
        )
    }
}
