// The sentence segmenter on arbitrary text and options: never panics, loses nothing, bounds
// every piece, and gives the same pieces whatever the tokenisation (the first bytes pick the
// options and the token length).

use keel::stream::{SegmenterOptions, SentenceSegmenter};
use unicode_segmentation::UnicodeSegmentation;

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let [a, b, step, rest @ ..] = data else {
        return;
    };
    let max = 8 + usize::from(*a) % 120;
    let opts = SegmenterOptions {
        min_chars: usize::from(*b) % 40 % (max + 1),
        max_chars: max,
    };
    let text = String::from_utf8_lossy(rest);
    let whole = SentenceSegmenter::split(&text, opts).unwrap();
    assert_eq!(whole.concat(), text);

    // The same text as bytes, in tokens of `step` bytes (splitting characters).
    let mut seg = SentenceSegmenter::new(opts).unwrap();
    let mut pieces = Vec::new();
    for token in text.as_bytes().chunks(usize::from(*step % 13) + 1) {
        pieces.extend(seg.push_bytes(token).unwrap());
    }
    pieces.extend(seg.flush_bytes().unwrap());
    assert_eq!(pieces, whole);

    for piece in &whole {
        let spoken = piece.trim_end();
        assert!(
            spoken.chars().count() <= max || spoken.graphemes(true).count() == 1,
            "{piece:?} exceeds {max}"
        );
    }
}
