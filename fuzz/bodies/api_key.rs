// API-key parsing on arbitrary text: never panics; an accepted key has the documented shape,
// its display prefix is a prefix of the key that never reaches the checksum, and an error
// never echoes the input. Generated keys always parse.

use keel::auth::{generate, parse};

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
            if text.len() >= 8 {
                assert!(!e.to_string().contains(text), "an error echoed the key");
            }
        }
    }
    // Any valid environment label yields keys that parse back to it.
    if let Ok(key) = generate(text) {
        assert_eq!(parse(&key).unwrap().env, text);
    }
}
