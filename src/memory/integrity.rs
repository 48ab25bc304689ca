//! Integrity of what memory keeps in clear: the formats, the session tag, the key check values.
//!
//! - A message (format 3, see `crypto::field`) authenticates, with its content and metadata, the
//!   clear columns `role`, `tokens`, `created_at`, whether it has metadata, and `prev_id`: the id
//!   of the previous message of its session (0 for the first). Its place (tenant, session id,
//!   message id) was already bound. So editing a clear column, or moving the row, fails.
//! - A session carries a tag (format 4) over its tenant, id, owner (`user_id`), `session_key`,
//!   `created_at`, `updated_at`, `message_count` and `last_message_id`, rewritten in the same
//!   transaction as every append (the append already rewrote that row: no extra page). Reads
//!   check it, check that the newest message is `last_message_id`, and follow the `prev_id`
//!   links of the rows they return, so a deleted or truncated message is noticed; reads that
//!   skip rows (`history` with an offset) count the session's messages instead.
//! - Legacy rows (written before these bindings): messages of format 1 and sessions without a
//!   tag. Their content and metadata stay authenticated and bound to their place; their clear
//!   columns are not. A session is legacy only while its newest message is legacy: a session
//!   without a tag whose newest message is of format 3 had its tag removed, which is refused.
//!   `MemoryStore::rotate` upgrades legacy rows (and seals their sessions).
//! - `memory_keys` holds, per key id, a tag under that key of a fixed text: a keyring whose key
//!   of the same id differs is refused when the store opens (`CryptoError::KeyMismatch`).
//!   Before a check value is first written for a key, one message under that key is decrypted,
//!   so a wrong keyring is never recorded as the right one.

use crate::crypto::{self, field, Ad, Keyring};
use crate::error::{CryptoError, Error, MemoryError, Result};

pub(super) use super::backend::StoredMessage as RawRow;
use super::backend::{self, MemoryBackend, MemoryRead, MemoryTable, MemoryWrite};
use super::MESSAGES;

const SESSIONS: &str = "memory_sessions";

/// The context a format-3 message ciphertext authenticates.
pub(super) fn message_context(
    role: &str,
    tokens: u32,
    created_at: i64,
    prev_id: i64,
    has_metadata: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + role.len() + 4 + 8 + 8 + 1);
    out.extend_from_slice(&(role.len() as u32).to_be_bytes());
    out.extend_from_slice(role.as_bytes());
    out.extend_from_slice(&tokens.to_be_bytes());
    out.extend_from_slice(&created_at.to_be_bytes());
    out.extend_from_slice(&prev_id.to_be_bytes());
    out.push(u8::from(has_metadata));
    out
}

/// Where a message field lives (bound into its ciphertext).
pub(super) fn message_ad<'a>(tenant: &'a str, column: &'a str, row: &'a [i64; 2]) -> Ad<'a> {
    Ad {
        table: MESSAGES,
        column,
        tenant,
        row,
    }
}

/// The session values its tag covers.
#[derive(Debug, Clone)]
pub(super) struct SessionState<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub session: &'a str,
    pub id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub message_count: i64,
    pub last_message_id: i64,
}

impl SessionState<'_> {
    fn context(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.user.len() + self.session.len() + 32);
        for part in [self.user, self.session] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        for n in [
            self.created_at,
            self.updated_at,
            self.message_count,
            self.last_message_id,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    /// The tag of this state under the keyring's primary key.
    pub(super) fn tag(&self, keyring: &Keyring) -> Result<Vec<u8>> {
        let row = [self.id];
        let ad = Ad {
            table: SESSIONS,
            column: "mac",
            tenant: self.tenant,
            row: &row,
        };
        crypto::tag(keyring, &ad, &self.context())
    }

    /// Checks `tag` against this state; a failure is diagnosed (wrong key or tampering).
    pub(super) fn verify(
        &self,
        conn: &dyn MemoryRead,
        keyring: &Keyring,
        tag: &[u8],
    ) -> Result<()> {
        let row = [self.id];
        let ad = Ad {
            table: SESSIONS,
            column: "mac",
            tenant: self.tenant,
            row: &row,
        };
        crypto::verify_tag(keyring, tag, &ad, &self.context()).map_err(|e| {
            diagnose(
                conn,
                keyring,
                tag,
                e,
                tampered(None, "its owner, times or message count were altered"),
            )
        })
    }
}

/// A [`MemoryError::Tampered`].
pub(super) fn tampered(message_id: Option<i64>, reason: impl Into<String>) -> Error {
    MemoryError::Tampered {
        message_id,
        reason: reason.into(),
    }
    .into()
}

/// Turns an authentication failure of `sealed` (a ciphertext or tag) into the error to report:
/// `KeyMismatch` when the key it names is not the key this database recorded for that id,
/// otherwise `if_tampered`. Other errors (unknown key, bad format) pass through.
pub(super) fn diagnose(
    conn: &dyn MemoryRead,
    keyring: &Keyring,
    sealed: &[u8],
    err: Error,
    if_tampered: Error,
) -> Error {
    if !matches!(err, Error::Crypto(CryptoError::DecryptionFailed)) {
        return err;
    }
    let Ok(key_id) = crypto::key_id_of(sealed) else {
        return if_tampered;
    };
    match conn.key_check(key_id) {
        Ok(Some(check)) if verify_check(keyring, key_id, &check).is_err() => {
            CryptoError::KeyMismatch { key_id }.into()
        }
        _ => if_tampered,
    }
}

fn check_ad(row: &[i64; 1]) -> Ad<'_> {
    Ad {
        table: "memory_keys",
        column: "check_tag",
        tenant: "",
        row,
    }
}

const CHECK_CONTEXT: &[u8] = b"keel memory key check v1";

fn make_check(keyring: &Keyring, key_id: u32) -> Result<Vec<u8>> {
    let row = [i64::from(key_id)];
    field::tag_with_key(keyring, key_id, &check_ad(&row), CHECK_CONTEXT)
}

fn verify_check(keyring: &Keyring, key_id: u32, check: &[u8]) -> Result<()> {
    if crypto::key_id_of(check)? != key_id {
        return Err(CryptoError::KeyMismatch { key_id }.into());
    }
    let row = [i64::from(key_id)];
    crypto::verify_tag(keyring, check, &check_ad(&row), CHECK_CONTEXT).map_err(|e| match e {
        Error::Crypto(CryptoError::DecryptionFailed) => CryptoError::KeyMismatch { key_id }.into(),
        other => other,
    })
}

/// How many messages still use `key_id` or, when none does, how many session tags (a session
/// is tagged with the key of its newest message, so normally none). A scan: key ids are not
/// indexed.
pub(super) fn key_in_use(conn: &dyn MemoryRead, key_id: u32) -> Result<u64> {
    match conn.count_messages_under_key(key_id)? {
        0 => conn.count_sessions_under_key(key_id),
        n => Ok(n),
    }
}

/// At open: every key of the keyring with a check value must match it; a key with none gets
/// one, after one message under that key (if any) was decrypted with it. A check value for a
/// key id the keyring lacks is an error only while data still uses that key.
pub(super) fn check_keyring<B: MemoryBackend + ?Sized>(store: &B, keyring: &Keyring) -> Result<()> {
    let stored: Vec<(u32, Vec<u8>)> =
        backend::read(store, MemoryTable::Keys, |conn| conn.key_checks())?;
    for (key_id, check) in &stored {
        if keyring.key_ids().contains(key_id) {
            verify_check(keyring, *key_id, check)?;
        } else if backend::read(store, MemoryTable::Messages, |conn| {
            key_in_use(conn, *key_id)
        })? > 0
        {
            return Err(CryptoError::UnknownKey { key_id: *key_id }.into());
        }
    }
    let missing: Vec<u32> = keyring
        .key_ids()
        .into_iter()
        .filter(|id| !stored.iter().any(|(s, _)| s == id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    backend::write(store, MemoryTable::Keys, |tx| {
        for &key_id in &missing {
            ensure_check(tx, keyring, key_id, true)?;
        }
        Ok(())
    })
}

/// Makes sure `key_id` has a check value (verifying the one there, if any). With `probe`, a key
/// without one is first tried on one message it encrypts.
pub(super) fn ensure_check(
    conn: &dyn MemoryWrite,
    keyring: &Keyring,
    key_id: u32,
    probe: bool,
) -> Result<()> {
    if let Some(check) = conn.key_check(key_id)? {
        return verify_check(keyring, key_id, &check);
    }
    if probe {
        probe_key(conn, keyring, key_id)?;
    }
    let check = make_check(keyring, key_id)?;
    conn.insert_key_check(key_id, &check)
}

/// Tries `key_id` on a few messages it encrypts (any format): a key that decrypts none of them
/// is the wrong key. (Several, so that one damaged row does not pass for a wrong keyring.)
fn probe_key(conn: &dyn MemoryRead, keyring: &Keyring, key_id: u32) -> Result<()> {
    let rows = conn.messages_under_key(key_id, 3)?;
    if rows.is_empty() {
        return Ok(());
    }
    for raw in &rows {
        match raw.open(keyring, &raw.tenant) {
            Ok(_) => return Ok(()),
            Err(Error::Crypto(CryptoError::DecryptionFailed)) | Err(Error::Memory(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(CryptoError::KeyMismatch { key_id }.into())
}

/// A message row after authentication.
pub(super) struct Opened {
    pub content: Vec<u8>,
    pub metadata: Option<Vec<u8>>,
    /// Whether the clear columns were authenticated (format 3) or not (a legacy row).
    pub bound: bool,
}

impl RawRow {
    /// Whether the content is of the bound format (3). A malformed ciphertext counts as bound,
    /// so that it is never accepted as a legacy row.
    pub(super) fn is_bound(&self) -> bool {
        field::format_of(&self.content).map_or(true, |f| f != field::FORMAT_RANDOMIZED)
    }

    /// Authenticates and decrypts the row as a row of `tenant`. Errors are undiagnosed
    /// (`DecryptionFailed` for a failed check); see [`RawRow::open_checked`].
    fn open(&self, keyring: &Keyring, tenant: &str) -> Result<Opened> {
        let coords = [self.session_id, self.id];
        let c_ad = message_ad(tenant, "content", &coords);
        let m_ad = message_ad(tenant, "metadata", &coords);
        if field::format_of(&self.content)? == field::FORMAT_RANDOMIZED {
            let content = crypto::decrypt(keyring, &self.content, &c_ad)?;
            let metadata = match &self.metadata {
                Some(m) => Some(crypto::decrypt(keyring, m, &m_ad)?),
                None => None,
            };
            return Ok(Opened {
                content,
                metadata,
                bound: false,
            });
        }
        let prev = self.prev_id.ok_or(CryptoError::DecryptionFailed)?;
        let ctx = message_context(
            &self.role,
            self.tokens,
            self.created_at,
            prev,
            self.metadata.is_some(),
        );
        let content = crypto::decrypt_bound(keyring, &self.content, &c_ad, &ctx)?;
        let metadata = match &self.metadata {
            Some(m) => Some(crypto::decrypt_bound(keyring, m, &m_ad, &ctx)?),
            None => None,
        };
        Ok(Opened {
            content,
            metadata,
            bound: true,
        })
    }

    /// [`RawRow::open`] as a row of `tenant`, with failures diagnosed: `KeyMismatch` for a
    /// wrong key, `Tampered` naming this message for a bound row that does not verify, and
    /// `DecryptionFailed` for a legacy row that does not.
    pub(super) fn open_checked(
        &self,
        conn: &dyn MemoryRead,
        keyring: &Keyring,
        tenant: &str,
    ) -> Result<Opened> {
        self.open(keyring, tenant).map_err(|e| {
            let if_tampered = if self.is_bound() {
                tampered(
                    Some(self.id),
                    "its content, metadata, role, tokens, time or place in its session was \
                     altered, or the row was moved",
                )
            } else {
                CryptoError::DecryptionFailed.into()
            };
            diagnose(conn, keyring, &self.content, e, if_tampered)
        })
    }
}
