// The SSE parser on arbitrary bytes: never panics, holds at most its limit, and gives the
// same events whatever the split of the stream into reads (the first byte picks the splits).

use keel::stream::SseParser;

fn feed(bytes: &[u8], step: usize) -> (Vec<keel::stream::SseEvent>, usize) {
    // A small limit so that the overflow path is exercised too.
    let mut p = SseParser::with_max_event_bytes(64).unwrap();
    let mut events = Vec::new();
    let mut errors = 0;
    for chunk in bytes.chunks(step.max(1)) {
        match p.feed(chunk) {
            Ok(evs) => events.extend(evs),
            Err(_) => errors += 1,
        }
    }
    if let Ok(evs) = p.feed(b"") {
        events.extend(evs);
    }
    (events, errors)
}

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let (whole, whole_errors) = feed(bytes, bytes.len());
    let (split, split_errors) = feed(bytes, usize::from(step % 17) + 1);
    assert_eq!(whole, split);
    // An overflow is reported at least once however the stream is split.
    assert_eq!(whole_errors > 0, split_errors > 0);
    for e in &whole {
        assert!(e.data.len() <= 64);
    }
}
