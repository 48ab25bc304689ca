use aes_siv::siv::Aes128Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;
use crate::error::{CryptoError, Error};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc5297_a1_deterministic_vector() {
    let key = hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
    let ad = hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
    let pt = hex("11223344 55667788 99aabbcc ddee");
    let expected = hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c");
    let mut siv = Aes128Siv::new_from_slice(&key).unwrap();
    assert_eq!(siv.encrypt([&ad], &pt).unwrap(), expected);
    assert_eq!(siv.decrypt([&ad], &expected).unwrap(), pt);
}

#[test]
fn rfc5297_a2_nonce_based_vector() {
    let key = hex("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f");
    let ad1 = hex(
        "00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100",
    );
    let ad2 = hex("10203040 50607080 90a0");
    let nonce = hex("09f91102 9d74e35b d84156c5 635688c0");
    let pt = hex(
        "74686973 20697320 736f6d65 20706c61 696e7465 78742074 6f20656e 63727970
         74207573 696e6720 5349562d 414553",
    );
    let expected = hex(
        "7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17
         dba77ceb 094fa663 b7a3f748 ba8af829 ea64ad54 4a272e9c 485b62a3 fd5c0d",
    );
    let mut siv = Aes128Siv::new_from_slice(&key).unwrap();
    // RFC 5297 §3: the nonce is the last associated-data component, as field.rs passes it.
    let headers = [&ad1[..], &ad2[..], &nonce[..]];
    assert_eq!(siv.encrypt(headers, &pt).unwrap(), expected);
    assert_eq!(siv.decrypt(headers, &expected).unwrap(), pt);
}

fn ring(id: u32, byte: u8) -> Keyring {
    Keyring::new(id, &test_key(byte)).unwrap()
}

const AD: Ad<'static> = Ad {
    table: "memory_messages",
    column: "content",
    tenant: "acme",
    row: &[7, 42],
};

#[test]
fn round_trip_in_both_modes_including_empty_plaintext() {
    let keys = ring(3, 1);
    for pt in [&b""[..], b"x", b"hello world", &[0u8; 5000][..]] {
        let ct = encrypt(&keys, pt, &AD).unwrap();
        assert_eq!(decrypt(&keys, &ct, &AD).unwrap(), pt);
        assert_eq!(key_id_of(&ct).unwrap(), 3);
        let det = encrypt_deterministic(&keys, pt, &AD).unwrap();
        assert_eq!(decrypt(&keys, &det, &AD).unwrap(), pt);
    }
}

#[test]
fn randomized_differs_each_time_deterministic_does_not() {
    let keys = ring(1, 9);
    let a = encrypt(&keys, b"same", &AD).unwrap();
    let b = encrypt(&keys, b"same", &AD).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        encrypt_deterministic(&keys, b"same", &AD).unwrap(),
        encrypt_deterministic(&keys, b"same", &AD).unwrap()
    );
    // Deterministic is still bound to the place: another row gives other bytes.
    let other = Ad {
        row: &[7, 43],
        ..AD
    };
    assert_ne!(
        encrypt_deterministic(&keys, b"same", &AD).unwrap(),
        encrypt_deterministic(&keys, b"same", &other).unwrap()
    );
}

fn is_rejected(r: crate::Result<Vec<u8>>) -> bool {
    matches!(
        r,
        Err(Error::Crypto(
            CryptoError::DecryptionFailed | CryptoError::UnknownKey { .. } | CryptoError::Format(_)
        ))
    )
}

#[test]
fn every_flipped_bit_is_rejected() {
    let keys = ring(1, 5);
    for ct in [
        encrypt(&keys, b"tamper me", &AD).unwrap(),
        encrypt_deterministic(&keys, b"tamper me", &AD).unwrap(),
    ] {
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(is_rejected(decrypt(&keys, &bad, &AD)), "bit {bit} accepted");
        }
        // Truncation and extension too.
        assert!(is_rejected(decrypt(&keys, &ct[..ct.len() - 1], &AD)));
        let mut longer = ct.clone();
        longer.push(0);
        assert!(is_rejected(decrypt(&keys, &longer, &AD)));
    }
}

#[test]
fn a_ciphertext_moved_to_another_place_fails() {
    let keys = ring(1, 5);
    let ct = encrypt(&keys, b"bound", &AD).unwrap();
    let elsewhere = [
        Ad {
            table: "other",
            ..AD
        },
        Ad {
            column: "metadata",
            ..AD
        },
        Ad {
            tenant: "evil",
            ..AD
        },
        Ad {
            row: &[7, 41],
            ..AD
        },
        Ad {
            row: &[8, 42],
            ..AD
        },
        Ad { row: &[7], ..AD },
        // Shifting bytes between fields is a different place too (length-prefixed encoding).
        Ad {
            table: "memory_messagescontent",
            column: "",
            ..AD
        },
        Ad {
            column: "contentacme",
            tenant: "",
            ..AD
        },
    ];
    for ad in elsewhere {
        let err = decrypt(&keys, &ct, &ad).unwrap_err();
        assert!(
            matches!(err, Error::Crypto(CryptoError::DecryptionFailed)),
            "{ad:?}: {err:?}"
        );
    }
}

#[test]
fn wrong_key_and_unknown_key_are_clear_errors() {
    let ct = encrypt(&ring(1, 5), b"secret", &AD).unwrap();
    assert!(matches!(
        decrypt(&ring(1, 6), &ct, &AD),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    assert!(matches!(
        decrypt(&ring(2, 5), &ct, &AD),
        Err(Error::Crypto(CryptoError::UnknownKey { key_id: 1 }))
    ));
    assert!(matches!(
        decrypt(&ring(1, 5), &[], &AD),
        Err(Error::Crypto(CryptoError::Format(_)))
    ));
    assert!(matches!(
        decrypt(&ring(1, 5), &[9; 64], &AD),
        Err(Error::Crypto(CryptoError::Format(_)))
    ));
}

fn b64(byte: u8) -> String {
    STANDARD.encode(test_key(byte))
}

#[test]
fn keyring_text_format() {
    let text = format!("# keys\n1:{}\n2:{}\n", b64(1), b64(2));
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!(ring.key_ids(), vec![1, 2]);
    assert_eq!(ring.primary_id(), 2, "highest id by default");
    let ring = Keyring::parse(&format!("1:{},2:{};primary=1", b64(1), b64(2))).unwrap();
    assert_eq!(ring.primary_id(), 1);
}

#[test]
fn malformed_keyrings_are_rejected_without_echoing_key_material() {
    let short = STANDARD.encode([7u8; 32]);
    let cases = [
        String::new(),
        "# nothing".to_string(),
        format!("x:{}", b64(1)),
        format!("1={}", b64(1)),
        "1:!!!notbase64!!!".to_string(),
        format!("1:{short}"),
        format!("1:{},1:{}", b64(1), b64(2)),
        format!("1:{},primary=9", b64(1)),
    ];
    for text in cases {
        let err = Keyring::parse(&text).unwrap_err();
        assert!(
            matches!(err, Error::Crypto(CryptoError::InvalidKeyring(_))),
            "{text}: {err:?}"
        );
        let msg = err.to_string();
        assert!(!msg.contains(&b64(1)) && !msg.contains(&short), "{msg}");
    }
}

#[test]
fn debug_prints_ids_only() {
    let ring = Keyring::parse(&format!("4:{}", b64(0xab))).unwrap();
    let dbg = format!("{ring:?}");
    assert!(
        dbg.contains("key_ids: [4]") && dbg.contains("primary: 4"),
        "{dbg}"
    );
    assert!(!dbg.contains(&b64(0xab)) && !dbg.contains("171"), "{dbg}");
}

#[test]
fn generated_keys_are_random_and_loadable() {
    let a = Keyring::generate_key().unwrap();
    let b = Keyring::generate_key().unwrap();
    assert_ne!(a, b);
    let ring = Keyring::parse(&format!("1:{}", *a)).unwrap();
    let ct = encrypt(&ring, b"x", &AD).unwrap();
    assert_eq!(decrypt(&ring, &ct, &AD).unwrap(), b"x");
    assert_eq!(Keyring::generate().unwrap().key_ids(), vec![1]);
}

#[test]
fn keyring_sources() {
    let var = "KEEL_TEST_KEYRING_SOURCES";
    // SAFETY (edition 2021: set_var is safe): a variable name only this test uses.
    std::env::set_var(var, format!("5:{}", b64(3)));
    assert_eq!(Keyring::from_env(var).unwrap().primary_id(), 5);
    assert!(matches!(
        Keyring::from_env("KEEL_TEST_KEYRING_UNSET"),
        Err(Error::Crypto(CryptoError::KeyringSource(_)))
    ));
    let dir = crate::store::test_support::TempDir::new("keyfile");
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("6:{}\n", b64(4))).unwrap();
    chmod(&file, 0o600);
    assert_eq!(Keyring::from_file(&file).unwrap().primary_id(), 6);
    assert!(matches!(
        Keyring::from_file(dir.path().join("missing")),
        Err(Error::Crypto(CryptoError::KeyringSource(_)))
    ));
}

#[test]
fn rotation_helpers() {
    let old = ring(1, 1);
    let ct = encrypt(&old, b"old", &AD).unwrap();
    let next = old.with_key(2, &test_key(2)).unwrap();
    assert_eq!(next.primary_id(), 2);
    assert_eq!(
        decrypt(&next, &ct, &AD).unwrap(),
        b"old",
        "old keys stay readable"
    );
    assert_eq!(key_id_of(&encrypt(&next, b"new", &AD).unwrap()).unwrap(), 2);
    assert!(
        next.without_key(2).is_err(),
        "the primary cannot be removed"
    );
    assert!(
        matches!(
            next.without_key(7),
            Err(Error::Crypto(CryptoError::InvalidKeyring(ref m))) if m.contains("key 7 is not in the keyring")
        ),
        "an unknown id is a keyring error, not a decryption error"
    );
    let retired = next.without_key(1).unwrap();
    assert!(matches!(
        decrypt(&retired, &ct, &AD),
        Err(Error::Crypto(CryptoError::UnknownKey { key_id: 1 }))
    ));
    assert!(old.with_key(1, &test_key(3)).is_err(), "duplicate id");
}

#[test]
fn bulk_nonces_are_distinct_and_usable() {
    let n = field::nonces(200).unwrap();
    let distinct: std::collections::HashSet<_> = n.iter().collect();
    assert_eq!(distinct.len(), 200);
    let keys = ring(1, 2);
    let a = field::encrypt_with_nonce(&keys, b"same", &AD, &n[0]).unwrap();
    let b = field::encrypt_with_nonce(&keys, b"same", &AD, &n[1]).unwrap();
    assert_ne!(a, b);
    assert_eq!(decrypt(&keys, &a, &AD).unwrap(), b"same");
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn key_files_readable_or_writable_by_group_or_others_are_refused() {
    let dir = crate::store::test_support::TempDir::new("keymode");
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("1:{}\n", b64(4))).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o777] {
        chmod(&file, mode);
        let err = Keyring::from_file(&file).unwrap_err();
        assert!(
            matches!(err, Error::Crypto(CryptoError::KeyringSource(_))),
            "{mode:o}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&file.display().to_string())
                && msg.contains(&format!("mode {mode:04o}"))
                && msg.contains("chmod 600"),
            "{msg}"
        );
        assert!(!msg.contains(&b64(4)), "{msg}");
    }
    for mode in [0o600, 0o400] {
        chmod(&file, mode);
        assert_eq!(
            Keyring::from_file(&file).unwrap().key_ids(),
            [1],
            "{mode:o}"
        );
    }
    // A missing file is named too.
    let missing = dir.path().join("missing");
    let msg = Keyring::from_file(&missing).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

#[test]
fn constant_and_low_entropy_keys_are_refused_on_every_way_in() {
    let mut fifteen = [0u8; KEY_LEN];
    for (i, b) in fifteen.iter_mut().enumerate() {
        *b = (i % 15) as u8;
    }
    let mut sixteen = [0u8; KEY_LEN];
    for (i, b) in sixteen.iter_mut().enumerate() {
        *b = (i % 16) as u8 * 3;
    }
    let good = ring(1, 1);
    for bad in [[0u8; KEY_LEN], [0xff; KEY_LEN], [7; KEY_LEN], fifteen] {
        let errors = [
            Keyring::new(1, &bad).unwrap_err(),
            Keyring::parse(&format!("1:{}", STANDARD.encode(bad))).unwrap_err(),
            good.with_key(2, &bad).unwrap_err(),
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(
                matches!(err, Error::Crypto(CryptoError::InvalidKeyring(_)))
                    && msg.contains("not random")
                    && msg.contains("distinct byte values"),
                "{msg}"
            );
            assert!(!msg.contains(&STANDARD.encode(bad)), "{msg}");
        }
    }
    assert!(Keyring::new(1, &sixteen).is_ok(), "16 distinct values pass");
    // Real keys always pass.
    for _ in 0..200 {
        Keyring::parse(&format!("1:{}", *Keyring::generate_key().unwrap())).unwrap();
    }
}

#[test]
fn a_comment_may_contain_separators() {
    let text = format!(
        "# rotated 2026, by ops; see runbook\n1:{}  # old, keep\n",
        b64(1)
    );
    assert_eq!(Keyring::parse(&text).unwrap().key_ids(), [1]);
}

#[test]
fn bound_ciphertexts_authenticate_their_context() {
    let keys = ring(2, 1);
    let ct = encrypt_bound(&keys, b"hello", &AD, b"role=user").unwrap();
    assert_eq!(format_of(&ct).unwrap(), field::FORMAT_BOUND);
    assert_eq!(key_id_of(&ct).unwrap(), 2);
    assert_eq!(
        decrypt_bound(&keys, &ct, &AD, b"role=user").unwrap(),
        b"hello"
    );
    for ctx in [&b"role=system"[..], b"", b"role=user\0"] {
        assert!(matches!(
            decrypt_bound(&keys, &ct, &AD, ctx),
            Err(Error::Crypto(CryptoError::DecryptionFailed))
        ));
    }
    let moved = Ad {
        row: &[7, 43],
        ..AD
    };
    assert!(decrypt_bound(&keys, &ct, &moved, b"role=user").is_err());
    // Neither decrypt path accepts the other's format: no check can be skipped by accident.
    assert!(matches!(
        decrypt(&keys, &ct, &AD),
        Err(Error::Crypto(CryptoError::Format(_)))
    ));
    let plain = encrypt(&keys, b"hello", &AD).unwrap();
    assert!(matches!(
        decrypt_bound(&keys, &plain, &AD, b""),
        Err(Error::Crypto(CryptoError::Format(_)))
    ));
    for i in 0..ct.len() * 8 {
        let mut bad = ct.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            decrypt_bound(&keys, &bad, &AD, b"role=user").is_err(),
            "bit {i}"
        );
    }
}

#[test]
fn tags_authenticate_place_and_context() {
    let keys = ring(3, 1);
    let t = tag(&keys, &AD, b"count=3").unwrap();
    assert_eq!(t.len(), 21);
    assert_eq!(format_of(&t).unwrap(), field::FORMAT_TAG);
    assert_eq!(t, tag(&keys, &AD, b"count=3").unwrap(), "deterministic");
    verify_tag(&keys, &t, &AD, b"count=3").unwrap();
    assert!(matches!(
        verify_tag(&keys, &t, &AD, b"count=2"),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    assert!(
        verify_tag(&ring(3, 2), &t, &AD, b"count=3").is_err(),
        "other key"
    );
    let other = Ad {
        tenant: "globex",
        ..AD
    };
    assert!(verify_tag(&keys, &t, &other, b"count=3").is_err());
    for i in 0..t.len() * 8 {
        let mut bad = t.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(verify_tag(&keys, &bad, &AD, b"count=3").is_err(), "bit {i}");
    }
}

/// Subkey derivation is pinned: HKDF-SHA256 (RFC 5869, no salt, label as info) for version 2,
/// HMAC-SHA256(key, label) for version 1. The expected MACs were computed independently
/// (Python's `hmac`/`hashlib`) as HMAC-SHA256(subkey, "msg").
#[test]
fn derivation_versions_are_hkdf_and_the_legacy_hmac() {
    use hmac::Mac as _;
    let keys = Keyring::new(1, &test_key(1)).unwrap();
    let mac = |kdf| {
        let mut m = keys
            .derive_with(kdf, 1, b"keel/api-key-hash/v1")
            .unwrap()
            .hmac();
        m.update(b"msg");
        m.finalize().into_bytes().to_vec()
    };
    assert_eq!(
        mac(Kdf::Hkdf),
        hex("e5525907f464da9d593e72e9a2ea1ee0ad47a46d32eb732891587a92e6e5b46d")
    );
    assert_eq!(
        mac(Kdf::LegacyHmac),
        hex("a0d6e3a1cb2104b648ec872507d221059b3915c054d8f18471cda83d99924785")
    );
    // `derive` is the current version; an unknown key id and version are errors.
    let mut current = keys.derive(1, b"keel/api-key-hash/v1").unwrap().hmac();
    current.update(b"msg");
    assert_eq!(current.finalize().into_bytes().to_vec(), mac(Kdf::CURRENT));
    assert!(matches!(
        keys.derive(9, b"x"),
        Err(Error::Crypto(CryptoError::UnknownKey { key_id: 9 }))
    ));
    assert!(Kdf::from_stored(3).is_err());
    assert_eq!(Kdf::from_stored(Kdf::Hkdf.stored()).unwrap(), Kdf::Hkdf);
    assert_eq!(
        format!("{:?}", keys.derive(1, b"x").unwrap()),
        "DerivedKey(..)"
    );
}
