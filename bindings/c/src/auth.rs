//! API keys and the audit log over C.
//!
//! Plaintext keys never travel through a keel-owned buffer: `keel_apikeys_create` and
//! `keel_apikeys_rotate` write them into the caller's buffer, which the caller can wipe.
//! A verified identity is an opaque handle with accessors.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use keel_core::auth::{parse_list, ApiKeys, ApiKeysOptions, Identity, NewKey};
use keel_core::crypto::{AuditEntry, AuditLog, AuditQuery, NewAuditEntry};
use keel_core::store::{Store, StoreOptions};

use crate::error::{keel_result, FfiError, KEEL_ERR_BUFFER_TOO_SMALL, KEEL_ERR_INVALID_ARGUMENT};
use crate::ffi::{self, try_out, try_ref, try_str, Out};
use crate::keyring::keel_keyring;
use crate::panic::ffi_guard;

/// Room for any keel API key plus its NUL (keys are at most 50 bytes).
pub const KEEL_API_KEY_BUFFER_SIZE: usize = 64;

/// The API-key registry (and its audit log) on a SQLite database.
///
/// Thread-safety: every function may be called concurrently on one `keel_apikeys`, except
/// `keel_apikeys_free`, which must be called once no other call on it is in flight.
pub struct keel_apikeys {
    pub(crate) keys: Arc<ApiKeys>,
    pub(crate) audit: Option<Arc<AuditLog>>,
}

/// A verified key's identity. Immutable; safe to read from any thread; free with
/// `keel_identity_free`.
pub struct keel_identity {
    inner: Arc<Identity>,
}

/// Checked before any work, so that a bad buffer never costs a created key.
fn check_key_buffer(buf: *mut c_char, cap: usize) -> Result<(), FfiError> {
    if buf.is_null() {
        return Err(FfiError::null_arg("out_key"));
    }
    if cap < KEEL_API_KEY_BUFFER_SIZE {
        return Err(FfiError::new(
            KEEL_ERR_BUFFER_TOO_SMALL,
            format!("out_key_cap must be at least {KEEL_API_KEY_BUFFER_SIZE}"),
        ));
    }
    Ok(())
}

/// Writes `key` NUL-terminated into the caller's buffer.
fn write_key(
    key: &str,
    buf: *mut c_char,
    cap: usize,
    out_len: Out<'_, usize>,
) -> Result<(), FfiError> {
    if buf.is_null() {
        return Err(FfiError::null_arg("out_key"));
    }
    if key.len() + 1 > cap {
        return Err(FfiError::new(
            KEEL_ERR_BUFFER_TOO_SMALL,
            format!(
                "the key needs {} bytes with its NUL; the buffer has {cap}",
                key.len() + 1
            ),
        ));
    }
    // SAFETY: the caller promises `cap` writable bytes at `buf`; we write key.len() + 1 <= cap.
    unsafe {
        std::ptr::copy_nonoverlapping(key.as_ptr(), buf.cast::<u8>(), key.len());
        *buf.add(key.len()) = 0;
    }
    out_len.write(key.len());
    Ok(())
}

/// Opens (creating if needed) the API-key registry in the SQLite database at `path`, accepting
/// keys of the core's default environments (`live`); see `keel_apikeys_open_env`.
///
/// - `cache_ttl_ms`: how long a verified key is trusted without the database, which bounds how
///   late another process notices a revocation; 0 means the core's default (1000).
/// - `audit`: when true, admin operations and refused verifications are recorded in the
///   database's tamper-evident audit log (each admin operation in the same transaction as its
///   entry).
///
/// Returns: KEEL_OK and writes `*out_keys`; KEEL_ERR_STORE_* when the database cannot be opened.
/// Ownership: the caller owns the registry (`keel_apikeys_free`); `keyring` is shared (it may be
/// freed after this call).
/// NULL: `path` (with a length), `keyring` and `out_keys` must not be NULL.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_open(
    path: *const c_char,
    path_len: usize,
    keyring: *const keel_keyring,
    cache_ttl_ms: u64,
    audit: bool,
    out_keys: *mut *mut keel_apikeys,
) -> keel_result {
    // SAFETY: the same contract as keel_apikeys_open_env with no environment list.
    unsafe {
        keel_apikeys_open_env(
            path,
            path_len,
            keyring,
            cache_ttl_ms,
            audit,
            std::ptr::null(),
            0,
            out_keys,
        )
    }
}

/// As `keel_apikeys_open`, also naming the key environments the registry accepts:
/// `accepted_envs` is a space-separated list (e.g. `"live"`, `"test staging"`); a key of any
/// other environment is refused by `keel_apikeys_verify` with KEEL_ERR_AUTH_WRONG_ENVIRONMENT.
/// Length 0 means the core's default (`live` only).
///
/// Returns: as `keel_apikeys_open`; KEEL_ERR_INVALID_ARGUMENT for an environment that is not
/// 1-16 lowercase ASCII letters or digits.
/// Ownership: as `keel_apikeys_open`; `accepted_envs` is only read during the call.
/// NULL: as `keel_apikeys_open`; `accepted_envs` only with length 0.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn keel_apikeys_open_env(
    path: *const c_char,
    path_len: usize,
    keyring: *const keel_keyring,
    cache_ttl_ms: u64,
    audit: bool,
    accepted_envs: *const c_char,
    accepted_envs_len: usize,
    out_keys: *mut *mut keel_apikeys,
) -> keel_result {
    ffi_guard!({
        let out_keys = try_out!(out_keys);
        let path = try_str!(path, path_len);
        let keyring = try_ref!(keyring);
        let envs = try_str!(accepted_envs, accepted_envs_len);
        // 0 and "" are the C door's "core default" (`None`).
        let envs = parse_list(envs);
        let options = ApiKeysOptions::new(
            (cache_ttl_ms != 0).then(|| Duration::from_millis(cache_ttl_ms)),
            None,
            (!envs.is_empty()).then_some(envs),
        )?;
        let store = Store::open(path, StoreOptions::default())?;
        let mut keys = ApiKeys::new(store.clone(), keyring.inner.clone(), options)?;
        let audit = audit.then(|| Arc::new(AuditLog::new(store, keyring.inner.clone())));
        if let Some(a) = &audit {
            keys = keys.try_with_audit(a.clone())?;
        }
        out_keys.write(ffi::into_raw(keel_apikeys {
            keys: Arc::new(keys),
            audit,
        }));
        Ok(())
    })
}

/// Frees a registry. NULL is a no-op. Identities and audit entries obtained from it stay valid.
///
/// Ownership: takes `keys`, which is invalid afterwards.
/// Thread-safety: call it once, when no other call on `keys` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_free(keys: *mut keel_apikeys) {
    // SAFETY: per this doc, `keys` is NULL or from keel_apikeys_open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(keys) } })
}

/// Creates a key for `tenant`, on behalf of `actor` (recorded in the audit log).
///
/// - `env`: the key's environment label (`live`, `test`: 1-16 lowercase letters or digits).
/// - `scopes`: space-separated scopes (may be empty).
/// - `expires_at_ms`: expiry in ms since the Unix epoch; 0 for never.
/// - `out_key`, `out_key_cap`: the caller's buffer for the plaintext key, NUL-terminated
///   (`KEEL_API_KEY_BUFFER_SIZE` bytes always suffice); `*out_key_len` gets its length.
///   Show it once, store only what you must, wipe the buffer after use.
///
/// Returns: KEEL_OK and writes the key, `*out_key_len` and `*out_key_id`;
/// KEEL_ERR_AUTH_INVALID_ENV, KEEL_ERR_INVALID_ARGUMENT (empty tenant or name, bad scope),
/// KEEL_ERR_BUFFER_TOO_SMALL, KEEL_ERR_STORE_*.
/// Ownership: the strings are only read during the call; `out_key` is the caller's.
/// NULL: no pointer may be NULL, except string pointers whose length is 0.
/// Thread-safety: safe to call concurrently on one `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_create(
    keys: *const keel_apikeys,
    actor: *const c_char,
    actor_len: usize,
    tenant: *const c_char,
    tenant_len: usize,
    name: *const c_char,
    name_len: usize,
    env: *const c_char,
    env_len: usize,
    scopes: *const c_char,
    scopes_len: usize,
    expires_at_ms: u64,
    out_key: *mut c_char,
    out_key_cap: usize,
    out_key_len: *mut usize,
    out_key_id: *mut i64,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_key_len = try_out!(out_key_len);
        let out_key_id = try_out!(out_key_id);
        let actor = try_str!(actor, actor_len);
        let new = NewKey {
            tenant: try_str!(tenant, tenant_len).to_owned(),
            name: try_str!(name, name_len).to_owned(),
            env: try_str!(env, env_len).to_owned(),
            scopes: parse_list(try_str!(scopes, scopes_len)),
            expires_at: (expires_at_ms != 0)
                .then(|| UNIX_EPOCH + Duration::from_millis(expires_at_ms)),
            ..NewKey::default()
        };
        check_key_buffer(out_key, out_key_cap)?;
        let (plaintext, info) = keys.keys.create(actor, &new)?;
        write_key(&plaintext, out_key, out_key_cap, out_key_len)?;
        out_key_id.write(info.id);
        Ok(())
    })
}

/// Verifies a presented key.
///
/// Returns: KEEL_OK and writes `*out_identity`; a refusal is an error code:
/// KEEL_ERR_AUTH_MALFORMED, KEEL_ERR_AUTH_BAD_CHECKSUM, KEEL_ERR_AUTH_WRONG_ENVIRONMENT (all
/// decided offline), KEEL_ERR_AUTH_UNKNOWN_KEY, KEEL_ERR_AUTH_REVOKED, KEEL_ERR_AUTH_EXPIRED,
/// KEEL_ERR_AUTH_TAMPERED (the key's stored record was edited without the keyring). Messages
/// never contain the key. Never waits for the database's write lock (the `last_used_at` write
/// is skipped when it is held; a refusal's audit entry waits at most 100 ms).
/// Ownership: the caller owns the identity (`keel_identity_free`); `key` is only read.
/// NULL: `keys` and `out_identity` must not be NULL; `key` only with length 0.
/// Thread-safety: safe to call concurrently on one `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_verify(
    keys: *const keel_apikeys,
    key: *const c_char,
    key_len: usize,
    out_identity: *mut *mut keel_identity,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_identity = try_out!(out_identity);
        let key = try_str!(key, key_len);
        let inner = keys.keys.verify(key)?;
        out_identity.write(ffi::into_raw(keel_identity { inner }));
        Ok(())
    })
}

/// Revokes key `key_id` of `tenant` on behalf of `actor`: refused at once in this process,
/// within the cache TTL in others.
///
/// Returns: KEEL_OK; KEEL_ERR_AUTH_UNKNOWN_KEY when `tenant` has no such key.
/// Ownership: the strings are only read during the call.
/// NULL: `keys` must not be NULL; strings only with length 0.
/// Thread-safety: safe to call concurrently on one `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_revoke(
    keys: *const keel_apikeys,
    actor: *const c_char,
    actor_len: usize,
    tenant: *const c_char,
    tenant_len: usize,
    key_id: i64,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let actor = try_str!(actor, actor_len);
        let tenant = try_str!(tenant, tenant_len);
        keys.keys.revoke(actor, tenant, key_id)?;
        Ok(())
    })
}

/// Replaces key `key_id` of `tenant` with a new one (same scopes and settings); the old key
/// keeps working for `grace_ms` milliseconds. Writes the new plaintext like
/// `keel_apikeys_create` and its id to `*out_key_id`.
///
/// Returns: KEEL_OK; KEEL_ERR_AUTH_UNKNOWN_KEY; KEEL_ERR_AUTH_REVOKED for a revoked key;
/// KEEL_ERR_AUTH_TAMPERED for a key whose stored record fails its MAC;
/// KEEL_ERR_BUFFER_TOO_SMALL.
/// Ownership and NULL: as for `keel_apikeys_create`.
/// Thread-safety: safe to call concurrently on one `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_rotate(
    keys: *const keel_apikeys,
    actor: *const c_char,
    actor_len: usize,
    tenant: *const c_char,
    tenant_len: usize,
    key_id: i64,
    grace_ms: u64,
    out_key: *mut c_char,
    out_key_cap: usize,
    out_key_len: *mut usize,
    out_key_id: *mut i64,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_key_len = try_out!(out_key_len);
        let out_key_id = try_out!(out_key_id);
        let actor = try_str!(actor, actor_len);
        let tenant = try_str!(tenant, tenant_len);
        check_key_buffer(out_key, out_key_cap)?;
        let (plaintext, info) =
            keys.keys
                .rotate(actor, tenant, key_id, Duration::from_millis(grace_ms))?;
        write_key(&plaintext, out_key, out_key_cap, out_key_len)?;
        out_key_id.write(info.id);
        Ok(())
    })
}

/// Verifies the whole audit log (opened with `audit` true).
///
/// Returns: KEEL_OK and writes the number of entries to `*out_entries`;
/// KEEL_ERR_CRYPTO_AUDIT_TAMPERED (the message names the first bad entry);
/// KEEL_ERR_INVALID_ARGUMENT when the registry was opened without an audit log.
/// NULL: `keys` or `out_entries` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one `keel_apikeys` (entries appended meanwhile
/// may or may not be counted).
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_audit_verify(
    keys: *const keel_apikeys,
    out_entries: *mut u64,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_entries = try_out!(out_entries);
        out_entries.write(audit_of(keys)?.verify()?.entries);
        Ok(())
    })
}

/// The key's row id. 0 for NULL.
///
/// Thread-safety: a `keel_identity` is immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_identity_key_id(identity: *const keel_identity) -> i64 {
    // SAFETY: NULL or a live identity, per the handle contract.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(identity) }.map_or(0, |i| i.inner.key_id) })
}

/// The owning tenant, as UTF-8 (not NUL-terminated) with its length in `*out_len`. Valid until
/// the identity is freed. NULL identity or `out_len`: returns NULL.
///
/// Thread-safety: a `keel_identity` is immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_identity_tenant(
    identity: *const keel_identity,
    out_len: *mut usize,
) -> *const c_char {
    ffi_guard!(or std::ptr::null(), {
        // SAFETY: NULL or a live identity / writable size_t, per the contract.
        match (unsafe { ffi::ref_or_none(identity) }, out_len.is_null()) {
            (Some(i), false) => {
                // SAFETY: checked non-NULL above.
                unsafe { *out_len = i.inner.tenant.len() };
                i.inner.tenant.as_ptr().cast::<c_char>()
            }
            _ => std::ptr::null(),
        }
    })
}

/// Whether the key has `scope` (UTF-8, `scope_len` bytes; only read during the call). False
/// for NULL or invalid input.
///
/// Thread-safety: a `keel_identity` is immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_identity_has_scope(
    identity: *const keel_identity,
    scope: *const c_char,
    scope_len: usize,
) -> bool {
    ffi_guard!(or false, {
        // SAFETY: NULL or a live identity; `scope_len` readable bytes at `scope`.
        let identity = unsafe { ffi::ref_or_none(identity) };
        let scope = unsafe { ffi::str_arg(scope, scope_len, "scope") };
        match (identity, scope) {
            (Some(i), Ok(s)) => i.inner.has_scope(s),
            _ => false,
        }
    })
}

/// Frees an identity. NULL is a no-op.
///
/// Ownership: takes `identity`; it and the text from `keel_identity_tenant` are invalid
/// afterwards.
/// Thread-safety: call it once, when no other call on `identity` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_identity_free(identity: *mut keel_identity) {
    // SAFETY: per this doc, NULL or from keel_apikeys_verify, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(identity) } })
}

/// Audit entries returned by `keel_apikeys_audit_query`: immutable, owned by the caller, freed
/// with `keel_audit_entries_free`; safe to read from any thread.
pub struct keel_audit_entries {
    entries: Vec<AuditEntry>,
}

/// `keel_audit_entry_field` selector: who acted.
pub const KEEL_AUDIT_ACTOR: i32 = 0;
/// `keel_audit_entry_field` selector: what was done.
pub const KEEL_AUDIT_ACTION: i32 = 1;
/// `keel_audit_entry_field` selector: on what.
pub const KEEL_AUDIT_TARGET: i32 = 2;
/// `keel_audit_entry_field` selector: the outcome.
pub const KEEL_AUDIT_OUTCOME: i32 = 3;
/// `keel_audit_entry_field` selector: the request id (absent: NULL with length 0).
pub const KEEL_AUDIT_REQUEST_ID: i32 = 4;

fn audit_of(keys: &keel_apikeys) -> Result<&AuditLog, FfiError> {
    keys.audit.as_deref().ok_or_else(|| {
        FfiError::new(
            crate::error::KEEL_ERR_INVALID_ARGUMENT,
            "this registry was opened without an audit log",
        )
    })
}

/// Records an entry in the audit log (opened with `audit` true): `actor`, `action`, `target`,
/// `outcome` and an optional `request_id` (NULL or length 0 for none), each UTF-8 of at most
/// 1024 bytes without control characters. Writes its sequence number to `*out_seq`.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT for a bad field or a registry without audit log;
/// KEEL_ERR_INVALID_UTF8; KEEL_ERR_STORE_*.
/// Ownership: the strings are only read during the call.
/// NULL: `keys` or `out_seq` NULL gives KEEL_ERR_NULL_ARG; strings only with length 0.
/// Thread-safety: safe to call concurrently on one `keel_apikeys` (appends are serialised by
/// the database).
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_audit_append(
    keys: *const keel_apikeys,
    actor: *const c_char,
    actor_len: usize,
    action: *const c_char,
    action_len: usize,
    target: *const c_char,
    target_len: usize,
    outcome: *const c_char,
    outcome_len: usize,
    request_id: *const c_char,
    request_id_len: usize,
    out_seq: *mut i64,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_seq = try_out!(out_seq);
        let request_id = try_str!(request_id, request_id_len);
        let entry = NewAuditEntry {
            actor: try_str!(actor, actor_len).to_owned(),
            action: try_str!(action, action_len).to_owned(),
            target: try_str!(target, target_len).to_owned(),
            outcome: try_str!(outcome, outcome_len).to_owned(),
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
        };
        out_seq.write(audit_of(keys)?.append(&entry)?);
        Ok(())
    })
}

/// Reads audit entries, oldest first: only `actor`'s when `actor_len` > 0, only those at or
/// after `since_ms` and before `until_ms` (ms since the Unix epoch; 0 means unbounded), at most
/// `limit` (0 means 1000).
///
/// Returns: KEEL_OK and writes `*out_entries` (possibly empty); KEEL_ERR_INVALID_ARGUMENT for a
/// registry without audit log; KEEL_ERR_CRYPTO_* if an entry cannot be decrypted.
/// Ownership: the caller frees the entries with `keel_audit_entries_free`; `actor` is only read
/// during the call.
/// NULL: `keys` or `out_entries` NULL gives KEEL_ERR_NULL_ARG; `actor` only with length 0.
/// Thread-safety: safe to call concurrently on one `keel_apikeys`.
#[no_mangle]
pub unsafe extern "C" fn keel_apikeys_audit_query(
    keys: *const keel_apikeys,
    actor: *const c_char,
    actor_len: usize,
    since_ms: i64,
    until_ms: i64,
    limit: u32,
    out_entries: *mut *mut keel_audit_entries,
) -> keel_result {
    ffi_guard!({
        let keys = try_ref!(keys);
        let out_entries = try_out!(out_entries);
        let actor = try_str!(actor, actor_len);
        let query = AuditQuery {
            actor: (!actor.is_empty()).then(|| actor.to_owned()),
            from_ms: (since_ms != 0).then_some(since_ms),
            until_ms: (until_ms != 0).then_some(until_ms),
            limit,
        };
        let entries = audit_of(keys)?.query(&query)?;
        out_entries.write(ffi::into_raw(keel_audit_entries { entries }));
        Ok(())
    })
}

/// Number of entries; 0 for NULL.
///
/// Thread-safety: `keel_audit_entries` are immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entries_count(entries: *const keel_audit_entries) -> usize {
    // SAFETY: NULL or a live handle.
    ffi_guard!(or 0, { unsafe { ffi::ref_or_none(entries) }.map_or(0, |e| e.entries.len()) })
}

/// Entry `index`'s sequence number and time (ms since the epoch) through `out_seq` and
/// `out_at_ms`. Returns KEEL_OK, KEEL_ERR_NOT_FOUND when `index` is out of range, or
/// KEEL_ERR_NULL_ARG (`entries`, `out_seq` or `out_at_ms` NULL).
///
/// Thread-safety: `keel_audit_entries` are immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entry_meta(
    entries: *const keel_audit_entries,
    index: usize,
    out_seq: *mut i64,
    out_at_ms: *mut i64,
) -> keel_result {
    ffi_guard!({
        let entries = try_ref!(entries);
        let out_seq = try_out!(out_seq);
        let out_at_ms = try_out!(out_at_ms);
        let e = entries.entries.get(index).ok_or_else(FfiError::not_found)?;
        out_seq.write(e.seq);
        out_at_ms.write(e.at_ms);
        Ok(())
    })
}

/// One text field of entry `index` (`KEEL_AUDIT_ACTOR` ... `KEEL_AUDIT_REQUEST_ID`) as UTF-8
/// (not NUL-terminated), its length in `*out_len`; valid until the entries are freed. NULL (and
/// `*out_len` = 0) for an absent request id, an out-of-range index or field, or a NULL
/// `entries`; NULL (nothing written) when `out_len` is NULL.
///
/// Thread-safety: `keel_audit_entries` are immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entry_field(
    entries: *const keel_audit_entries,
    index: usize,
    field: i32,
    out_len: *mut usize,
) -> *const c_char {
    ffi_guard!(or std::ptr::null(), {
        if out_len.is_null() {
            return std::ptr::null();
        }
        // SAFETY: NULL or a live handle; `out_len` checked non-NULL.
        let text = unsafe { ffi::ref_or_none(entries) }
            .and_then(|e| e.entries.get(index))
            .and_then(|e| match field {
                KEEL_AUDIT_ACTOR => Some(e.entry.actor.as_str()),
                KEEL_AUDIT_ACTION => Some(e.entry.action.as_str()),
                KEEL_AUDIT_TARGET => Some(e.entry.target.as_str()),
                KEEL_AUDIT_OUTCOME => Some(e.entry.outcome.as_str()),
                KEEL_AUDIT_REQUEST_ID => e.entry.request_id.as_deref(),
                _ => None,
            });
        // SAFETY: `out_len` is non-NULL and writable per the contract.
        unsafe { *out_len = text.map_or(0, str::len) };
        text.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_char>())
    })
}

/// Reads entry `index` (0-based, oldest first): its sequence number through `out_seq` and its
/// time (ms since the Unix epoch) through `out_at_ms`; either may be NULL to skip it. The
/// getter convention of `keel_messages_get` and `keel_hits_get`; `keel_audit_entry_meta` is its
/// older form (kept: an ABI never loses a symbol).
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT when `index` is out of range (nothing is
/// written; the message names the index and the count).
///
/// NULL: `entries` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: `keel_audit_entries` are immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entries_get(
    entries: *const keel_audit_entries,
    index: usize,
    out_seq: *mut i64,
    out_at_ms: *mut i64,
) -> keel_result {
    ffi_guard!({
        let entries = try_ref!(entries);
        let e = entries.entries.get(index).ok_or_else(|| {
            FfiError::new(
                KEEL_ERR_INVALID_ARGUMENT,
                format!(
                    "index {index} is out of range (count is {})",
                    entries.entries.len()
                ),
            )
        })?;
        // SAFETY: each pointer is NULL or writable per this doc.
        unsafe {
            if !out_seq.is_null() {
                out_seq.write(e.seq);
            }
            if !out_at_ms.is_null() {
                out_at_ms.write(e.at_ms);
            }
        }
        Ok(())
    })
}

/// One text field of entry `index`, as `keel_audit_entry_field` (same arguments, same result;
/// the plural name of the list's other getters, `keel_audit_entries_count` and
/// `keel_audit_entries_get`).
///
/// Thread-safety: `keel_audit_entries` are immutable; safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entries_text(
    entries: *const keel_audit_entries,
    index: usize,
    field: i32,
    out_len: *mut usize,
) -> *const c_char {
    // SAFETY: the same contract as keel_audit_entry_field.
    unsafe { keel_audit_entry_field(entries, index, field, out_len) }
}

/// Frees audit entries. NULL is a no-op.
///
/// Ownership: takes `entries`; it and the text from `keel_audit_entry_field` are invalid
/// afterwards.
/// Thread-safety: call it once, when no other call on `entries` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_audit_entries_free(entries: *mut keel_audit_entries) {
    // SAFETY: NULL or from keel_apikeys_audit_query, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(entries) } })
}
