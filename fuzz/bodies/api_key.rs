// API-key parsing on arbitrary text: never panics; an accepted key has the documented shape,
// its display prefix is a prefix of the key that never reaches the checksum, and an error
// never echoes the input. Generated keys always parse.

use keel::auth::{generate, parse};
use keel::{AuthError, Error};

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(parsed) => {
            assert!(text.starts_with(&format!("keel_{}_", parsed.env)));
            assert!(text.starts_with(&parsed.display) && parsed.display.len() < text.len());
        }
        Err(e) => {
            // A refusal is one of two fixed messages, so it can never echo any part of the
            // key. (Checking that the message does not contain the text fails falsely on
            // inputs such as "ed API ke", a substring of the fixed message: fuzz/corpus keeps it.)
            let fixed = [AuthError::Malformed, AuthError::BadChecksum].map(|k| Error::from(k).to_string());
            assert!(fixed.contains(&e.to_string()), "an input-dependent refusal: {e}");
        }
    }
    // Any valid environment label yields keys that parse back to it.
    if let Ok(key) = generate(text) {
        assert_eq!(parse(&key).unwrap().env, text);
    }
}
