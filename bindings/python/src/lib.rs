//! `keel._native`: the PyO3 module behind `import keel`.
//!
//! Thin by design: each class converts arguments, calls the core crate and maps errors through
//! [`errors::to_py`]. The public Python API is re-exported by `python/keel/__init__.py`.

mod cache;
mod errors;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", keel::VERSION)?;
    m.add_class::<cache::PyCache>()?;
    m.add_class::<cache::PyCacheStats>()?;
    Ok(())
}
