//! Conversation memory over C.
//!
//! `keel_memory` owns a `keel_core::MemoryStore`. Sessions are named by a `keel_session_ref`
//! (tenant, user, session as UTF-8 pointer + length). Query results come back as handles
//! (`keel_messages`, `keel_sessions`) read through per-index accessors; the pointers those hand
//! out stay valid until the handle is freed. Text in is checked for UTF-8
//! (KEEL_ERR_INVALID_UTF8), never trusted.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use keel_core::memory::{AnyMemory, MemorySettings, Message, NewMessage, SessionInfo, SessionRef};
use keel_core::{MemoryOptions, MemoryStore, Synchronous};

use crate::bytes::keel_bytes;
use crate::error::{keel_result, FfiError, KEEL_ERR_INVALID_ARGUMENT};
use crate::ffi::{self, try_out, try_ref, try_str};
use crate::keyring::{keel_keyring, text};
use crate::panic::ffi_guard;

/// Encrypted conversation memory in one SQLite file.
///
/// Thread-safety: every function may be called concurrently on the same `keel_memory` from any
/// number of threads, except `keel_memory_free`. Several processes may open the same file. After
/// `fork()` the child may keep using it: it opens fresh connections and never touches the
/// inherited ones.
pub struct keel_memory {
    pub(crate) inner: Arc<MemoryStore<AnyMemory>>,
}

/// Messages returned by `keel_memory_history` or `keel_memory_window`. Immutable.
///
/// Thread-safety: may be read from any number of threads at once.
pub struct keel_messages {
    items: Vec<Message>,
}

/// Sessions returned by `keel_memory_sessions`. Immutable.
///
/// Thread-safety: may be read from any number of threads at once.
pub struct keel_sessions {
    items: Vec<SessionInfo>,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<keel_memory>();
    shareable::<keel_messages>();
    shareable::<keel_sessions>();
};

/// Names a session: `session` of `user` in `tenant`, each 1 to 256 bytes of UTF-8. Every
/// operation is confined to this (tenant, user): another tenant or user never sees the session.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_session_ref {
    /// The tenant id.
    pub tenant: *const c_char,
    /// Its length in bytes.
    pub tenant_len: usize,
    /// The user id.
    pub user: *const c_char,
    /// Its length in bytes.
    pub user_len: usize,
    /// The session id.
    pub session: *const c_char,
    /// Its length in bytes.
    pub session_len: usize,
}

/// Options for `keel_memory_open`; pass NULL for all defaults. A zero field means its default.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_memory_options {
    /// How long to wait for another connection's lock, in ms (default 5000).
    pub busy_timeout_ms: u32,
    /// Most pooled connections (default 8).
    pub pool_size: u32,
    /// Largest accepted message content in bytes (default 1 MiB).
    pub max_content_bytes: u64,
    /// true: `PRAGMA synchronous=FULL` (commits survive power loss); false: NORMAL (default;
    /// commits survive a process crash).
    pub synchronous_full: bool,
}

/// # Safety
/// `at` points to a valid `keel_session_ref` whose buffers are valid for their lengths.
unsafe fn session_ref<'a>(at: &'a keel_session_ref) -> Result<SessionRef<'a>, FfiError> {
    // SAFETY: per this function's contract.
    unsafe {
        Ok(SessionRef {
            tenant: text(at.tenant, at.tenant_len, "tenant")?,
            user: text(at.user, at.user_len, "user")?,
            session: text(at.session, at.session_len, "session")?,
        })
    }
}

/// Opens (creating if needed) the memory database at `path` (`path_len` bytes of UTF-8):
/// WAL journal, schema migrations, a connection pool.
///
/// Returns: KEEL_OK and writes `*out_memory`; KEEL_ERR_STORE_OPEN when the file cannot be opened
/// or is not a database; KEEL_ERR_STORE_MIGRATION; KEEL_ERR_CRYPTO_KEY_MISMATCH when a key of
/// `keyring` differs from the key of the same id the database was written with (the wrong
/// keyring; the message names the key id); KEEL_ERR_CRYPTO_UNKNOWN_KEY when the database still
/// uses a key id `keyring` lacks; KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller owns the memory and frees it with `keel_memory_free`. The memory keeps
/// its own reference to the keys: `keyring` may be freed right after this call. `options` is
/// only read during the call.
/// NULL: `path`, `keyring` or `out_memory` NULL gives KEEL_ERR_NULL_ARG; `options` NULL means
/// defaults.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_open(
    path: *const c_char,
    path_len: usize,
    keyring: *const keel_keyring,
    options: *const keel_memory_options,
    out_memory: *mut *mut keel_memory,
) -> keel_result {
    ffi_guard!({
        if path.is_null() {
            return Err(FfiError::null_arg("path"));
        }
        // SAFETY: per this doc.
        let path = unsafe { text(path, path_len, "path") }?;
        let keyring = try_ref!(keyring);
        // SAFETY: per this doc, NULL or a valid options struct.
        let opts = unsafe { ffi::ref_or_none(options) }
            .copied()
            .unwrap_or_default();
        let out_memory = try_out!(out_memory);
        // A zero field is the C door's "core default" (`None`).
        let options = MemoryOptions::from(MemorySettings {
            busy_timeout: (opts.busy_timeout_ms != 0)
                .then(|| Duration::from_millis(u64::from(opts.busy_timeout_ms))),
            pool_size: (opts.pool_size != 0).then_some(opts.pool_size),
            synchronous: opts.synchronous_full.then_some(Synchronous::Full),
            max_content_bytes: (opts.max_content_bytes != 0)
                .then(|| usize::try_from(opts.max_content_bytes).unwrap_or(usize::MAX)),
            max_metadata_bytes: None,
        });
        let inner = MemoryStore::open(path, Arc::clone(&keyring.inner), options)?;
        out_memory.write(ffi::into_raw(keel_memory {
            inner: Arc::new(inner.into_any()),
        }));
        Ok(())
    })
}

/// Closes the memory's connections and frees it. NULL is a no-op.
///
/// Ownership: takes `memory`, which is invalid afterwards; results already returned
/// (`keel_messages`, `keel_sessions`, `keel_bytes`) stay valid.
/// Thread-safety: call it once, when no other call on `memory` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_free(memory: *mut keel_memory) {
    // SAFETY: per this doc, NULL or a memory from keel_memory_open, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(memory) } })
}

/// Appends a message to a session, creating the session on first use; content and metadata are
/// encrypted before they reach the database.
///
/// - `role`: 1 to 64 bytes of UTF-8 ("user", "assistant", ...).
/// - `content`: UTF-8, at most the configured `max_content_bytes`.
/// - `metadata_json`: a JSON document, or NULL/length 0 for none.
/// - `tokens`: the token count, or a negative value to let keel estimate it (ceil(chars / 4)).
///
/// Returns: KEEL_OK and writes the new message id to `*out_id`; KEEL_ERR_INVALID_UTF8;
/// KEEL_ERR_INVALID_ARGUMENT (bad ids or role); KEEL_ERR_MEMORY_CONTENT_TOO_LARGE;
/// KEEL_ERR_MEMORY_INVALID_METADATA; KEEL_ERR_MEMORY_SESSION_NOT_FOUND when the session id
/// belongs to another user of the tenant; KEEL_ERR_STORE_BUSY. On any error nothing is stored.
///
/// Ownership: every buffer is only read during the call.
/// NULL: `memory`, `at` or `out_id` NULL gives KEEL_ERR_NULL_ARG; a buffer may be NULL when its
/// length is 0.
/// Thread-safety: safe to call concurrently on one memory, and from several processes.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_append(
    memory: *const keel_memory,
    at: *const keel_session_ref,
    role: *const c_char,
    role_len: usize,
    content: *const c_char,
    content_len: usize,
    metadata_json: *const c_char,
    metadata_len: usize,
    tokens: i64,
    out_id: *mut i64,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc, each buffer is valid for its length.
        let (at, role, content, metadata) = unsafe {
            (
                session_ref(at)?,
                text(role, role_len, "role")?,
                text(content, content_len, "content")?,
                text(metadata_json, metadata_len, "metadata_json")?,
            )
        };
        let out_id = try_out!(out_id);
        let tokens = if tokens < 0 {
            None
        } else {
            Some(u32::try_from(tokens).map_err(|_| {
                FfiError::new(KEEL_ERR_INVALID_ARGUMENT, "`tokens` exceeds 4294967295")
            })?)
        };
        let msg = NewMessage {
            role: role.to_owned(),
            content: content.to_owned(),
            metadata: (!metadata.is_empty()).then(|| metadata.to_owned()),
            tokens,
        };
        out_id.write(memory.inner.append(&at, &msg)?);
        Ok(())
    })
}

/// The session's messages newest first, skipping `offset`, at most `limit`.
///
/// Returns: KEEL_OK and writes `*out_messages` (possibly empty);
/// KEEL_ERR_MEMORY_SESSION_NOT_FOUND; KEEL_ERR_MEMORY_TAMPERED when the session or a message it
/// reads was altered or a message deleted (nothing is returned); KEEL_ERR_CRYPTO_KEY_MISMATCH
/// or KEEL_ERR_CRYPTO_UNKNOWN_KEY when the keyring is wrong; KEEL_ERR_CRYPTO_DECRYPTION_FAILED
/// when a legacy row (written before integrity checks) does not decrypt.
///
/// Ownership: the caller owns the result and frees it with `keel_messages_free`.
/// NULL: `memory`, `at` or `out_messages` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_history(
    memory: *const keel_memory,
    at: *const keel_session_ref,
    limit: u32,
    offset: u32,
    out_messages: *mut *mut keel_messages,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc.
        let at = unsafe { session_ref(at) }?;
        let out_messages = try_out!(out_messages);
        let items = memory.inner.history(&at, limit, offset)?;
        out_messages.write(ffi::into_raw(keel_messages { items }));
        Ok(())
    })
}

/// The newest messages whose token counts add up to at most `budget`, oldest first.
///
/// Returns, ownership and NULL: as `keel_memory_history`.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_window(
    memory: *const keel_memory,
    at: *const keel_session_ref,
    budget: u64,
    out_messages: *mut *mut keel_messages,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc.
        let at = unsafe { session_ref(at) }?;
        let out_messages = try_out!(out_messages);
        let items = memory.inner.window(&at, budget)?;
        out_messages.write(ffi::into_raw(keel_messages { items }));
        Ok(())
    })
}

/// The number of messages in `messages`; 0 if it is NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_messages_count(messages: *const keel_messages) -> usize {
    ffi_guard!(or 0, {
        // SAFETY: per this doc, NULL or a live keel_messages.
        unsafe { ffi::ref_or_none(messages) }.map_or(0, |m| m.items.len())
    })
}

fn message_at(messages: &keel_messages, index: usize) -> Result<&Message, FfiError> {
    messages.items.get(index).ok_or_else(|| {
        FfiError::new(
            KEEL_ERR_INVALID_ARGUMENT,
            format!(
                "index {index} is out of range (count is {})",
                messages.items.len()
            ),
        )
    })
}

/// Reads message `index` (0-based; 0 is the first in the order the query returned). Each output
/// pointer may be NULL to skip that field.
///
/// - `out_id`: the message id; `out_tokens`: its token count; `out_created_at_ms`: when it was
///   appended, in ms since the Unix epoch.
/// - `out_role`/`out_role_len`, `out_content`/`out_content_len`: UTF-8 text, NOT NUL-terminated.
/// - `out_metadata`/`out_metadata_len`: the JSON metadata; NULL and 0 when the message has none.
///
/// Returns: KEEL_OK and writes the requested fields; KEEL_ERR_INVALID_ARGUMENT when `index` is
/// out of range (nothing is written).
///
/// Ownership: the text pointers belong to `messages` and stay valid until
/// `keel_messages_free(messages)`.
/// NULL: `messages` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_messages_get(
    messages: *const keel_messages,
    index: usize,
    out_id: *mut i64,
    out_role: *mut *const c_char,
    out_role_len: *mut usize,
    out_content: *mut *const c_char,
    out_content_len: *mut usize,
    out_metadata: *mut *const c_char,
    out_metadata_len: *mut usize,
    out_tokens: *mut u32,
    out_created_at_ms: *mut i64,
) -> keel_result {
    ffi_guard!({
        let messages = try_ref!(messages);
        let m = message_at(messages, index)?;
        let (meta_ptr, meta_len) = match &m.metadata {
            Some(s) => (s.as_ptr().cast::<c_char>(), s.len()),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: per this doc, each output is NULL (skipped) or writable.
        unsafe {
            write_opt(out_id, m.id);
            write_opt(out_role, m.role.as_ptr().cast::<c_char>());
            write_opt(out_role_len, m.role.len());
            write_opt(out_content, m.content.as_ptr().cast::<c_char>());
            write_opt(out_content_len, m.content.len());
            write_opt(out_metadata, meta_ptr);
            write_opt(out_metadata_len, meta_len);
            write_opt(out_tokens, m.tokens);
            write_opt(out_created_at_ms, m.created_at_ms);
        }
        Ok(())
    })
}

/// Writes `value` through `ptr` unless it is NULL (optional outputs).
///
/// # Safety
/// `ptr` is NULL or valid for writing one `T`.
unsafe fn write_opt<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: per this function's contract.
        unsafe { ptr.write(value) }
    }
}

/// Frees a message list and the text it holds. NULL is a no-op.
///
/// Ownership: takes `messages`; it and every pointer read from it are invalid afterwards.
/// Thread-safety: call it once, when no other call on `messages` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_messages_free(messages: *mut keel_messages) {
    // SAFETY: per this doc, NULL or a list from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(messages) } })
}

/// The sessions of `user` in `tenant`, most recently updated first, skipping `offset`, at most
/// `limit`.
///
/// Returns: KEEL_OK and writes `*out_sessions` (possibly empty); KEEL_ERR_INVALID_UTF8;
/// KEEL_ERR_INVALID_ARGUMENT for empty or over-long ids.
///
/// Ownership: the caller frees the result with `keel_sessions_free`.
/// NULL: `memory` or `out_sessions` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_sessions(
    memory: *const keel_memory,
    tenant: *const c_char,
    tenant_len: usize,
    user: *const c_char,
    user_len: usize,
    limit: u32,
    offset: u32,
    out_sessions: *mut *mut keel_sessions,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        // SAFETY: per this doc.
        let (tenant, user) = unsafe {
            (
                text(tenant, tenant_len, "tenant")?,
                text(user, user_len, "user")?,
            )
        };
        let out_sessions = try_out!(out_sessions);
        let items = memory.inner.sessions(tenant, user, limit, offset)?;
        out_sessions.write(ffi::into_raw(keel_sessions { items }));
        Ok(())
    })
}

/// The number of sessions in `sessions`; 0 if it is NULL.
///
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sessions_count(sessions: *const keel_sessions) -> usize {
    ffi_guard!(or 0, {
        // SAFETY: per this doc, NULL or a live keel_sessions.
        unsafe { ffi::ref_or_none(sessions) }.map_or(0, |s| s.items.len())
    })
}

/// Reads session `index` (0-based). Each output pointer may be NULL to skip that field.
/// `out_session`/`out_session_len`: the session id (UTF-8, NOT NUL-terminated), valid until
/// `keel_sessions_free(sessions)`.
///
/// Returns: KEEL_OK; KEEL_ERR_INVALID_ARGUMENT when `index` is out of range (nothing written).
/// NULL: `sessions` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn keel_sessions_get(
    sessions: *const keel_sessions,
    index: usize,
    out_session: *mut *const c_char,
    out_session_len: *mut usize,
    out_message_count: *mut u64,
    out_created_at_ms: *mut i64,
    out_updated_at_ms: *mut i64,
) -> keel_result {
    ffi_guard!({
        let sessions = try_ref!(sessions);
        let s = sessions.items.get(index).ok_or_else(|| {
            FfiError::new(
                KEEL_ERR_INVALID_ARGUMENT,
                format!(
                    "index {index} is out of range (count is {})",
                    sessions.items.len()
                ),
            )
        })?;
        // SAFETY: per this doc, each output is NULL (skipped) or writable.
        unsafe {
            write_opt(out_session, s.session.as_ptr().cast::<c_char>());
            write_opt(out_session_len, s.session.len());
            write_opt(out_message_count, s.message_count);
            write_opt(out_created_at_ms, s.created_at_ms);
            write_opt(out_updated_at_ms, s.updated_at_ms);
        }
        Ok(())
    })
}

/// Frees a session list. NULL is a no-op.
///
/// Ownership: takes `sessions`; it and every pointer read from it are invalid afterwards.
/// Thread-safety: call it once, when no other call on `sessions` is in flight.
#[no_mangle]
pub unsafe extern "C" fn keel_sessions_free(sessions: *mut keel_sessions) {
    // SAFETY: per this doc, NULL or a list from keel, freed once.
    ffi_guard!(or(), { unsafe { ffi::free(sessions) } })
}

/// The whole session as one JSON document (UTF-8): tenant, user, session, timestamps and the
/// messages oldest first.
///
/// Returns: KEEL_OK and writes `*out_json`; KEEL_ERR_MEMORY_SESSION_NOT_FOUND.
///
/// Ownership: the caller frees `*out_json` with `keel_bytes_free`. It holds decrypted content:
/// handle it as the secret it is.
/// NULL: `memory`, `at` or `out_json` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_export(
    memory: *const keel_memory,
    at: *const keel_session_ref,
    out_json: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc.
        let at = unsafe { session_ref(at) }?;
        let out_json = try_out!(out_json);
        let json = memory.inner.export(&at)?;
        out_json.write(ffi::into_raw(keel_bytes::new(Arc::from(json.into_bytes()))));
        Ok(())
    })
}

/// Hard-deletes a session and its messages; no plaintext is left in the database or its WAL.
///
/// Returns: KEEL_OK; KEEL_ERR_MEMORY_SESSION_NOT_FOUND when there is no such session.
/// NULL: `memory` or `at` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_delete_session(
    memory: *const keel_memory,
    at: *const keel_session_ref,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc.
        let at = unsafe { session_ref(at) }?;
        memory.inner.delete_session(&at)?;
        Ok(())
    })
}

/// Hard-deletes every session of `user` in `tenant`.
///
/// Returns: KEEL_OK and writes the number of sessions deleted (possibly 0) to `*out_deleted`.
/// NULL: `memory` or `out_deleted` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_delete_user(
    memory: *const keel_memory,
    tenant: *const c_char,
    tenant_len: usize,
    user: *const c_char,
    user_len: usize,
    out_deleted: *mut u64,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        // SAFETY: per this doc.
        let (tenant, user) = unsafe {
            (
                text(tenant, tenant_len, "tenant")?,
                text(user, user_len, "user")?,
            )
        };
        let out_deleted = try_out!(out_deleted);
        out_deleted.write(memory.inner.delete_user(tenant, user)?);
        Ok(())
    })
}

/// Retention: hard-deletes every session (of every tenant) whose last append is more than
/// `idle_ms` milliseconds old.
///
/// Returns: KEEL_OK and writes the number of sessions deleted to `*out_deleted`.
/// NULL: `memory` or `out_deleted` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_purge_idle(
    memory: *const keel_memory,
    idle_ms: u64,
    out_deleted: *mut u64,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let out_deleted = try_out!(out_deleted);
        out_deleted.write(memory.inner.purge_idle(Duration::from_millis(idle_ms))?);
        Ok(())
    })
}

/// Installs a new keyring, e.g. one with a new primary key (`keel_keyring_parse` of a text with
/// the old and the new key). New messages use its primary at once; `keel_memory_rotate`
/// re-encrypts the old ones. The memory keeps its own reference: `keyring` may be freed after.
///
/// Returns: KEEL_OK.
/// NULL: `memory` or `keyring` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_set_keyring(
    memory: *const keel_memory,
    keyring: *const keel_keyring,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let keyring = try_ref!(keyring);
        memory.inner.set_keyring(Arc::clone(&keyring.inner));
        Ok(())
    })
}

/// Key rotation, one batch: re-encrypts up to `batch` messages that are not under the primary
/// key (or not yet in the current format), in id order, in one transaction. Call it until it
/// writes 0 to `*out_rotated`; an interrupted rotation resumes where it stopped.
///
/// Returns: KEEL_OK and writes the number of rows re-encrypted; KEEL_ERR_INVALID_ARGUMENT when
/// `batch` is 0; KEEL_ERR_MEMORY_TAMPERED when a row to rotate fails its integrity check (it is
/// never re-encrypted as good).
/// NULL: `memory` or `out_rotated` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_rotate(
    memory: *const keel_memory,
    batch: u32,
    out_rotated: *mut u64,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let out_rotated = try_out!(out_rotated);
        out_rotated.write(memory.inner.rotate(batch)?);
        Ok(())
    })
}

/// Removes `key_id` from the memory's keyring: the last step of a rotation.
///
/// Returns: KEEL_OK; KEEL_ERR_CRYPTO_KEY_IN_USE while data is still encrypted under it;
/// KEEL_ERR_CRYPTO_INVALID_KEYRING when `key_id` is not in the keyring or is its primary.
/// NULL: `memory` NULL gives KEEL_ERR_NULL_ARG.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
pub unsafe extern "C" fn keel_memory_retire_key(
    memory: *const keel_memory,
    key_id: u32,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        memory.inner.retire_key(key_id)?;
        Ok(())
    })
}

/// The messages of an LLM request for the session, as OpenAI-style JSON (UTF-8):
/// `[{"role": "system", "content": ...}, {"role": "user", "content": ...}, ...]`. The system
/// message (the `system` prompt, then the passages as "Sources:" with citation markers [1],
/// [2], ...) comes first when there is one, then the newest turns that fit what remains of
/// `budget` tokens, oldest first. The budget counts the system message with the memory's
/// token counter; a session that does not exist yet has no history.
///
/// - `system`: UTF-8, `system_len` bytes; empty for none.
/// - `passages_json`: a JSON array of `{"text": ..., "title": ..., "doc_id": ...}` (title and
///   doc_id optional), best first; empty for none.
///
/// Returns: KEEL_OK and writes `*out_json`; KEEL_ERR_MEMORY_BUDGET_TOO_SMALL when the system
/// message alone exceeds `budget` (the message names both numbers); KEEL_ERR_INVALID_ARGUMENT
/// for malformed passages (the message names the element); KEEL_ERR_MEMORY_TAMPERED;
/// KEEL_ERR_INVALID_UTF8.
///
/// Ownership: the caller frees `*out_json` with `keel_bytes_free`. It holds decrypted content:
/// handle it as the secret it is.
/// NULL: `memory`, `at` or `out_json` NULL gives KEEL_ERR_NULL_ARG; `system` and
/// `passages_json` may be NULL when their length is 0.
/// Thread-safety: safe to call concurrently on one memory.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn keel_memory_llm_messages(
    memory: *const keel_memory,
    at: *const keel_session_ref,
    budget: u64,
    system: *const c_char,
    system_len: usize,
    passages_json: *const c_char,
    passages_json_len: usize,
    out_json: *mut *mut keel_bytes,
) -> keel_result {
    ffi_guard!({
        let memory = try_ref!(memory);
        let at = try_ref!(at);
        // SAFETY: per this doc.
        let at = unsafe { session_ref(at) }?;
        let system = try_str!(system, system_len);
        let passages =
            keel_core::memory::passages_from_json(try_str!(passages_json, passages_json_len))?;
        let out_json = try_out!(out_json);
        let messages = memory.inner.llm_messages(
            &at,
            budget,
            (!system.is_empty()).then_some(system),
            &passages,
        )?;
        let json = keel_core::memory::messages_to_json(&messages);
        out_json.write(ffi::into_raw(keel_bytes::new(Arc::from(json.into_bytes()))));
        Ok(())
    })
}
