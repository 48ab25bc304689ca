//! Keyring and field encryption (AES-SIV, RFC 5297).
//!
//! - [`Keyring`]: versioned 512-bit keys with one primary, loaded from `KEEL_KEYRING` or a key
//!   file, zeroized on drop, never printed.
//! - [`field`]: encrypt one value bound to its place (table, column, tenant, row) so that it
//!   cannot be moved; randomized by default, deterministic on request.
//!
//! Rotation is a three-step procedure driven by the owner of the encrypted rows (for
//! conversation memory: `MemoryStore::rotate` and `MemoryStore::retire_key`): add a new primary
//! ([`Keyring::with_key`]), re-encrypt rows in batches, then drop the old key
//! ([`Keyring::without_key`]) once nothing uses it.

pub mod audit;
pub mod field;
mod keyring;

pub use audit::{AuditEntry, AuditLog, AuditQuery, NewAuditEntry};
pub use field::{
    decrypt, decrypt_bound, encrypt, encrypt_bound, encrypt_deterministic, format_of, key_id_of,
    tag, verify_tag, Ad,
};
#[cfg(test)]
pub(crate) use keyring::test_key;
pub(crate) use keyring::{DerivedKey, Kdf};
pub use keyring::{Keyring, DEFAULT_KEY_ID, KEYRING_ENV, KEY_LEN, MIN_DISTINCT_BYTES};

#[cfg(test)]
mod tests;
