//! The API-key format: `keel_<env>_<random><checksum>`.
//!
//! - `env`: 1 to 16 lowercase ASCII letters or digits (`live`, `test`, `staging`...), so a
//!   leaked key says where it works and secret scanners can match `keel_[a-z0-9]+_`.
//! - `random`: 22 base62 characters drawn uniformly from the OS CSPRNG: 22 * log2(62) = 131 bits.
//! - `checksum`: the CRC32 of everything before it, as 6 base62 characters. It rejects mistyped
//!   or truncated keys before any lookup (and without a database round trip); it is not a
//!   security measure.
//!
//! Only an HMAC-SHA256 of the whole key under a server secret is ever stored (see
//! [`KeyHasher`]); the plaintext exists once, at creation, in a zeroizing buffer.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{AuthError, Result};

/// Every key starts with this.
pub const PREFIX: &str = "keel_";
const RANDOM_LEN: usize = 22;
const CHECKSUM_LEN: usize = 6;
const MAX_ENV_LEN: usize = 16;
/// Characters of the random part shown in listings (`keel_live_Ab3dE9`...), enough to tell keys
/// apart, far too few to guess the rest.
pub const DISPLAY_RANDOM_CHARS: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Checks an environment label.
pub fn check_env(env: &str) -> Result<()> {
    let ok = !env.is_empty()
        && env.len() <= MAX_ENV_LEN
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidEnv.into())
    }
}

fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Draws `RANDOM_LEN` uniform base62 characters (rejection sampling on random bytes).
fn random_part() -> Result<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(RANDOM_LEN));
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < RANDOM_LEN {
        getrandom::fill(&mut *pool)
            .map_err(|e| crate::Error::InvalidArgument(format!("no OS randomness: {e}")))?;
        // 248 = 4 * 62: bytes at or above it would bias the distribution.
        for &b in pool.iter().filter(|&&b| b < 248) {
            if out.len() == RANDOM_LEN {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// Generates a new key for `env`. The caller shows it once and keeps only its hash.
pub fn generate(env: &str) -> Result<Zeroizing<String>> {
    check_env(env)?;
    let random = random_part()?;
    let mut key = Zeroizing::new(String::with_capacity(PREFIX.len() + env.len() + 30));
    key.push_str(PREFIX);
    key.push_str(env);
    key.push('_');
    key.push_str(&random);
    let sum = checksum(&key);
    key.push_str(std::str::from_utf8(&sum).expect("base62 is ASCII"));
    Ok(key)
}

/// A syntactically valid key: its environment and display prefix (never the secret part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// The environment label.
    pub env: String,
    /// `keel_<env>_` plus the first few random characters, safe to show and log.
    pub display: String,
}

/// Checks a presented key's shape and checksum, offline. Errors never echo the key.
pub fn parse(key: &str) -> Result<ParsedKey> {
    let rest = key.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
    let (env, tail) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    check_env(env).map_err(|_| AuthError::Malformed)?;
    if tail.len() != RANDOM_LEN + CHECKSUM_LEN || !tail.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(AuthError::Malformed.into());
    }
    let (body, sum) = key.split_at(key.len() - CHECKSUM_LEN);
    if checksum(body) != sum.as_bytes() {
        return Err(AuthError::BadChecksum.into());
    }
    Ok(ParsedKey {
        env: env.to_owned(),
        display: key[..PREFIX.len() + env.len() + 1 + DISPLAY_RANDOM_CHARS].to_owned(),
    })
}

/// HMAC-SHA256 of keys under a server secret (derived from the keyring, never stored).
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher keyed by `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < 32 {
            return Err(crate::Error::InvalidArgument(
                "the API-key hashing secret must be at least 32 bytes".into(),
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|_| crate::Error::InvalidArgument("unusable HMAC key".into()))?;
        Ok(Self { mac })
    }

    /// A hasher keyed by a subkey derived from the keyring (whose bytes stay in crypto).
    pub(crate) fn from_derived(secret: &crate::crypto::DerivedKey) -> Self {
        Self { mac: secret.hmac() }
    }

    /// The stored form of `key`.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `key` hashes to `stored`, in constant time.
    pub fn verify(&self, key: &str, stored: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.verify_slice(stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse() {
        let key = generate("live").unwrap();
        assert!(key.starts_with("keel_live_"));
        assert_eq!(key.len(), "keel_live_".len() + 22 + 6);
        let parsed = parse(&key).unwrap();
        assert_eq!(parsed.env, "live");
        assert_eq!(parsed.display, key[..16]);
        assert_ne!(generate("live").unwrap(), key, "random");
    }

    #[test]
    fn random_part_uses_the_whole_alphabet_uniformly_enough() {
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            let key = generate("t").unwrap();
            for b in key["keel_t_".len()..key.len() - 6].bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        // 44000 draws, 709.7 expected per symbol; a biased or truncated alphabet fails this.
        assert!(
            counts.iter().all(|&c| (550..880).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn every_single_character_typo_is_caught_offline() {
        let key = generate("test").unwrap();
        let tail = "keel_test_".len();
        for i in tail..key.len() {
            for &c in ALPHABET.iter().step_by(7) {
                if key.as_bytes()[i] == c {
                    continue;
                }
                let mut typo = key.as_bytes().to_vec();
                typo[i] = c;
                let typo = String::from_utf8(typo).unwrap();
                let err = parse(&typo).unwrap_err();
                assert!(
                    matches!(err, Error::Auth(AuthError::BadChecksum)),
                    "{i}: {err}"
                );
            }
        }
    }

    #[test]
    fn malformed_keys_are_rejected_without_echoing_them() {
        let key = generate("live").unwrap();
        let cases = [
            String::new(),
            "keel_".into(),
            "keel_live".into(),
            "sk_live_abcdef".into(),
            key[..key.len() - 1].to_string(),
            format!("{}x", &*key),
            key.replace("keel_live_", "keel_LIVE_"),
            key.replace("keel_live_", "keel__"),
            format!("{}-", &key[..key.len() - 1]),
        ];
        for case in cases {
            let err = parse(&case).unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::Malformed)),
                "{case:?}: {err}"
            );
            if case.len() > 12 {
                assert!(
                    !err.to_string().contains(&case[10..]),
                    "error echoes the key"
                );
            }
        }
        for env in ["", "Live", "a-b", "seventeen-chars-x"] {
            assert!(generate(env).is_err(), "{env:?}");
        }
    }

    #[test]
    fn hashes_are_keyed_and_verify_in_constant_time() {
        let a = KeyHasher::new(&[1u8; 32]).unwrap();
        let b = KeyHasher::new(&[2u8; 32]).unwrap();
        let key = generate("live").unwrap();
        let stored = a.hash(&key);
        assert!(a.verify(&key, &stored));
        assert!(!b.verify(&key, &stored), "another secret");
        assert!(
            !a.verify(&generate("live").unwrap(), &stored),
            "another key"
        );
        assert!(!a.verify(&key, &stored[..31]), "truncated hash");
        assert!(KeyHasher::new(&[0u8; 16]).is_err());
        assert_eq!(format!("{a:?}"), "KeyHasher(..)");
    }
}
