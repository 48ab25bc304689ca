//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes are defined in Python (`keel/_exceptions.py`) so that they can subclass
//! both `keel.KeelError` and the built-in that fits (e.g. `ValueError`); they are looked up once and
//! cached.

use keel::{CacheError, Error};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();
    let module = MODULE.get_or_try_init(py, || py.import("keel._exceptions").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.downcast_into::<PyType>()?)
}

fn new_err(py: Python<'_>, name: &'static str, msg: String) -> PyErr {
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    }
}

/// Converts a core error into the matching `keel` exception.
pub fn to_py(err: Error) -> PyErr {
    Python::with_gil(|py| {
        let name = match &err {
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::Cache(CacheError::RecursiveLoad) => "RecursiveLoadError",
            Error::Cache(_) => "CacheConfigError",
            _ => "KeelError",
        };
        new_err(py, name, err.to_string())
    })
}

/// A `keel.InvalidArgument` with the given message.
pub fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(Error::InvalidArgument(msg.into()))
}
