//! `keel.Cache`: the core cache holding any Python object under any hashable key.
//!
//! Keys carry their Python hash; equality falls back to Python's `==`. Every cache operation runs
//! with the GIL held (they take nanoseconds). `get_or_set` is the core's single-flight
//! (`keel::cache::Cache::get_or_try_insert_shared`), which compares keys outside its own lock;
//! its one blocking wait, for another thread's computation of the same key, runs in a hook that
//! releases the GIL. See docs/decisions.md, Cache.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use keel::cache::{ttl_from_secs_f64, EntryOptions, Equivalent};
use keel::{CacheConfig, CacheError};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyTuple};

use crate::errors::{deprecated, invalid, to_py};

/// A strong reference to a Python object held by the cache (a key or a value).
///
/// Cloned and dropped only with the GIL held, so both are bare reference-count calls, without
/// pyo3's check of its per-thread GIL counter (a thread-local read in a shared library) and
/// without its deferred-decrement pool. Why the GIL is always held:
/// - every `Cache` method runs with it (the fast `get` too: CPython calls it with it); the one blocking wait of `get_or_set` touches no key or value, and the
///   waiter clones the value only once it has the GIL back (`py.allow_threads` returned);
/// - the metrics registry may hold the last strong reference to the core cache for a moment
///   (a scrape upgrades its weak one) and drop it without the GIL: `PyCache`'s `Drop` (run by
///   CPython's deallocation, with the GIL) empties the cache first, so that drop frees no object.
struct PyObj(std::ptr::NonNull<pyo3::ffi::PyObject>);

// SAFETY: a reference to a Python object, like `Py<PyAny>` (which is Send + Sync); it is only
// cloned, dropped and dereferenced with the GIL held (see above).
unsafe impl Send for PyObj {}
// SAFETY: as above.
unsafe impl Sync for PyObj {}

impl PyObj {
    /// A new strong reference to `obj`.
    #[inline]
    fn new(obj: &Bound<'_, PyAny>) -> Self {
        let ptr = obj.clone().into_ptr();
        // SAFETY: a `Bound`'s pointer is never null.
        Self(unsafe { std::ptr::NonNull::new_unchecked(ptr) })
    }

    #[inline]
    fn as_ptr(&self) -> *mut pyo3::ffi::PyObject {
        self.0.as_ptr()
    }

    /// The object, borrowed for `py`.
    #[inline]
    fn bind<'a, 'py>(&'a self, py: Python<'py>) -> pyo3::Borrowed<'a, 'py, PyAny> {
        // SAFETY: `self` owns a strong reference for at least `'a`.
        unsafe { pyo3::Borrowed::from_ptr(py, self.as_ptr()) }
    }

    /// Hands the reference over to a `Py`.
    #[inline]
    fn into_py(self, py: Python<'_>) -> Py<PyAny> {
        // SAFETY: the strong reference `self` owned.
        unsafe { Py::from_owned_ptr(py, self.into_ptr()) }
    }

    /// Hands the reference over as a raw new reference (a method's return value).
    #[inline]
    fn into_ptr(self) -> *mut pyo3::ffi::PyObject {
        let ptr = self.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl Clone for PyObj {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: the GIL is held (see the type's docs); the clone owns the reference taken.
        unsafe { pyo3::ffi::Py_IncRef(self.as_ptr()) };
        Self(self.0)
    }
}

impl Drop for PyObj {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the GIL is held (see the type's docs); `self` owned this reference.
        unsafe { pyo3::ffi::Py_DecRef(self.as_ptr()) }
    }
}

/// A cache key: a hashable Python object and its hash, computed once.
#[derive(Clone)]
struct PyKey {
    hash: isize,
    obj: PyObj,
}

impl Hash for PyKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_isize(self.hash);
    }
}

impl PartialEq for PyKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        if self.hash != other.hash {
            return false;
        }
        if self.obj.as_ptr() == other.obj.as_ptr() {
            return true;
        }
        // SAFETY: keys are compared only with the GIL held (see `PyObj`).
        let py = unsafe { Python::assume_gil_acquired() };
        self.obj.bind(py).eq(&*other.obj.bind(py)).unwrap_or(false)
    }
}

impl Eq for PyKey {}

/// A cached value (see `PyObj`: cloning it is a bare reference-count increment).
#[derive(Clone)]
struct PyVal(PyObj);

/// A borrowed key for lookups, so a hit allocates nothing.
struct KeyRef<'a, 'py> {
    hash: isize,
    obj: &'a Bound<'py, PyAny>,
}

impl Hash for KeyRef<'_, '_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_isize(self.hash);
    }
}

impl Equivalent<PyKey> for KeyRef<'_, '_> {
    #[inline]
    fn equivalent(&self, key: &PyKey) -> bool {
        self.hash == key.hash
            && (self.obj.as_ptr() == key.obj.as_ptr()
                || self.obj.eq(&*key.obj.bind(self.obj.py())).unwrap_or(false))
    }
}

/// A `get_or_set` failure, shared by the caller that computed and every caller that waited.
#[derive(Clone)]
struct SharedErr(Arc<PyErr>);

impl From<PyErr> for SharedErr {
    fn from(e: PyErr) -> Self {
        Self(Arc::new(e))
    }
}

impl From<keel::Error> for SharedErr {
    fn from(e: keel::Error) -> Self {
        to_py(e).into()
    }
}

impl SharedErr {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        Arc::try_unwrap(self.0).unwrap_or_else(|e| e.clone_ref(py))
    }
}

/// A concurrent, bounded cache with TTLs and statistics.
#[pyclass(module = "keel._native", name = "Cache", frozen)]
pub struct PyCache {
    /// Shared with the metrics registry when the cache has a name.
    inner: Arc<keel::Cache<PyKey, PyVal>>,
    weigher: Option<Py<PyAny>>,
}

fn key_of<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> PyResult<KeyRef<'a, 'py>> {
    Ok(KeyRef {
        hash: obj.hash()?,
        obj,
    })
}

fn owned_key(obj: &Bound<'_, PyAny>) -> PyResult<PyKey> {
    Ok(PyKey {
        hash: obj.hash()?,
        obj: PyObj::new(obj),
    })
}

fn capacity(field: &'static str, value: i64) -> PyResult<u64> {
    if value <= 0 {
        return Err(to_py(CacheError::ZeroCapacity { field }.into()));
    }
    Ok(value as u64)
}

fn ttl_opt(ttl: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    ttl.map(|t| ttl_from_secs_f64(t).map_err(to_py)).transpose()
}

/// Point-in-time counters of a `Cache`.
#[pyclass(module = "keel._native", name = "CacheStats", frozen, get_all)]
pub struct PyCacheStats {
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
    expirations: u64,
    entries: u64,
    weight: u64,
}

impl PyCacheStats {
    /// The core's snapshot, whose derived figures (`hit_ratio`) this class reports.
    fn core(&self) -> keel::CacheStats {
        keel::CacheStats {
            hits: self.hits,
            misses: self.misses,
            inserts: self.inserts,
            evictions: self.evictions,
            expirations: self.expirations,
            entries: self.entries,
            weight: self.weight,
        }
    }
}

#[pymethods]
impl PyCacheStats {
    /// hits / (hits + misses), 0.0 before any lookup.
    #[getter]
    fn hit_ratio(&self) -> f64 {
        self.core().hit_ratio()
    }

    /// The counters as a dict (`hit_ratio` included).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        d.set_item("hits", self.hits)?;
        d.set_item("misses", self.misses)?;
        d.set_item("inserts", self.inserts)?;
        d.set_item("evictions", self.evictions)?;
        d.set_item("expirations", self.expirations)?;
        d.set_item("entries", self.entries)?;
        d.set_item("weight", self.weight)?;
        d.set_item("hit_ratio", self.hit_ratio())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "CacheStats(hits={}, misses={}, inserts={}, evictions={}, expirations={}, entries={}, weight={})",
            self.hits, self.misses, self.inserts, self.evictions, self.expirations, self.entries, self.weight
        )
    }
}

impl PyCache {
    /// A cache with the bounds of an engine's `cache.<name>` table (entries weigh 1, or
    /// `sys.getsizeof(value)` with a `max_weight`, as in `Cache(...)` without a weigher).
    /// Exported to the metrics as `keel_cache_*{cache="<name>"}`.
    pub(crate) fn from_config(config: CacheConfig, name: &str) -> PyResult<Self> {
        Self::build(config, None, Some(name))
    }

    fn build(
        config: CacheConfig,
        weigher: Option<Py<PyAny>>,
        name: Option<&str>,
    ) -> PyResult<Self> {
        let inner = Arc::new(keel::Cache::new(config).map_err(to_py)?);
        if let Some(name) = name {
            keel::telemetry::metrics::register_cache(name, &inner).map_err(to_py)?;
        }
        Ok(Self { inner, weigher })
    }

    #[inline(always)]
    fn entry_options(&self, value: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<EntryOptions> {
        let weight = match (&self.weigher, self.inner.config().max_weight) {
            (_, None) => 1,
            (Some(w), Some(_)) => {
                let raw: i64 = w.bind(value.py()).call1((value,))?.extract()?;
                if raw < 0 {
                    return Err(invalid("the weigher returned a negative weight"));
                }
                raw as u64
            }
            (None, Some(_)) => {
                let sys = value.py().import("sys")?;
                sys.call_method1("getsizeof", (value,))?.extract()?
            }
        };
        Ok(EntryOptions {
            ttl: ttl_opt(ttl)?,
            weight,
        })
    }

    fn store(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        let opts = self.entry_options(value, ttl)?;
        self.inner
            .insert_with(owned_key(key)?, PyVal(PyObj::new(value)), opts)
            .map_err(to_py)
    }
}

impl Drop for PyCache {
    /// Empties the cache while the GIL is held (CPython's deallocation), so that a scrape of the
    /// metrics registry that holds the last strong reference for a moment frees no Python object
    /// without it (see `PyObj`).
    fn drop(&mut self) {
        self.inner.clear();
    }
}

#[pymethods]
impl PyCache {
    #[new]
    #[pyo3(signature = (max_entries=None, ttl=None, *, max_weight=None, weigher=None, maxsize=None, name=None))]
    fn new(
        py: Python<'_>,
        max_entries: Option<i64>,
        ttl: Option<f64>,
        max_weight: Option<i64>,
        weigher: Option<Py<PyAny>>,
        maxsize: Option<i64>,
        name: Option<&str>,
    ) -> PyResult<Self> {
        let max_entries = match (max_entries, maxsize) {
            (Some(n), None) => n,
            (None, Some(n)) => {
                deprecated(py, c"Cache(maxsize=...) is deprecated: use max_entries=...")?;
                n
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give max_entries only (maxsize is its deprecated old name)",
                ))
            }
            (None, None) => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "Cache() missing required argument: 'max_entries'",
                ))
            }
        };
        let mut config = CacheConfig::new(capacity("max_entries", max_entries)?);
        if let Some(w) = max_weight {
            config = config.max_weight(capacity("max_weight", w)?);
        }
        if let Some(t) = ttl_opt(ttl)? {
            config = config.ttl(t);
        }
        if weigher.is_some() && max_weight.is_none() {
            return Err(invalid("a weigher needs max_weight"));
        }
        Self::build(config, weigher, name)
    }

    /// Most entries held at once.
    #[getter]
    fn max_entries(&self) -> u64 {
        self.inner.config().max_entries
    }

    /// Deprecated name of `max_entries`.
    #[getter]
    fn maxsize(&self, py: Python<'_>) -> PyResult<u64> {
        deprecated(py, c"Cache.maxsize is deprecated: use Cache.max_entries")?;
        Ok(self.inner.config().max_entries)
    }

    /// Bound on the total weight, if any.
    #[getter]
    fn max_weight(&self) -> Option<u64> {
        self.inner.config().max_weight
    }

    /// Default TTL in seconds, if any.
    #[getter]
    fn ttl(&self) -> Option<f64> {
        self.inner.config().ttl.map(|t| t.as_secs_f64())
    }

    #[pyo3(signature = (key, default=None))]
    fn get(
        &self,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        Ok(self
            .inner
            .get(&key_of(key)?)
            .map(|v| v.0.into_py(key.py()))
            .or(default))
    }

    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        slf.get()
            .inner
            .get(&key_of(key)?)
            .map(|v| v.0.into_py(key.py()))
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        self.store(key, value, ttl)
    }

    // `slf: &Bound<Self>` rather than `&self`: pyo3 then only type-checks `self`, without
    // making (and reference-counting) a `PyRef` (measured, docs/bench-cachepath.md).
    fn __setitem__(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        slf.get().store(key, value, None)
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.inner.remove(&key_of(key)?) {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.contains_key(&key_of(key)?))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Iterates over a snapshot of the live keys (entries added or removed meanwhile do not
    /// disturb it).
    fn __iter__(&self, py: Python<'_>) -> PyResult<PyObject> {
        let keys = PyList::new(
            py,
            self.inner
                .entries()
                .into_iter()
                .map(|(k, _)| k.obj.into_py(py)),
        )?;
        Ok(keys.as_any().try_iter()?.into_any().unbind())
    }

    /// A snapshot list of the live keys, in no particular order.
    fn keys(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.inner
            .entries()
            .into_iter()
            .map(|(k, _)| k.obj.into_py(py))
            .collect()
    }

    /// A snapshot list of the live values, in no particular order.
    fn values(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.inner
            .entries()
            .into_iter()
            .map(|(_, v)| v.0.into_py(py))
            .collect()
    }

    /// A snapshot list of the live `(key, value)` pairs, in no particular order.
    fn items(&self, py: Python<'_>) -> Vec<(Py<PyAny>, Py<PyAny>)> {
        self.inner
            .entries()
            .into_iter()
            .map(|(k, v)| (k.obj.into_py(py), v.0.into_py(py)))
            .collect()
    }

    /// Stores every pair of `other` (a mapping or an iterable of pairs) and of `kwargs`, with the
    /// default TTL.
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        &self,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        if let Some(other) = other {
            if let Ok(mapping) = other.downcast::<PyMapping>() {
                for key in mapping.keys()?.iter() {
                    let value = mapping.get_item(&key)?;
                    self.store(&key, &value, None)?;
                }
            } else if other.hasattr("keys")? {
                for key in other.call_method0("keys")?.try_iter()? {
                    let key = key?;
                    let value = other.get_item(&key)?;
                    self.store(&key, &value, None)?;
                }
            } else {
                for pair in other.try_iter()? {
                    let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
                    self.store(&key, &value, None)?;
                }
            }
        }
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                self.store(&key, &value, None)?;
            }
        }
        Ok(())
    }

    /// The value for `key`; if absent, stores `default` (with the default TTL) and returns it.
    #[pyo3(signature = (key, default=None))]
    fn setdefault(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(v) = self.inner.get(&key_of(key)?) {
            return Ok(v.0.into_py(py));
        }
        let value = default.unwrap_or_else(|| py.None());
        self.store(key, value.bind(py), None)?;
        Ok(value)
    }

    /// Removes and returns some live `(key, value)` pair; KeyError when the cache is empty.
    fn popitem(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        for (key, _) in self.inner.entries() {
            if let Some(value) = self.inner.remove(&key) {
                return Ok((key.obj.into_py(py), value.0.into_py(py)));
            }
        }
        Err(PyKeyError::new_err("popitem(): the cache is empty"))
    }

    /// Removes `key` and returns its value; `default` (or KeyError) when absent.
    #[pyo3(signature = (key, *default))]
    fn pop(&self, key: &Bound<'_, PyAny>, default: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        if default.len() > 1 {
            return Err(invalid("pop expected at most 2 arguments"));
        }
        match self.inner.remove(&key_of(key)?) {
            Some(v) => Ok(v.0.into_py(key.py())),
            None if default.len() == 1 => Ok(default.get_item(0)?.unbind()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn clear(&self) {
        self.inner.clear();
    }

    /// Drops every expired entry now; returns how many.
    fn purge_expired(&self) -> usize {
        self.inner.purge_expired()
    }

    fn stats(&self) -> PyCacheStats {
        let s = self.inner.stats();
        PyCacheStats {
            hits: s.hits,
            misses: s.misses,
            inserts: s.inserts,
            evictions: s.evictions,
            expirations: s.expirations,
            entries: s.entries,
            weight: s.weight,
        }
    }

    fn reset_stats(&self) {
        self.inner.reset_stats();
    }

    /// Returns the value for `key`, calling `factory()` on a miss and storing its result.
    /// Threads that miss the same key at once wait (without the GIL) for the first one's result;
    /// if `factory` raises, nothing is stored and every waiter gets the same exception.
    #[pyo3(signature = (key, factory, ttl=None))]
    fn get_or_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        factory: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        // The core's single-flight; its one blocking wait runs without the GIL.
        self.inner
            .get_or_try_insert_shared(
                &key_of(key)?,
                |k| PyKey {
                    hash: k.hash,
                    obj: PyObj::new(k.obj),
                },
                || -> Result<_, SharedErr> {
                    let value = factory.call0()?;
                    let opts = self.entry_options(&value, ttl)?;
                    Ok((PyVal(PyObj::new(&value)), opts))
                },
                |blocking| py.allow_threads(|| blocking.wait()),
            )
            .map(|v| v.0.into_py(py))
            .map_err(|e| e.into_py_err(py))
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "keel.Cache(max_entries={}, ttl={}, max_weight={}, len={})",
            c.max_entries,
            c.ttl
                .map_or_else(|| "None".to_owned(), |t| t.as_secs_f64().to_string()),
            c.max_weight
                .map_or_else(|| "None".to_owned(), |w| w.to_string()),
            self.inner.len()
        )
    }
}

// The fast `Cache.get`.
//
// A pyo3 method pays, on every call, for its trampoline (GIL counter, reference pool, panic
// guard), a type check of `self` through the lazily created type object, and the generic
// extraction of its arguments: about 200 of the 360 instructions of a `get` hit (callgrind,
// docs/bench-cachepath.md). `get` is the call a cache exists for, so it is a plain
// METH_FASTCALL method descriptor instead: CPython has already checked that `self` is a `Cache`
// (the descriptor's own check), the positional forms `get(key)` / `get(key, default)` are read
// straight from the argument vector, and any other form (keywords, a wrong count) is handed to
// the pyo3 method it replaced, so errors and keyword handling stay exactly pyo3's. No panic
// crosses: the body runs under `catch_unwind`. (`cache[key] = value` stays pyo3's slot: a
// descriptor set as the class's `__setitem__` is reached through CPython's generic slot, which
// costs as much as pyo3's wrapper: measured, docs/bench-cachepath.md.)

type FastMethod = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *const *mut pyo3::ffi::PyObject,
    pyo3::ffi::Py_ssize_t,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// `Cache.get` as pyo3 generated it, for the calls the fast path does not take.
static GENERATED_GET: pyo3::sync::GILOnceCell<Py<PyAny>> = pyo3::sync::GILOnceCell::new();

/// Installs the fast `get` on the class (once, at module initialisation).
pub(crate) fn install_fast_paths(py: Python<'_>) -> PyResult<()> {
    install(
        py,
        &GENERATED_GET,
        c"get",
        fast_get,
        c"get($self, key, default=None)\n--\n\nThe value for `key`, or `default` when it is absent or expired (counts a hit or a miss).",
    )
}

fn install(
    py: Python<'_>,
    generated: &'static pyo3::sync::GILOnceCell<Py<PyAny>>,
    name: &'static std::ffi::CStr,
    meth: FastMethod,
    doc: &'static std::ffi::CStr,
) -> PyResult<()> {
    let ty = py.get_type::<PyCache>();
    let attr = name
        .to_str()
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("a method name is not UTF-8"))?;
    if generated.set(py, ty.getattr(attr)?.unbind()).is_err() {
        return Ok(()); // already installed
    }
    let def = Box::leak(Box::new(pyo3::ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: pyo3::ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: meth,
        },
        ml_flags: pyo3::ffi::METH_FASTCALL | pyo3::ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: `def` lives for the rest of the process and describes `meth`, whose `self` the
    // descriptor checks to be an instance of `ty`.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))?
    };
    ty.setattr(attr, descr)
}

/// Runs a fast method's body: its result as a new reference, or NULL with the exception set.
#[inline(always)]
fn run(
    py: Python<'_>,
    what: &str,
    body: impl FnOnce() -> PyResult<*mut pyo3::ffi::PyObject>,
) -> *mut pyo3::ffi::PyObject {
    let err = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(ptr)) => return ptr,
        Ok(Err(e)) => e,
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(format!("{what} failed internally")),
    };
    err.restore(py);
    std::ptr::null_mut()
}

/// `Cache.get(key, default=None)` (METH_FASTCALL | METH_KEYWORDS).
unsafe extern "C" fn fast_get(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held.
    let py = unsafe { Python::assume_gil_acquired() };
    run(py, "keel.Cache.get", || {
        if !kwnames.is_null() || !(1..=2).contains(&nargs) {
            // SAFETY: the arguments as CPython passed them.
            return unsafe { call_generated(py, &GENERATED_GET, slf, args, nargs, kwnames) };
        }
        // SAFETY: the method descriptor checked that `slf` is a `Cache`, and `args` holds
        // `nargs` (1 or 2) borrowed references for the duration of the call.
        let (this, key, default) = unsafe {
            (
                pyo3::Borrowed::from_ptr(py, slf),
                pyo3::Borrowed::from_ptr(py, *args),
                if nargs == 2 {
                    *args.add(1)
                } else {
                    pyo3::ffi::Py_None()
                },
            )
        };
        // SAFETY: see above.
        let this = unsafe { this.downcast_unchecked::<PyCache>() }.get();
        Ok(match this.inner.get(&key_of(&key)?) {
            Some(v) => v.0.into_ptr(),
            None => {
                // SAFETY: a borrowed reference, returned as a new one.
                unsafe { pyo3::ffi::Py_IncRef(default) };
                default
            }
        })
    })
}

/// Calls the pyo3 method a fast path replaced, with the arguments of a vectorcall.
///
/// # Safety
/// `slf`, `args`, `nargs` and `kwnames` as CPython passes them to a METH_FASTCALL | METH_KEYWORDS
/// method, with the GIL held.
unsafe fn call_generated(
    py: Python<'_>,
    generated: &pyo3::sync::GILOnceCell<Py<PyAny>>,
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> PyResult<*mut pyo3::ffi::PyObject> {
    let generated = generated
        .get(py)
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("keel.Cache is not set up"))?;
    let nargs = nargs.max(0) as usize;
    // SAFETY: the caller's contract.
    unsafe {
        let names = (!kwnames.is_null()).then(|| {
            pyo3::Borrowed::from_ptr(py, kwnames)
                .downcast_unchecked::<PyTuple>()
                .clone()
        });
        let nkw = names.as_ref().map_or(0, |n| n.len());
        let all = if nargs + nkw == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(args, nargs + nkw)
        };
        let positional: Vec<_> = std::iter::once(slf)
            .chain(all[..nargs].iter().copied())
            .map(|p| pyo3::Borrowed::from_ptr(py, p))
            .collect();
        let positional = PyTuple::new(py, positional)?;
        let kwargs = match names {
            Some(names) => {
                let d = PyDict::new(py);
                for (name, &value) in names.iter().zip(&all[nargs..]) {
                    d.set_item(name, pyo3::Borrowed::from_ptr(py, value))?;
                }
                Some(d)
            }
            None => None,
        };
        Ok(generated
            .bind(py)
            .call(positional, kwargs.as_ref())?
            .into_ptr())
    }
}
