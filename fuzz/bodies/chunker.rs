// The chunker on arbitrary text and sizes: never panics, every chunk is exactly the source at
// its offsets (bytes and characters), chunks are in order, within the size bound, and together
// cover the text (only whitespace may fall between chunks).

use keel::rag::Chunker;

/// One fuzz input (also replayed from the committed corpus by the test suite).
pub fn run(data: &[u8]) {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let max_len = 1 + usize::from(*a) % 200;
    let overlap = usize::from(*b) % (max_len + 1);
    let Ok(chunker) = Chunker::new(max_len, overlap) else {
        assert!(overlap >= max_len, "valid sizes refused: {max_len}/{overlap}");
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let chunks = chunker.chunks(&text);
    let mut covered = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(&text[c.span.byte_start..c.span.byte_end], c.text);
        assert_eq!(text[..c.span.byte_start].chars().count(), c.span.char_start);
        assert_eq!(c.span.char_end - c.span.char_start, c.text.chars().count());
        assert!(c.text.chars().count() <= max_len, "chunk over {max_len} chars");
        let gap = &text[covered.min(c.span.byte_start)..c.span.byte_start];
        assert!(gap.chars().all(char::is_whitespace), "text lost before chunk {i}");
        covered = covered.max(c.span.byte_end);
    }
    let trailing_space = text[covered..].chars().all(char::is_whitespace);
    assert!(trailing_space, "text after the last chunk was lost");
}
