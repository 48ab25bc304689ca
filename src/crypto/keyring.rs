//! The keyring: versioned 512-bit AES-SIV keys, one of them primary.
//!
//! Text format (environment variable `KEEL_KEYRING` or a key file), entries separated by commas,
//! semicolons or newlines; blank lines and `#` comments are ignored:
//!
//! ```text
//! 1:<base64 of 64 random bytes>
//! 2:<base64 of 64 random bytes>
//! primary=2        # optional; default: the highest id
//! ```
//!
//! Hygiene, checked on every way in (text, file, raw bytes, `with_key`):
//! - A key file must not be readable or writable by group or others (as ssh does for private
//!   keys): `from_file` refuses mode bits `0o077` with an error naming the path and the mode.
//! - A key must look random: fewer than [`MIN_DISTINCT_BYTES`] (16) distinct byte values among its
//!   64 bytes is refused. This catches all-zero and all-equal keys and short repeated patterns
//!   (`"abcd"` × 16); 64 random bytes have about 57 distinct values, and fewer than 16 happens
//!   with probability below 2^-180. It is a test for mistakes, not a proof of randomness.
//!
//! Invariants: key bytes live only in `Zeroizing` buffers (wiped on drop), are never stored in the
//! database and never printed (`Debug` shows ids only; errors name ids and lengths), and never
//! leave `crate::crypto`: other modules get subkeys from [`Keyring::derive`], as [`DerivedKey`]s
//! whose bytes only crypto's HMAC helper reads. A keyring is immutable once built; rotation
//! builds a new one with [`Keyring::with_key`].
//!
//! Subkey derivation ([`Kdf`], recorded per row by whoever stores a MAC or hash made with it):
//! - version 2, [`Kdf::Hkdf`] (current): HKDF-SHA256 (RFC 5869) with the 64-byte keyring key
//!   as input keying material, no salt, the label as `info`, 32 bytes of output.
//! - version 1, [`Kdf::LegacyHmac`]: HMAC-SHA256(keyring key, label), the construction of rows
//!   written before version 2. It is kept only to check those rows. It is *not* HKDF-Expand with
//!   the keyring key as PRK: that would be HMAC(key, label ‖ 0x01), and our labels do not end in
//!   0x01, so the two disagree and old rows need their version recorded (migration 6 adds a
//!   `kdf` column defaulting to 1 to `api_keys`, `audit_log` and `audit_head`). Both are PRFs
//!   keyed by a uniformly random 512-bit key, so version-1 subkeys are not weak, merely not the
//!   standard construction.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{CryptoError, Result};

/// Length of a key in bytes: AES-SIV with AES-256 takes two 256-bit halves (MAC + CTR).
pub const KEY_LEN: usize = 64;

/// The fewest distinct byte values a key may have (see the module docs).
pub const MIN_DISTINCT_BYTES: usize = 16;

/// The environment variable [`Keyring::from_env`] reads by default.
pub const KEYRING_ENV: &str = "KEEL_KEYRING";

/// The id of the one key of a keyring made without naming one ([`Keyring::generate`], the
/// Python door's `Keyring.from_key(key)`).
pub const DEFAULT_KEY_ID: u32 = 1;

/// Key material, wiped from memory when dropped.
pub(crate) type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

/// How a subkey is derived from a keyring key; stored per row as its number (see the module
/// docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kdf {
    /// Version 1: HMAC-SHA256(keyring key, label); rows written before version 2.
    LegacyHmac = 1,
    /// Version 2: HKDF-SHA256(ikm = keyring key, salt = none, info = label).
    Hkdf = 2,
}

impl Kdf {
    /// The derivation new rows use.
    pub(crate) const CURRENT: Kdf = Kdf::Hkdf;
    /// Every version, newest first.
    pub(crate) const ALL: [Kdf; 2] = [Kdf::Hkdf, Kdf::LegacyHmac];

    /// The number stored in `kdf` columns.
    pub(crate) fn stored(self) -> i64 {
        self as i64
    }

    /// The version a stored number names; an unknown number is a format error (a row written
    /// by a newer keel, or edited).
    pub(crate) fn from_stored(v: i64) -> Result<Self> {
        match v {
            1 => Ok(Kdf::LegacyHmac),
            2 => Ok(Kdf::Hkdf),
            other => Err(CryptoError::Format(format!(
                "unknown key derivation version {other} (this keel knows 1 and 2)"
            ))
            .into()),
        }
    }
}

/// A 256-bit subkey derived from a keyring key for one purpose (label). Wiped on drop, never
/// printed; its bytes are read only by [`DerivedKey::hmac`].
pub(crate) struct DerivedKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKey(..)")
    }
}

impl DerivedKey {
    /// HMAC-SHA256 keyed by this subkey, ready to be fed.
    pub(crate) fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("HMAC accepts 32-byte keys")
    }
}

/// A set of versioned keys with one primary (the one new ciphertexts use).
pub struct Keyring {
    keys: BTreeMap<u32, KeyBytes>,
    primary: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> crate::Error {
    CryptoError::InvalidKeyring(msg.into()).into()
}

impl Keyring {
    /// A keyring holding one key, `key_id`, which is primary.
    pub fn new(key_id: u32, key: &[u8]) -> Result<Self> {
        let mut ring = Self {
            keys: BTreeMap::new(),
            primary: key_id,
        };
        ring.insert(key_id, key)?;
        Ok(ring)
    }

    fn insert(&mut self, key_id: u32, key: &[u8]) -> Result<()> {
        if key.len() != KEY_LEN {
            return Err(invalid(format!(
                "key {key_id} is {} bytes; keys are {KEY_LEN} bytes",
                key.len()
            )));
        }
        if self.keys.contains_key(&key_id) {
            return Err(invalid(format!("key id {key_id} appears twice")));
        }
        let mut seen = [false; 256];
        for &b in key {
            seen[usize::from(b)] = true;
        }
        let distinct = seen.iter().filter(|&&s| s).count();
        if distinct < MIN_DISTINCT_BYTES {
            return Err(invalid(format!(
                "key {key_id} is not random: only {distinct} distinct byte values in {KEY_LEN} \
                 bytes (a random key has about 57; at least {MIN_DISTINCT_BYTES} are required); \
                 generate one with generate_key"
            )));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(key);
        self.keys.insert(key_id, bytes);
        Ok(())
    }

    /// A new keyring with one freshly generated key (id [`DEFAULT_KEY_ID`]).
    pub fn generate() -> Result<Self> {
        let key = random_key()?;
        Self::new(DEFAULT_KEY_ID, &key[..])
    }

    /// A fresh random key, base64-encoded: the text to put after `ID:` in a keyring. The text
    /// is wiped from memory when dropped.
    pub fn generate_key() -> Result<Zeroizing<String>> {
        let key = random_key()?;
        Ok(Zeroizing::new(STANDARD.encode(&key[..])))
    }

    /// Parses the text format described in the module docs.
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Self {
            keys: BTreeMap::new(),
            primary: 0,
        };
        let mut primary = None;
        // Comments first (a `#` runs to the end of its line, whatever it contains), then entries.
        let entries = text
            .lines()
            .flat_map(|line| line.split('#').next().unwrap_or("").split([',', ';']));
        for raw in entries {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            if let Some(id) = entry.strip_prefix("primary=") {
                primary = Some(parse_id(id)?);
                continue;
            }
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| invalid("each entry must be `ID:BASE64KEY` or `primary=ID`"))?;
            let id = parse_id(id)?;
            let key = Zeroizing::new(
                STANDARD
                    .decode(b64.trim())
                    .map_err(|_| invalid(format!("key {id} is not valid base64")))?,
            );
            keys.insert(id, &key)?;
        }
        let highest = *keys
            .keys
            .keys()
            .next_back()
            .ok_or_else(|| invalid("no keys"))?;
        keys.primary = primary.unwrap_or(highest);
        if !keys.keys.contains_key(&keys.primary) {
            return Err(invalid(format!(
                "primary key {} is not in the keyring",
                keys.primary
            )));
        }
        Ok(keys)
    }

    /// Reads the keyring from the environment variable `var` (usually [`KEYRING_ENV`]).
    pub fn from_env(var: &str) -> Result<Self> {
        let _span =
            tracing::debug_span!("crypto.keyring.load", keel.keyring.source = "env").entered();
        let text = Zeroizing::new(std::env::var(var).map_err(|_| {
            CryptoError::KeyringSource(format!(
                "environment variable {var} is not set or not UTF-8"
            ))
        })?);
        Self::parse(&text)
    }

    /// Reads the keyring from a key file. On Unix the file must not be readable or writable by
    /// group or others (mode `0600` or stricter), as ssh requires of private keys.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read as _;
        let _span =
            tracing::debug_span!("crypto.keyring.load", keel.keyring.source = "file").entered();
        let path = path.as_ref();
        let source = |what: String| CryptoError::KeyringSource(what);
        let mut file = std::fs::File::open(path).map_err(|e| {
            source(format!(
                "cannot read key file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        // The mode of the file that was opened (no race with a rename in between).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = file.metadata().map_err(|e| {
                source(format!(
                    "cannot read key file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(source(format!(
                    "key file {} has mode {mode:04o}: it must not be readable or writable by \
                     group or others; chmod 600 it",
                    path.display()
                ))
                .into());
            }
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(|e| {
            source(format!(
                "cannot read key file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        Self::parse(&text)
    }

    /// A copy of this keyring plus `key` under `key_id`, which becomes primary: the first step
    /// of a rotation.
    pub fn with_key(&self, key_id: u32, key: &[u8]) -> Result<Self> {
        let mut next = self.clone_keys();
        next.insert(key_id, key)?;
        next.primary = key_id;
        Ok(next)
    }

    /// A copy of this keyring without `key_id` (the last step of a rotation, once no ciphertext
    /// uses it; `MemoryStore::retire_key` checks that). The primary cannot be removed.
    pub fn without_key(&self, key_id: u32) -> Result<Self> {
        if key_id == self.primary {
            return Err(invalid(format!(
                "key {key_id} is primary; it cannot be removed"
            )));
        }
        let mut next = self.clone_keys();
        if next.keys.remove(&key_id).is_none() {
            return Err(invalid(format!(
                "key {key_id} is not in the keyring (its key ids: {:?})",
                self.key_ids()
            )));
        }
        Ok(next)
    }

    fn clone_keys(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            primary: self.primary,
        }
    }

    /// The id of the primary key.
    pub fn primary_id(&self) -> u32 {
        self.primary
    }

    /// Every key id, ascending.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The subkey for `label` from key `key_id`, with the current derivation ([`Kdf::CURRENT`]).
    pub(crate) fn derive(&self, key_id: u32, label: &[u8]) -> Result<DerivedKey> {
        self.derive_with(Kdf::CURRENT, key_id, label)
    }

    /// The subkey for `label` from key `key_id` with derivation `kdf` (the one recorded with the
    /// row being checked).
    pub(crate) fn derive_with(&self, kdf: Kdf, key_id: u32, label: &[u8]) -> Result<DerivedKey> {
        let key = self.key(key_id)?;
        let mut out = Zeroizing::new([0u8; 32]);
        match kdf {
            Kdf::Hkdf => hkdf::Hkdf::<Sha256>::new(None, &key[..])
                .expand(label, &mut out[..])
                .map_err(|_| CryptoError::Format("HKDF output length".into()))?,
            Kdf::LegacyHmac => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..])
                    .map_err(|_| invalid("unusable keyring key"))?;
                mac.update(label);
                out.copy_from_slice(&mac.finalize().into_bytes());
            }
        }
        Ok(DerivedKey(out))
    }

    /// The raw bytes of key `key_id`: only for crypto's own ciphers (field encryption) and
    /// derivation.
    pub(super) fn key(&self, key_id: u32) -> Result<&KeyBytes> {
        self.keys
            .get(&key_id)
            .ok_or_else(|| CryptoError::UnknownKey { key_id }.into())
    }

    /// Whether the keyring holds key `key_id`.
    pub fn has_key(&self, key_id: u32) -> bool {
        self.keys.contains_key(&key_id)
    }

    pub(super) fn primary_key(&self) -> (u32, &KeyBytes) {
        // Present by construction: every constructor checks the primary is a member.
        (self.primary, &self.keys[&self.primary])
    }
}

fn parse_id(text: &str) -> Result<u32> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| invalid("a key id must be an integer from 0 to 4294967295"))
}

fn random_key() -> Result<KeyBytes> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut key[..]).map_err(|_| CryptoError::Rng)?;
    Ok(key)
}

/// A distinct, valid (non-repetitive) test key per `seed`: the keyring refuses constant keys.
#[cfg(test)]
pub(crate) fn test_key(seed: u8) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
}
