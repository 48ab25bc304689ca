//! The only place where raw pointers from C become Rust values.
//!
//! Handles are opaque: the C type *is* the Rust struct (`keel_cache`, `keel_bytes`; cbindgen
//! declares a non-`repr(C)` struct as an incomplete type), so no pointer is ever cast from one
//! type to another. `_new` hands C a `Box::into_raw` ([`into_raw`]), `_free` takes it back with
//! `Box::from_raw` ([`free`]), every other call borrows it ([`try_ref!`]).
//!
//! Each check reports NULL as `KEEL_ERR_NULL_ARG` naming the argument. The macros exist to pass
//! that name (`stringify!`) and to keep each call site one line; they expand to `?`, so they are
//! used inside `ffi_guard!` bodies. Their `unsafe` blocks rely on the enclosing exported
//! function's documented contract: each pointer is NULL or valid as that doc describes.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{FfiError, KEEL_ERR_INVALID_ARGUMENT};

/// Moves `value` to the heap and hands ownership to C.
pub(crate) fn into_raw<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back and drops what [`into_raw`] made; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or came from `into_raw::<T>` and has not been freed; nothing uses it afterwards.
pub(crate) unsafe fn free<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: per this function's contract the Box is ours to drop, once.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Borrows `&T` from a `*const T`, `None` for NULL: for functions that cannot return a code.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that outlives `'a` and is not mutated meanwhile.
pub(crate) unsafe fn ref_or_none<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: per this function's contract.
    unsafe { ptr.as_ref() }
}

/// Borrows `&T` from a `*const T`.
///
/// # Safety
/// As [`ref_or_none`].
pub(crate) unsafe fn borrow<'a, T>(ptr: *const T, name: &'static str) -> Result<&'a T, FfiError> {
    // SAFETY: per this function's contract.
    unsafe { ref_or_none(ptr) }.ok_or_else(|| FfiError::null_arg(name))
}

/// Borrows `&mut T` from a `*mut T`.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that outlives `'a` and is not aliased meanwhile.
pub(crate) unsafe fn borrow_mut<'a, T>(
    ptr: *mut T,
    name: &'static str,
) -> Result<&'a mut T, FfiError> {
    // SAFETY: per this function's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| FfiError::null_arg(name))
}

/// Reads a (pointer, length) buffer. NULL is accepted when `len` is 0 (an empty key or value).
///
/// # Safety
/// When `len > 0`, `ptr` is NULL or points to `len` readable bytes that outlive `'a` and are
/// not written meanwhile.
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    name: &'static str,
) -> Result<&'a [T], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::null_arg(name));
    }
    // No real buffer is larger; a bigger length is a caller bug that from_raw_parts forbids.
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(FfiError::new(
            KEEL_ERR_INVALID_ARGUMENT,
            format!("the length of `{name}` ({len}) exceeds the largest possible buffer"),
        ));
    }
    // SAFETY: non-NULL, length in range, validity per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An out-parameter: checked for NULL before any work is done, written at the very end, so the
/// caller's variable is untouched whenever the call fails.
pub(crate) struct Out<'a, T> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> Out<'_, T> {
    /// # Safety
    /// `ptr` is NULL or valid for writing one `T` (it may be uninitialised) for the lifetime.
    pub(crate) unsafe fn new(ptr: *mut T, name: &'static str) -> Result<Self, FfiError> {
        let ptr = NonNull::new(ptr).ok_or_else(|| FfiError::null_arg(name))?;
        Ok(Self {
            ptr,
            _borrow: PhantomData,
        })
    }

    /// Writes without reading or dropping the old contents (C may pass uninitialised memory).
    pub(crate) fn write(self, value: T) {
        // SAFETY: valid for writes, per `new`'s contract.
        unsafe { self.ptr.as_ptr().write(value) }
    }
}

/// `try_ref!(ptr)`: `&T` from an argument `*const T`, or return `KEEL_ERR_NULL_ARG`.
macro_rules! try_ref {
    ($ptr:ident) => {
        // SAFETY: the exported function's contract: NULL or a live handle.
        unsafe { $crate::ffi::borrow($ptr, stringify!($ptr)) }?
    };
}

/// `try_mut!(ptr)`: `&mut T` from an argument `*mut T`, or return `KEEL_ERR_NULL_ARG`.
macro_rules! try_mut {
    ($ptr:ident) => {
        // SAFETY: the exported function's contract: NULL or a live, unaliased object.
        unsafe { $crate::ffi::borrow_mut($ptr, stringify!($ptr)) }?
    };
}

/// `try_bytes!(ptr, len)`: `&[u8]` from an argument buffer, or return `KEEL_ERR_NULL_ARG`.
macro_rules! try_bytes {
    ($ptr:ident, $len:ident) => {
        // SAFETY: the exported function's contract: `len` readable bytes at `ptr`.
        unsafe { $crate::ffi::slice($ptr, $len, stringify!($ptr)) }?
    };
}

/// Checks that a byte argument is UTF-8 (the one place where the INVALID_UTF8 message is made).
pub(crate) fn utf8<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, FfiError> {
    std::str::from_utf8(bytes).map_err(|_| {
        FfiError::new(
            crate::error::KEEL_ERR_INVALID_UTF8,
            format!("argument `{name}` is not valid UTF-8"),
        )
    })
}

/// A UTF-8 string argument given as pointer + length (NULL allowed only with length 0).
///
/// # Safety
/// `ptr` is NULL or valid for reading `len` bytes for the lifetime.
pub(crate) unsafe fn str_arg<'a>(
    ptr: *const std::ffi::c_char,
    len: usize,
    name: &'static str,
) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { slice(ptr.cast::<u8>(), len, name) }?;
    utf8(bytes, name)
}

/// `try_str!(ptr, len)`: `&str` from a UTF-8 argument, or return the error.
macro_rules! try_str {
    ($ptr:ident, $len:ident) => {
        // SAFETY: the exported function's contract: `len` readable bytes at `ptr`.
        unsafe { $crate::ffi::str_arg($ptr, $len, stringify!($ptr)) }?
    };
}

/// `try_array!(ptr, len)`: `&[T]` from an argument array of `len` elements, or return
/// `KEEL_ERR_NULL_ARG`.
macro_rules! try_array {
    ($ptr:ident, $len:ident) => {
        // SAFETY: the exported function's contract: `len` readable elements at `ptr`.
        unsafe { $crate::ffi::slice($ptr, $len, stringify!($ptr)) }?
    };
}

/// `try_out!(ptr)`: an [`Out`] for an out-parameter, or return `KEEL_ERR_NULL_ARG`.
macro_rules! try_out {
    ($ptr:ident) => {
        // SAFETY: the exported function's contract: NULL or writable.
        unsafe { $crate::ffi::Out::new($ptr, stringify!($ptr)) }?
    };
}

pub(crate) use {try_array, try_bytes, try_mut, try_out, try_ref, try_str};
