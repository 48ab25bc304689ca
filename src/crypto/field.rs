//! Field encryption: one database value in, one self-describing ciphertext out.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! randomized    [0x01][key id u32][nonce 16][SIV tag 16][ciphertext]
//! deterministic [0x02][key id u32][SIV tag 16][ciphertext]
//! bound         [0x03][key id u32][nonce 16][SIV tag 16][ciphertext]
//! tag           [0x04][key id u32][SIV tag 16]
//! ```
//!
//! AES-SIV (RFC 5297, AES-256, 512-bit keys) authenticates a vector of associated-data strings.
//! Ours is `[binding, nonce?]`. `binding` is the 5-byte header (format + key id, so neither can
//! be altered) followed by the place the value belongs to ([`Ad`]) in an unambiguous encoding:
//! table, column and tenant each prefixed by its length (u32), then the row ids as i64s, so no
//! two different places encode alike. (One component rather than one per field: each S2V
//! component costs CMAC passes, and one keeps field encryption ~30% cheaper.) In randomized mode
//! the nonce is the last component, as RFC 5297 §3 prescribes. A ciphertext copied to another
//! table, column, tenant or row, or altered in any bit, fails to decrypt with
//! [`CryptoError::DecryptionFailed`].
//!
//! Formats 3 and 4 also authenticate a *context*: values the caller keeps in clear next to the
//! ciphertext (for a message: role, token count, time, the previous message's id) and that must
//! not be altered either. Their binding is `header ‖ len‖table ‖ len‖column ‖ len‖tenant ‖
//! count of row ids (u32) ‖ row ids ‖ len(context) (u32) ‖ context`, still one S2V component.
//! Format 3 ([`encrypt_bound`], [`decrypt_bound`]) encrypts like format 1; format 4 ([`tag`],
//! [`verify_tag`]) encrypts nothing and is a MAC: the SIV of an empty plaintext (S2V is a
//! CMAC-based PRF over the binding). A context or place that differs in any byte fails with
//! [`CryptoError::DecryptionFailed`]. [`decrypt`] refuses formats 3 and 4 (they need their
//! context), so a caller can never skip the check by accident.
//!
//! Randomized is the default: equal plaintexts give unrelated ciphertexts. Deterministic mode
//! (same key, plaintext and place give the same bytes) is only for values looked up by equality;
//! SIV keeps it safe against nonce misuse, but it does reveal equality.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;

use super::keyring::{KeyBytes, Keyring};
use crate::error::{CryptoError, Result};

/// Format byte of randomized ciphertexts.
pub const FORMAT_RANDOMIZED: u8 = 1;
/// Format byte of deterministic ciphertexts.
pub const FORMAT_DETERMINISTIC: u8 = 2;
/// Format byte of randomized ciphertexts that also authenticate a context ([`encrypt_bound`]).
pub const FORMAT_BOUND: u8 = 3;
/// Format byte of tags: a MAC of a place and a context, no plaintext ([`tag`]).
pub const FORMAT_TAG: u8 = 4;

const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Where an encrypted value lives; bound into its ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Ad<'a> {
    /// The table.
    pub table: &'a str,
    /// The column.
    pub column: &'a str,
    /// The tenant owning the row.
    pub tenant: &'a str,
    /// The row's identity: its key columns (e.g. session id, message id), in a fixed order.
    pub row: &'a [i64],
}

impl Ad<'_> {
    /// `header ‖ len(table) ‖ table ‖ len(column) ‖ column ‖ len(tenant) ‖ tenant ‖ row ids`.
    fn binding(&self, header: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            header.len()
                + 12
                + self.table.len()
                + self.column.len()
                + self.tenant.len()
                + 8 * self.row.len(),
        );
        out.extend_from_slice(header);
        for part in [self.table, self.column, self.tenant] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        for id in self.row {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    /// The binding of formats 3 and 4: [`Ad::binding`] with the row-id count before the ids,
    /// then the context, length-prefixed.
    fn binding_with(&self, header: &[u8], context: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            header.len()
                + 20
                + self.table.len()
                + self.column.len()
                + self.tenant.len()
                + 8 * self.row.len()
                + context.len(),
        );
        out.extend_from_slice(header);
        for part in [self.table, self.column, self.tenant] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&(self.row.len() as u32).to_be_bytes());
        for id in self.row {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&(context.len() as u32).to_be_bytes());
        out.extend_from_slice(context);
        out
    }
}

fn cipher(key: &KeyBytes) -> Aes256Siv {
    // Length checked by the keyring: every key is KEY_LEN (64) bytes.
    Aes256Siv::new_from_slice(&key[..]).expect("keyring keys are 64 bytes")
}

fn header(format: u8, key_id: u32) -> [u8; HEADER_LEN] {
    let id = key_id.to_be_bytes();
    [format, id[0], id[1], id[2], id[3]]
}

/// Seals `plaintext` under `key` with the S2V components `binding` (then `nonce`, when the format
/// is randomized) and lays the ciphertext out as `head ‖ nonce ‖ SIV ‖ ct`. The one place every
/// encrypting format goes through.
fn seal(
    key: &KeyBytes,
    head: &[u8; HEADER_LEN],
    binding: &[u8],
    nonce: Option<&[u8; NONCE_LEN]>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let sealed = match nonce {
        Some(n) => cipher(key).encrypt([binding, &n[..]], plaintext),
        None => cipher(key).encrypt([binding], plaintext),
    }
    .map_err(|_| CryptoError::Format("plaintext too large".into()))?;
    let nonce_len = nonce.map_or(0, |n| n.len());
    let mut out = Vec::with_capacity(HEADER_LEN + nonce_len + sealed.len());
    out.extend_from_slice(head);
    if let Some(n) = nonce {
        out.extend_from_slice(n);
    }
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Encrypts `plaintext` for the place `ad` under the primary key, with a fresh random nonce.
pub fn encrypt(keyring: &Keyring, plaintext: &[u8], ad: &Ad<'_>) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
    encrypt_with_nonce(keyring, plaintext, ad, &nonce)
}

/// Fresh random nonces for `n` [`encrypt_with_nonce`] calls, from one system call (a getrandom
/// per field was 8% of a batched append). Nothing is cached: each call draws new bytes, so no
/// nonce can be replayed, not even in a forked child.
pub(crate) fn nonces(n: usize) -> Result<Vec<[u8; NONCE_LEN]>> {
    let mut out = vec![[0u8; NONCE_LEN]; n];
    getrandom::fill(out.as_flattened_mut()).map_err(|_| CryptoError::Rng)?;
    Ok(out)
}

/// [`encrypt`] with a nonce the caller drew from the system CSPRNG ([`nonces`]), used once.
pub(crate) fn encrypt_with_nonce(
    keyring: &Keyring,
    plaintext: &[u8],
    ad: &Ad<'_>,
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>> {
    let (key_id, key) = keyring.primary_key();
    let head = header(FORMAT_RANDOMIZED, key_id);
    seal(key, &head, &ad.binding(&head), Some(nonce), plaintext)
}

/// Encrypts deterministically: the same key, plaintext and place always give the same bytes.
/// Use only for values that must be found by equality.
pub fn encrypt_deterministic(keyring: &Keyring, plaintext: &[u8], ad: &Ad<'_>) -> Result<Vec<u8>> {
    let (key_id, key) = keyring.primary_key();
    let head = header(FORMAT_DETERMINISTIC, key_id);
    seal(key, &head, &ad.binding(&head), None, plaintext)
}

/// Encrypts `plaintext` for the place `ad` under the primary key, also authenticating `context`
/// (format 3): [`decrypt_bound`] with any other context fails.
pub fn encrypt_bound(
    keyring: &Keyring,
    plaintext: &[u8],
    ad: &Ad<'_>,
    context: &[u8],
) -> Result<Vec<u8>> {
    let nonce = nonces(1)?;
    encrypt_bound_with_nonce(keyring, plaintext, ad, context, &nonce[0])
}

/// [`encrypt_bound`] with a nonce from [`nonces`], used once.
pub(crate) fn encrypt_bound_with_nonce(
    keyring: &Keyring,
    plaintext: &[u8],
    ad: &Ad<'_>,
    context: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>> {
    let (key_id, key) = keyring.primary_key();
    let head = header(FORMAT_BOUND, key_id);
    seal(
        key,
        &head,
        &ad.binding_with(&head, context),
        Some(nonce),
        plaintext,
    )
}

/// Decrypts a format-3 ciphertext made for the place `ad` and `context`. Any other format is a
/// [`CryptoError::Format`] error (check [`format_of`] first when several are expected).
pub fn decrypt_bound(
    keyring: &Keyring,
    ciphertext: &[u8],
    ad: &Ad<'_>,
    context: &[u8],
) -> Result<Vec<u8>> {
    let (format, key_id, _) = parse(ciphertext)?;
    if format != FORMAT_BOUND {
        return Err(CryptoError::Format(format!("format {format} where 3 was expected")).into());
    }
    let key = keyring.key(key_id)?;
    let binding = ad.binding_with(&ciphertext[..HEADER_LEN], context);
    let nonce = &ciphertext[HEADER_LEN..HEADER_LEN + NONCE_LEN];
    cipher(key)
        .decrypt([&binding[..], nonce], &ciphertext[HEADER_LEN + NONCE_LEN..])
        .map_err(|_| CryptoError::DecryptionFailed.into())
}

/// A MAC of the place `ad` and `context` under the primary key (format 4, 21 bytes).
pub fn tag(keyring: &Keyring, ad: &Ad<'_>, context: &[u8]) -> Result<Vec<u8>> {
    tag_with_key(keyring, keyring.primary_id(), ad, context)
}

/// [`tag`] under the key `key_id` of the keyring.
pub(crate) fn tag_with_key(
    keyring: &Keyring,
    key_id: u32,
    ad: &Ad<'_>,
    context: &[u8],
) -> Result<Vec<u8>> {
    let key = keyring.key(key_id)?;
    let head = header(FORMAT_TAG, key_id);
    let binding = ad.binding_with(&head, context);
    let sealed = cipher(key)
        .encrypt([&binding], b"")
        .map_err(|_| CryptoError::Format("tag input too large".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + TAG_LEN);
    out.extend_from_slice(&head);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Checks a [`tag`] for the place `ad` and `context`, with the key it names.
pub fn verify_tag(keyring: &Keyring, tag: &[u8], ad: &Ad<'_>, context: &[u8]) -> Result<()> {
    let (format, key_id, _) = parse(tag)?;
    if format != FORMAT_TAG || tag.len() != HEADER_LEN + TAG_LEN {
        return Err(CryptoError::Format(format!(
            "not a tag (format {format}, {} bytes)",
            tag.len()
        ))
        .into());
    }
    let key = keyring.key(key_id)?;
    let binding = ad.binding_with(&tag[..HEADER_LEN], context);
    cipher(key)
        .decrypt([&binding[..]], &tag[HEADER_LEN..])
        .map(|_| ())
        .map_err(|_| CryptoError::DecryptionFailed.into())
}

/// The format byte of a ciphertext or tag (1 to 4), after checking its length.
pub fn format_of(ciphertext: &[u8]) -> Result<u8> {
    parse(ciphertext).map(|(format, _, _)| format)
}

/// The key id a ciphertext was made with, after checking its format byte and length.
pub fn key_id_of(ciphertext: &[u8]) -> Result<u32> {
    parse(ciphertext).map(|(_, key_id, _)| key_id)
}

fn parse(ciphertext: &[u8]) -> Result<(u8, u32, usize)> {
    let format = *ciphertext
        .first()
        .ok_or_else(|| CryptoError::Format("empty ciphertext".into()))?;
    let min = match format {
        FORMAT_RANDOMIZED | FORMAT_BOUND => HEADER_LEN + NONCE_LEN + TAG_LEN,
        FORMAT_DETERMINISTIC | FORMAT_TAG => HEADER_LEN + TAG_LEN,
        other => return Err(CryptoError::Format(format!("unknown format version {other}")).into()),
    };
    if ciphertext.len() < min {
        return Err(CryptoError::Format(format!(
            "ciphertext is {} bytes; at least {min} expected",
            ciphertext.len()
        ))
        .into());
    }
    let key_id = u32::from_be_bytes([ciphertext[1], ciphertext[2], ciphertext[3], ciphertext[4]]);
    Ok((format, key_id, min))
}

/// Decrypts a ciphertext of format 1 or 2 made for the place `ad`, with the key it names.
/// Formats 3 and 4 are refused with [`CryptoError::Format`]: they need their context.
pub fn decrypt(keyring: &Keyring, ciphertext: &[u8], ad: &Ad<'_>) -> Result<Vec<u8>> {
    let (format, key_id, _) = parse(ciphertext)?;
    if format == FORMAT_BOUND || format == FORMAT_TAG {
        return Err(CryptoError::Format(format!(
            "format {format} authenticates a context: use decrypt_bound or verify_tag"
        ))
        .into());
    }
    let key = keyring.key(key_id)?;
    let binding = ad.binding(&ciphertext[..HEADER_LEN]);
    let mut siv = cipher(key);
    let opened = if format == FORMAT_RANDOMIZED {
        let nonce = &ciphertext[HEADER_LEN..HEADER_LEN + NONCE_LEN];
        siv.decrypt([&binding[..], nonce], &ciphertext[HEADER_LEN + NONCE_LEN..])
    } else {
        siv.decrypt([&binding[..]], &ciphertext[HEADER_LEN..])
    };
    opened.map_err(|_| CryptoError::DecryptionFailed.into())
}
