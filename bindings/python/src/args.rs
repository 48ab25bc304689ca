//! Integer arguments taken as Python ints of any size (`i128`) and checked here, so that `-5` or
//! `2**70` gets a `keel.InvalidArgument` (a `ValueError`) naming the argument and its value
//! instead of PyO3's anonymous `OverflowError` ("can't convert negative int to unsigned").
//! Only the range a Rust type can hold is checked here; what a value means (and its limits) is
//! the core's business.

use pyo3::PyResult;

use crate::errors::invalid;

/// `value` as an integer in `0..=max`, else `InvalidArgument` naming `name` and the value.
pub fn in_range(name: &str, value: i128, max: u64) -> PyResult<u64> {
    if value < 0 {
        return Err(invalid(format!(
            "{name} must be an integer >= 0, got {name}={value}"
        )));
    }
    u64::try_from(value)
        .ok()
        .filter(|&v| v <= max)
        .ok_or_else(|| {
            invalid(format!(
                "{name} must be an integer from 0 to {max}, got {name}={value}"
            ))
        })
}

/// A `u32` argument (see [`in_range`]).
pub fn u32_arg(name: &str, value: i128) -> PyResult<u32> {
    in_range(name, value, u64::from(u32::MAX)).map(|v| v as u32)
}

/// A `u64` argument (see [`in_range`]).
pub fn u64_arg(name: &str, value: i128) -> PyResult<u64> {
    in_range(name, value, u64::MAX)
}

/// A count, size or index (`usize`; see [`in_range`]).
pub fn usize_arg(name: &str, value: i128) -> PyResult<usize> {
    in_range(name, value, usize::MAX as u64).map(|v| v as usize)
}

/// An optional count (`None` stays `None`).
pub fn opt_usize_arg(name: &str, value: Option<i128>) -> PyResult<Option<usize>> {
    value.map(|v| usize_arg(name, v)).transpose()
}
