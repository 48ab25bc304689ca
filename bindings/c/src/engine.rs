//! The engine over C: one handle built from one configuration, and accessors that hand out the
//! primitives it built.
//!
//! Each accessor returns a new handle of the primitive's own type (`keel_memory`, `keel_apikeys`,
//! `keel_ratelimiter`, `keel_cache`, `keel_bm25`, ...) sharing the engine's object by reference
//! counting: it is freed with that type's own `_free`, may outlive the engine, and every handle
//! obtained for the same name reaches the same object (one pool, one counter, one cache).

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use keel_core::Engine;

use crate::auth::keel_apikeys;
use crate::cache::keel_cache;
use crate::error::keel_result;
use crate::ffi::{self, try_out, try_ref, try_str};
use crate::memory::keel_memory;
use crate::neural::{keel_cross_encoder, keel_dense, keel_embedder};
use crate::panic::ffi_guard;
use crate::rag::keel_bm25;
use crate::ratelimit::keel_ratelimiter;

/// One store, one keyring, and every primitive built from one configuration (a TOML file and
/// `KEEL_*` environment variables; see docs/engine.md).
///
/// Thread-safety: every function may be called concurrently on the same `keel_engine` from any
/// number of threads, except `keel_engine_free`, which must be called once no other call on it
/// is in flight. Handles obtained from it are independent of it afterwards.
pub struct keel_engine {
    inner: Engine,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_engine>();
};

/// Opens an engine from the TOML file at `config_path` (`config_path_len` bytes of UTF-8) and
/// the `KEEL_*` environment variables, which override the file field by field. With
/// `config_path` NULL and `config_path_len` 0, the environment alone configures it (e.g.
/// `KEEL_DATABASE_URL=sqlite:///var/lib/app/keel.db` and `KEEL_KEYRING`).
///
/// Everything configured is checked now: the database is opened and migrated, the keyring loaded
/// and checked against it, every rate limiter built (a host-shared state file opened), every
/// model directory checked to exist. Caches, indexes and models are built on first access.
///
/// Returns: KEEL_OK and writes `*out_engine`; KEEL_ERR_CONFIG_PARSE (unreadable file, TOML
/// syntax, unknown field, wrong type: the message names the field and its source);
/// KEEL_ERR_CONFIG_INVALID (a value out of range: the message names field and value);
/// KEEL_ERR_CONFIG_MISSING (`database.url` not set); KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE
/// (`redis://`, `postgres://`); KEEL_ERR_CRYPTO_KEYRING_SOURCE (no keyring in `KEEL_KEYRING` or
/// the key file); the errors of `keel_memory_open` and `keel_ratelimiter_new_shared`;
/// KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the engine and frees it with `keel_engine_free`.
/// NULL: `config_path` may be NULL only with length 0 (length 0 means no file); `out_engine`
/// NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread, but not while another thread changes the
/// environment (`setenv`, `putenv`), which C does not make safe for readers.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_open(
    config_path: *const c_char,
    config_path_len: usize,
    out_engine: *mut *mut keel_engine,
) -> keel_result {
    ffi_guard!({
        let out_engine = try_out!(out_engine);
        let path = try_str!(config_path, config_path_len);
        let path = (config_path_len > 0).then(|| Path::new(path));
        let inner = Engine::open(path)?;
        out_engine.write(ffi::into_raw(keel_engine { inner }));
        Ok(())
    })
}

/// Frees an engine. NULL is a no-op. Handles obtained from it stay valid (each holds its own
/// reference); the database closes when the last of them is freed.
///
/// Ownership: takes `engine`, which is invalid afterwards.
/// Thread-safety: call it once, when no other call on `engine` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_free(engine: *mut keel_engine) {
    // SAFETY: per this doc, `engine` is NULL or from keel_engine_open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(engine) } })
}

/// The engine's conversation memory (on the engine's database).
///
/// Returns: KEEL_OK and writes `*out_memory`.
/// Ownership: the caller owns the new handle and frees it with `keel_memory_free`; it shares
/// the engine's memory (one connection pool).
/// NULL: `engine` or `out_memory` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_memory`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_memory(
    engine: *const keel_engine,
    out_memory: *mut *mut keel_memory,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_memory = try_out!(out_memory);
        out_memory.write(ffi::into_raw(keel_memory {
            inner: Arc::clone(engine.inner.memory()),
        }));
        Ok(())
    })
}

/// The engine's API-key registry with its audit log (unless `api_keys.audit = false`), on the
/// engine's database: `keel_apikeys_audit_*` read and write that log.
///
/// Returns: KEEL_OK and writes `*out_keys`.
/// Ownership: the caller owns the new handle (`keel_apikeys_free`); it shares the engine's
/// registry (one verified-key cache, one pool).
/// NULL: `engine` or `out_keys` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_apikeys(
    engine: *const keel_engine,
    out_keys: *mut *mut keel_apikeys,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_keys = try_out!(out_keys);
        out_keys.write(ffi::into_raw(keel_apikeys {
            keys: Arc::clone(engine.inner.api_keys()),
            audit: engine.inner.audit().cloned(),
        }));
        Ok(())
    })
}

/// The rate limiter of the `[ratelimit.<name>]` table (`name_len` bytes of UTF-8).
///
/// Returns: KEEL_OK and writes `*out_limiter`; KEEL_ERR_CONFIG_UNKNOWN_NAME when no such table
/// is configured (the message lists the configured names); KEEL_ERR_INVALID_UTF8.
/// Ownership: the caller owns the new handle (`keel_ratelimiter_free`); it shares the engine's
/// limiter: every handle for `name` counts against the same budget.
/// NULL: `engine`, `out_limiter` NULL give KEEL_ERR_NULL_ARG; `name` NULL only with length 0.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as
/// `keel_ratelimiter`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_ratelimiter(
    engine: *const keel_engine,
    name: *const c_char,
    name_len: usize,
    out_limiter: *mut *mut keel_ratelimiter,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_limiter = try_out!(out_limiter);
        let name = try_str!(name, name_len);
        let inner = Arc::clone(engine.inner.rate_limiter(name)?);
        out_limiter.write(ffi::into_raw(keel_ratelimiter { inner }));
        Ok(())
    })
}

/// The cache of the `[cache.<name>]` table (`name_len` bytes of UTF-8), built on first access
/// with the table's bounds (a weight is key + value bytes, as in `keel_cache_new`).
///
/// Returns: KEEL_OK and writes `*out_cache`; KEEL_ERR_CONFIG_UNKNOWN_NAME when no such table is
/// configured (the message lists the configured names); KEEL_ERR_INVALID_UTF8.
/// Ownership: the caller owns the new handle (`keel_cache_free`); it shares the engine's cache.
/// NULL: as `keel_engine_ratelimiter`.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_cache`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_cache(
    engine: *const keel_engine,
    name: *const c_char,
    name_len: usize,
    out_cache: *mut *mut keel_cache,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_cache = try_out!(out_cache);
        let name = try_str!(name, name_len);
        let inner = engine.inner.cache(name)?;
        out_cache.write(ffi::into_raw(keel_cache { inner }));
        Ok(())
    })
}

/// The BM25 index: `retrieval.bm25_index` opened when the file exists, else an empty index
/// (save it there with `keel_bm25_save`); in memory when no path is configured. Built on first
/// access.
///
/// Returns: KEEL_OK and writes `*out_index`; KEEL_ERR_RAG_IO or KEEL_ERR_RAG_CORRUPT_INDEX when
/// the file cannot be read.
/// Ownership: the caller owns the new handle (`keel_bm25_free`); it shares the engine's index.
/// NULL: `engine` or `out_index` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_bm25`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_bm25(
    engine: *const keel_engine,
    out_index: *mut *mut keel_bm25,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_index = try_out!(out_index);
        let inner = engine.inner.bm25()?;
        out_index.write(ffi::into_raw(keel_bm25 { inner }));
        Ok(())
    })
}

/// The embedding model of `retrieval.embedder`, loaded on first access.
///
/// Returns: KEEL_OK and writes `*out_embedder`; KEEL_ERR_CONFIG_MISSING when
/// `retrieval.embedder` is not configured; KEEL_ERR_RAG_RUNTIME, KEEL_ERR_RAG_MODEL as
/// `keel_embedder_new`.
/// Ownership: the caller owns the new handle (`keel_embedder_free`); it shares the engine's
/// model.
/// NULL: `engine` or `out_embedder` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_embedder`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_embedder(
    engine: *const keel_engine,
    out_embedder: *mut *mut keel_embedder,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_embedder = try_out!(out_embedder);
        let inner = engine.inner.embedder()?;
        out_embedder.write(ffi::into_raw(keel_embedder { inner }));
        Ok(())
    })
}

/// The cross-encoder of `retrieval.cross_encoder`, loaded on first access.
///
/// Returns: as `keel_engine_embedder` (for `retrieval.cross_encoder`).
/// Ownership: the caller owns the new handle (`keel_cross_encoder_free`); it shares the
/// engine's model.
/// NULL: `engine` or `out_model` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as
/// `keel_cross_encoder`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_cross_encoder(
    engine: *const keel_engine,
    out_model: *mut *mut keel_cross_encoder,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_model = try_out!(out_model);
        let inner = engine.inner.cross_encoder()?;
        out_model.write(ffi::into_raw(keel_cross_encoder { inner }));
        Ok(())
    })
}

/// The dense index of `retrieval.dense_index` (opened when the file exists, else empty; save it
/// there with `keel_dense_save`), searching with the engine's embedder. Built on first access.
///
/// Returns: KEEL_OK and writes `*out_index`; KEEL_ERR_CONFIG_MISSING when
/// `retrieval.dense_index` is not configured; the errors of `keel_engine_embedder` and
/// `keel_dense_open`.
/// Ownership: the caller owns the new handle (`keel_dense_free`); it shares the engine's index.
/// NULL: `engine` or `out_index` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently; the handle is as thread-safe as `keel_dense`.
#[no_mangle]
pub unsafe extern "C" fn keel_engine_dense(
    engine: *const keel_engine,
    out_index: *mut *mut keel_dense,
) -> keel_result {
    ffi_guard!({
        let engine = try_ref!(engine);
        let out_index = try_out!(out_index);
        let inner = engine.inner.dense()?;
        out_index.write(ffi::into_raw(keel_dense { inner }));
        Ok(())
    })
}
