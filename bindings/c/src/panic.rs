//! The panic boundary: no Rust panic may unwind into C (that is undefined behaviour, or an abort).
//!
//! Every `extern "C"` body is wrapped in [`ffi_guard!`]. `AssertUnwindSafe` is sound here because
//! a handle stays usable after a caught panic: the core keeps its state behind quick_cache's
//! non-poisoning locks and atomic counters, and recovers its own mutex from poisoning; at worst
//! the interrupted insert is lost.

use std::any::Any;

use crate::error::{FfiError, KEEL_ERR_PANIC};

/// Runs an `extern "C"` body, turning a panic into a result the C caller can handle.
///
/// - `ffi_guard!({ ... })`: the body is a block of type `Result<(), FfiError>` (so `?` works);
///   the expansion is a `keel_result`: `KEEL_OK` (clearing the thread's error message), the
///   error's code (recording its message), or `KEEL_ERR_PANIC`.
/// - `ffi_guard!(or FALLBACK, { ... })`: for functions that cannot return a code (getters,
///   `_free`); the body's value, or `FALLBACK` after recording the panic as the error message.
macro_rules! ffi_guard {
    ($body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<(), $crate::error::FfiError> { $body },
        )) {
            Ok(Ok(())) => $crate::error::succeed(),
            Ok(Err(err)) => err.fail(),
            Err(payload) => $crate::panic::caught(payload).fail(),
        }
    };
    (or $fallback:expr, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(payload) => {
                $crate::panic::caught(payload).fail();
                $fallback
            }
        }
    };
}

pub(crate) use ffi_guard;

/// The error reported for a caught panic, with the panic's message when it has one.
pub(crate) fn caught(payload: Box<dyn Any + Send>) -> FfiError {
    let detail = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    FfiError::new(
        KEEL_ERR_PANIC,
        format!("internal error: a panic was caught at the C boundary ({detail})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{keel_last_error_message, keel_result, KEEL_ERR_NOT_FOUND, KEEL_OK};
    use std::ffi::CStr;

    fn last_message() -> String {
        // SAFETY: keel_last_error_message never returns NULL and the text is NUL-terminated.
        unsafe { CStr::from_ptr(keel_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_keel_err_panic_with_a_message() {
        let rc: keel_result = ffi_guard!({
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(())
        });
        assert_eq!(rc, KEEL_ERR_PANIC);
        assert!(last_message().contains("boom"), "{}", last_message());
    }

    #[test]
    fn a_panic_in_a_value_function_returns_the_fallback() {
        let value: usize = ffi_guard!(or 7, {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        });
        assert_eq!(value, 7);
        assert!(last_message().contains("boom"));
    }

    #[test]
    fn success_clears_and_failure_sets_the_message() {
        let rc: keel_result = ffi_guard!({ Err(FfiError::not_found()) });
        assert_eq!(rc, KEEL_ERR_NOT_FOUND);
        assert!(!last_message().is_empty());
        let rc: keel_result = ffi_guard!({ Ok(()) });
        assert_eq!(rc, KEEL_OK);
        assert_eq!(last_message(), "");
    }
}
