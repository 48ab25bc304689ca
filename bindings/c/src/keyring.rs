//! The keyring over C: load versioned AES-SIV keys, generate a key.
//!
//! `keel_keyring` holds an `Arc<Keyring>`: a `keel_memory` opened with it shares the keys, so
//! the caller may free the keyring right after opening. Key bytes never appear in messages.

use std::ffi::c_char;
use std::sync::Arc;

use keel_core::Keyring;

use crate::error::{keel_result, FfiError, KEEL_ERR_BUFFER_TOO_SMALL};
use crate::ffi::{self, try_bytes, try_out, try_ref};
use crate::panic::ffi_guard;

/// A set of versioned 512-bit AES-SIV keys, one of them primary. Immutable.
///
/// Thread-safety: may be used from any number of threads at once; free it once no call on it
/// is in flight.
pub struct keel_keyring {
    pub(crate) inner: Arc<Keyring>,
}

/// Length of the text `keel_keyring_generate_key` writes, without the terminating NUL: the
/// base64 encoding of 64 random bytes.
pub const KEEL_GENERATED_KEY_LEN: usize = 88;

/// Reads (pointer, length) text as UTF-8; NULL is accepted with length 0.
///
/// # Safety
/// As `ffi::slice`.
pub(crate) unsafe fn text<'a>(
    ptr: *const c_char,
    len: usize,
    name: &'static str,
) -> Result<&'a str, FfiError> {
    // SAFETY: per this function's contract.
    unsafe { ffi::str_arg(ptr, len, name) }
}

fn boxed(ring: Keyring) -> *mut keel_keyring {
    ffi::into_raw(keel_keyring {
        inner: Arc::new(ring),
    })
}

/// Parses a keyring from text: entries `ID:BASE64KEY` separated by newlines, commas or
/// semicolons, `#` comments, and optionally `primary=ID` (default: the highest id).
///
/// Returns: KEEL_OK and writes `*out_keyring`; KEEL_ERR_CRYPTO_INVALID_KEYRING for malformed
/// text or a key that is not random (fewer than 16 distinct byte values among its 64, e.g. all
/// zeros); the message never quotes key material; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the keyring and frees it with `keel_keyring_free`. `text` is only
/// read during the call (wipe it afterwards if it came from a secret store).
/// NULL: `out_keyring` NULL gives KEEL_ERR_NULL_ARG; `text` may be NULL when `text_len` is 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_parse(
    text: *const c_char,
    text_len: usize,
    out_keyring: *mut *mut keel_keyring,
) -> keel_result {
    ffi_guard!({
        // SAFETY: per this doc.
        let text = unsafe { self::text(text, text_len, "text") }?;
        let out_keyring = try_out!(out_keyring);
        out_keyring.write(boxed(Keyring::parse(text)?));
        Ok(())
    })
}

/// Reads a keyring from the environment variable `var` (`var_len` bytes), in the format of
/// `keel_keyring_parse`. `var` NULL (with `var_len` 0) means "KEEL_KEYRING".
///
/// Returns: KEEL_OK and writes `*out_keyring`; KEEL_ERR_CRYPTO_KEYRING_SOURCE when the variable
/// is not set; KEEL_ERR_CRYPTO_INVALID_KEYRING when its value is malformed.
///
/// Ownership: as `keel_keyring_parse`.
/// NULL: `out_keyring` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: reads the process environment; do not call it while another thread changes
/// the environment.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_from_env(
    var: *const c_char,
    var_len: usize,
    out_keyring: *mut *mut keel_keyring,
) -> keel_result {
    ffi_guard!({
        // SAFETY: per this doc.
        let var = unsafe { text(var, var_len, "var") }?;
        let var = if var.is_empty() {
            keel_core::crypto::KEYRING_ENV
        } else {
            var
        };
        let out_keyring = try_out!(out_keyring);
        out_keyring.write(boxed(Keyring::from_env(var)?));
        Ok(())
    })
}

/// Reads a keyring from the key file at `path` (`path_len` bytes of UTF-8), in the format of
/// `keel_keyring_parse`.
///
/// Returns: KEEL_OK and writes `*out_keyring`; KEEL_ERR_CRYPTO_KEYRING_SOURCE when the file
/// cannot be read or when group or others may read or write it (the message names the path and
/// the mode: chmod 600 it); KEEL_ERR_CRYPTO_INVALID_KEYRING when it is malformed or holds a key
/// that is not random; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: as `keel_keyring_parse`.
/// NULL: `path` or `out_keyring` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_from_file(
    path: *const c_char,
    path_len: usize,
    out_keyring: *mut *mut keel_keyring,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        // SAFETY: per this doc.
        let path = unsafe { text(path, path_len, "path") }?;
        let out_keyring = try_out!(out_keyring);
        out_keyring.write(boxed(Keyring::from_file(path)?));
        Ok(())
    })
}

/// A keyring holding one raw key of exactly 64 bytes under `key_id`, which is primary.
///
/// Returns: KEEL_OK and writes `*out_keyring`; KEEL_ERR_CRYPTO_INVALID_KEYRING when `key_len`
/// is not 64 or the key is not random (fewer than 16 distinct byte values, e.g. all zeros).
///
/// Ownership: the key bytes are copied (the caller should wipe its copy); free the keyring with
/// `keel_keyring_free`.
/// NULL: `out_keyring` NULL gives KEEL_ERR_NULL_ARG; `key` NULL with `key_len` > 0 as well.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_from_key(
    key_id: u32,
    key: *const u8,
    key_len: usize,
    out_keyring: *mut *mut keel_keyring,
) -> keel_result {
    ffi_guard!({
        let key = try_bytes!(key, key_len);
        let out_keyring = try_out!(out_keyring);
        out_keyring.write(boxed(Keyring::new(key_id, key)?));
        Ok(())
    })
}

/// Frees a keyring (its key bytes are wiped). NULL is a no-op. A `keel_memory` opened with it
/// keeps its own reference and stays usable.
///
/// Ownership: takes `keyring`, which is invalid afterwards.
/// Thread-safety: call it once, when no other call on `keyring` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_free(keyring: *mut keel_keyring) {
    // SAFETY: per this doc, NULL or a keyring from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(keyring) } })
}

/// The id of the keyring's primary key (the one new ciphertexts use).
///
/// Returns: KEEL_OK and writes `*out_id`.
/// NULL: `keyring` or `out_id` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_primary_id(
    keyring: *const keel_keyring,
    out_id: *mut u32,
) -> keel_result {
    ffi_guard!({
        let keyring = try_ref!(keyring);
        let out_id = try_out!(out_id);
        out_id.write(keyring.inner.primary_id());
        Ok(())
    })
}

/// Generates a random 64-byte key and writes its base64 text (KEEL_GENERATED_KEY_LEN characters)
/// plus a terminating NUL into `buf`; use it as `ID:<text>` in a keyring.
///
/// Returns: KEEL_OK, writes the text and `*out_len` (= KEEL_GENERATED_KEY_LEN);
/// KEEL_ERR_BUFFER_TOO_SMALL when `buf_len` < KEEL_GENERATED_KEY_LEN + 1 (nothing is written).
///
/// Ownership: `buf` is caller-owned storage of `buf_len` bytes. The text is a secret: wipe it
/// when done.
/// NULL: `buf` or `out_len` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_keyring_generate_key(
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> keel_result {
    ffi_guard!({
        if buf.is_null() {
            return Err(FfiError::null_arg("buf"));
        }
        let out_len = try_out!(out_len);
        if buf_len < KEEL_GENERATED_KEY_LEN + 1 {
            return Err(FfiError::new(
                KEEL_ERR_BUFFER_TOO_SMALL,
                format!(
                    "`buf_len` is {buf_len}; at least {} bytes are needed",
                    KEEL_GENERATED_KEY_LEN + 1
                ),
            ));
        }
        let key = Keyring::generate_key()?;
        debug_assert_eq!(key.len(), KEEL_GENERATED_KEY_LEN);
        // SAFETY: `buf` has at least KEEL_GENERATED_KEY_LEN + 1 writable bytes (this doc).
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), key.len() + 1) };
        dst[..key.len()].copy_from_slice(key.as_bytes());
        dst[key.len()] = 0;
        out_len.write(key.len());
        Ok(())
    })
}
