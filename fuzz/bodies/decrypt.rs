// Field decryption on arbitrary ciphertexts and associated data: never panics, and anything it
// accepts is a ciphertext this keyring sealed for exactly that place (so a random input never
// decrypts; a sealed value re-checked here always round-trips).

use std::sync::OnceLock;

use keel::crypto::field::{decrypt, decrypt_bound, encrypt, key_id_of, Ad};
use keel::Keyring;

fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| {
        let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        Keyring::new(7, &key).expect("a high-entropy fixed key")
    })
}

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let [row, split, rest @ ..] = data else {
        return;
    };
    let cut = usize::from(*split).min(rest.len());
    let (tenant, ct) = rest.split_at(cut);
    let tenant = String::from_utf8_lossy(tenant);
    let ad = Ad { table: "messages", column: "content", tenant: &tenant, row: &[i64::from(*row)] };
    let _ = key_id_of(ct);
    // Arbitrary bytes are never accepted as a ciphertext of this keyring.
    assert!(decrypt(keyring(), ct, &ad).is_err());
    assert!(decrypt_bound(keyring(), ct, &ad, b"ctx").is_err());
    // A value sealed here opens here, and only at its own place.
    let sealed = encrypt(keyring(), ct, &ad).unwrap();
    assert_eq!(decrypt(keyring(), &sealed, &ad).unwrap(), ct);
    let elsewhere = Ad { row: &[i64::from(*row) + 1], ..ad };
    assert!(decrypt(keyring(), &sealed, &elsewhere).is_err());
}
