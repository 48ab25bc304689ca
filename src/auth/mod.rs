//! API keys: generation, offline format checks, keyed hashing.
//!
//! The key format and hashing live in [`key`]; [`ApiKeys`] stores keys on the SQLite store with
//! scopes, expiry, rotation with a grace period, revocation and a verified-key cache.

pub mod backend;
pub mod key;
mod keys;

pub use key::{check_env, generate, parse, KeyHasher, ParsedKey};
pub use keys::{
    parse_list, DEFAULT_ACTOR, DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL, DEFAULT_ENV,
    DEFAULT_ROTATION_GRACE,
};
pub use keys::{ApiKeys, ApiKeysOptions, Identity, KeyInfo, NewKey};

#[cfg(test)]
mod tests;
