//! Splitting text into chunks of bounded length on natural boundaries, with overlap.
//!
//! A chunk ends at the largest natural boundary that keeps it within the limit: the last
//! paragraph break that fits, else the last line break, else the last sentence end (a terminator
//! such as `.` followed by whitespace), else word boundary (UAX #29), else grapheme boundary
//! (UAX #29). Length is measured by a pluggable function ([`Length`]): characters by default, or
//! any monotone measure such as a tokenizer's count.
//!
//! Invariants, checked by the property tests in `tests.rs`:
//! - every chunk is `text[span.byte_start..span.byte_end]` exactly, and its char offsets count
//!   the chars before those byte offsets. Offsets come from positions, never from searching the
//!   text, so they stay exact on repetitive text;
//! - no chunk is longer than `max_len`, unless it is a single grapheme that alone is longer;
//! - chunks start and end strictly later than the previous one; chunks carry no leading or
//!   trailing whitespace; together they cover every non-whitespace character of the text;
//! - consecutive chunks share at most `overlap` of length, starting at a sentence or word
//!   boundary (an overlap that would make a chunk end no later than its predecessor is dropped).

use std::fmt;
use std::sync::Arc;

use unicode_segmentation::UnicodeSegmentation;

use super::RagError;

/// A length measure over text. It must be monotone: extending a text never makes it shorter.
pub type LengthFn = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// How a chunk's length is measured.
#[derive(Clone, Default)]
pub enum Length {
    /// Unicode scalar values (Rust `char`s, Python `str` length).
    #[default]
    Chars,
    /// A caller-supplied monotone measure, e.g. a tokenizer's token count.
    Custom(LengthFn),
}

impl fmt::Debug for Length {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chars => f.write_str("Chars"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Where a chunk lies in its source text: `text[byte_start..byte_end]` is the chunk, and
/// `char_start..char_end` are the same bounds counted in chars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the first byte.
    pub byte_start: usize,
    /// Byte offset one past the last byte.
    pub byte_end: usize,
    /// Char offset of the first char.
    pub char_start: usize,
    /// Char offset one past the last char.
    pub char_end: usize,
}

impl Span {
    /// The span of a whole text.
    pub fn whole(text: &str) -> Self {
        Self {
            byte_start: 0,
            byte_end: text.len(),
            char_start: 0,
            char_end: text.chars().count(),
        }
    }
}

/// One chunk, borrowing its text from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Position of this chunk in the sequence, from 0.
    pub index: usize,
    /// The chunk text, equal to `source[span.byte_start..span.byte_end]`.
    pub text: &'a str,
    /// Its offsets in the source.
    pub span: Span,
}

/// Splits texts into chunks; cheap to clone and safe to share between threads.
#[derive(Debug, Clone)]
pub struct Chunker {
    max_len: usize,
    overlap: usize,
    length: Length,
}

/// A position in the text: byte offset and char offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    byte: usize,
    chr: usize,
}

/// Boundaries of one kind (paragraph, line, sentence, word), ascending, excluding 0, ending with
/// the text's end.
struct Level {
    pos: Vec<Pos>,
}

impl Level {
    fn from_bytes(text: &str, starts: impl Iterator<Item = usize>) -> Self {
        let mut pos = Vec::new();
        let mut prev = Pos { byte: 0, chr: 0 };
        for b in starts.chain(std::iter::once(text.len())) {
            if b <= prev.byte {
                continue;
            }
            let chr = prev.chr + text[prev.byte..b].chars().count();
            prev = Pos { byte: b, chr };
            pos.push(prev);
        }
        Self { pos }
    }

    /// Index of the first boundary strictly after byte `b`.
    fn after(&self, b: usize) -> usize {
        self.pos.partition_point(|p| p.byte <= b)
    }
}

fn paragraph_breaks(text: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if bytes[i] == b'\n' {
                let mut j = i + 1;
                let mut newlines = 1;
                while j < bytes.len() && matches!(bytes[j], b'\n' | b'\r' | b' ' | b'\t') {
                    newlines += usize::from(bytes[j] == b'\n');
                    j += 1;
                }
                i = j;
                if newlines >= 2 {
                    return Some(j);
                }
            } else {
                i += 1;
            }
        }
        None
    })
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '。' | '！' | '？' | '｡'
    )
}

fn is_wide_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        ')' | ']' | '}' | '"' | '\'' | '»' | '”' | '’' | '」' | '』' | '）' | '］'
    )
}

/// Where sentences start: after a run of terminators (`.`, `!`, `?`, `…`, `。`, ...) and closing
/// quotes or brackets, followed by whitespace (skipped) or, after a full-width terminator, by
/// anything. Simpler than UAX #29 sentence segmentation and many times faster; an abbreviation
/// such as "e.g. " counts as a sentence end, which only makes a chunk end a little early.
fn sentence_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut it = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some((_, c)) = it.next() {
            if !is_terminator(c) {
                continue;
            }
            let mut wide = is_wide_terminator(c);
            while let Some(&(_, n)) = it.peek() {
                if is_terminator(n) || is_closer(n) {
                    wide |= is_wide_terminator(n);
                    it.next();
                } else {
                    break;
                }
            }
            match it.peek() {
                Some(&(_, n)) if n.is_whitespace() => {
                    while it.peek().is_some_and(|&(_, n)| n.is_whitespace()) {
                        it.next();
                    }
                    return Some(it.peek().map_or(text.len(), |&(i, _)| i));
                }
                Some(&(i, _)) if wide => return Some(i),
                _ => {}
            }
        }
        None
    })
}

impl Chunker {
    /// A chunker measuring length in chars: chunks of at most `max_len` chars sharing at most
    /// `overlap` chars with their predecessor.
    pub fn new(max_len: usize, overlap: usize) -> Result<Self, RagError> {
        Self::with_length(max_len, overlap, Length::Chars)
    }

    /// A chunker with a custom length measure.
    pub fn with_length(max_len: usize, overlap: usize, length: Length) -> Result<Self, RagError> {
        if max_len == 0 {
            return Err(RagError::InvalidConfig(
                "chunk max_len must be at least 1".into(),
            ));
        }
        if overlap >= max_len {
            return Err(RagError::InvalidConfig(format!(
                "chunk overlap ({overlap}) must be smaller than max_len ({max_len})"
            )));
        }
        Ok(Self {
            max_len,
            overlap,
            length,
        })
    }

    /// The largest chunk length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The largest overlap between consecutive chunks.
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// The length of `text` under this chunker's measure.
    pub fn measure(&self, text: &str) -> usize {
        match &self.length {
            Length::Chars => text.chars().count(),
            Length::Custom(f) => f(text),
        }
    }

    /// Splits `text` into chunks (none for an empty or all-whitespace text).
    pub fn chunks<'a>(&self, text: &'a str) -> Vec<Chunk<'a>> {
        let _span = tracing::debug_span!("rag.chunk", rag.text.bytes = text.len()).entered();
        let mut out = Vec::new();
        let mut run = Run::new(self, text);
        let mut start = run.skip_ws(Pos { byte: 0, chr: 0 });
        // The previous chunk's end before and after trimming its trailing whitespace.
        let mut last: Option<(Pos, Pos)> = None;
        while start.byte < text.len() {
            let mut end = run.find_end(start);
            let mut stop = run.trim_end(start, end);
            if let Some((last_end, last_stop)) = last {
                if stop.byte <= last_stop.byte {
                    // The overlap left no room to move forward: start after the previous chunk.
                    start = run.skip_ws(last_end);
                    if start.byte >= text.len() {
                        break;
                    }
                    end = run.find_end(start);
                    stop = run.trim_end(start, end);
                }
            }
            out.push(Chunk {
                index: out.len(),
                text: &text[start.byte..stop.byte],
                span: Span {
                    byte_start: start.byte,
                    byte_end: stop.byte,
                    char_start: start.chr,
                    char_end: stop.chr,
                },
            });
            last = Some((end, stop));
            let next = if self.overlap > 0 {
                run.overlap_start(start, stop).unwrap_or(end)
            } else {
                end
            };
            start = run.skip_ws(next);
        }
        out
    }
}

/// The state of one `chunks` call: the text and its boundaries, computed lazily per level.
struct Run<'c, 'a> {
    chunker: &'c Chunker,
    text: &'a str,
    levels: [Option<Level>; 4],
}

const PARAGRAPH: usize = 0;
const LINE: usize = 1;
const SENTENCE: usize = 2;
const WORD: usize = 3;

impl<'c, 'a> Run<'c, 'a> {
    fn new(chunker: &'c Chunker, text: &'a str) -> Self {
        Self {
            chunker,
            text,
            levels: [None, None, None, None],
        }
    }

    fn level(&mut self, which: usize) -> &Level {
        let text = self.text;
        self.levels[which].get_or_insert_with(|| match which {
            PARAGRAPH => Level::from_bytes(text, paragraph_breaks(text)),
            LINE => Level::from_bytes(text, text.match_indices('\n').map(|(i, _)| i + 1)),
            SENTENCE => Level::from_bytes(text, sentence_starts(text)),
            _ => Level::from_bytes(text, text.split_word_bound_indices().map(|(i, _)| i)),
        })
    }

    fn len_between(&self, a: Pos, b: Pos) -> usize {
        match &self.chunker.length {
            Length::Chars => b.chr - a.chr,
            Length::Custom(f) => f(&self.text[a.byte..b.byte]),
        }
    }

    /// `end` moved back over trailing whitespace, not before `start`.
    fn trim_end(&self, start: Pos, end: Pos) -> Pos {
        let raw = &self.text[start.byte..end.byte];
        let trimmed = raw.trim_end();
        Pos {
            byte: start.byte + trimmed.len(),
            chr: end.chr - raw[trimmed.len()..].chars().count(),
        }
    }

    fn skip_ws(&self, mut p: Pos) -> Pos {
        for c in self.text[p.byte..].chars() {
            if !c.is_whitespace() {
                break;
            }
            p.byte += c.len_utf8();
            p.chr += 1;
        }
        p
    }

    /// The end of the chunk starting at `start`: the last boundary of the coarsest level at
    /// which at least one boundary fits, else as many graphemes as fit (at least one).
    fn find_end(&mut self, start: Pos) -> Pos {
        let max = self.chunker.max_len;
        let chars = matches!(self.chunker.length, Length::Chars);
        // Measuring chars, no chunk reaches past `limit`: sentence and word boundaries (the
        // costly segmentations) are then computed in that window only.
        let limit = if chars {
            let rest = &self.text[start.byte..];
            start.byte + rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i)
        } else {
            self.text.len()
        };
        for which in [PARAGRAPH, LINE, SENTENCE, WORD] {
            if chars && which >= SENTENCE {
                if let Some(&end) = self.window(which, start, limit).last() {
                    return end;
                }
                continue;
            }
            // Borrow the level's positions out so the length function can borrow `self`.
            let level = std::mem::take(&mut self.levels[which]);
            let level = match level {
                Some(l) => l,
                None => {
                    self.level(which);
                    self.levels[which].take().expect("just computed")
                }
            };
            let found = self.last_fitting(&level.pos, level.after(start.byte), start, max);
            self.levels[which] = Some(level);
            if let Some(end) = found {
                return end;
            }
        }
        if chars {
            // No word fits, so the word at `start` runs past `limit`: cut it between graphemes.
            // Whole graphemes up to `limit`; at least one, even if it alone is longer.
            let mut end = start;
            for g in self.text[start.byte..].graphemes(true) {
                if end.byte + g.len() > limit && end.byte > start.byte {
                    break;
                }
                end.byte += g.len();
                end.chr += g.chars().count();
            }
            return end;
        }
        self.grapheme_end(start)
    }

    /// Sentence or word boundaries `p` with `from < p <= to_byte`, segmenting only the text from
    /// `from` to a little past `to_byte` (the lookahead gives the segmenter the context that
    /// follows; the window's own end is a boundary only when it is the text's end).
    fn window(&self, which: usize, from: Pos, to_byte: usize) -> Vec<Pos> {
        const LOOKAHEAD: usize = 64;
        let text = self.text;
        let mut end = (to_byte + LOOKAHEAD).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let piece = &text[from.byte..end];
        let starts: Vec<usize> = if which == SENTENCE {
            sentence_starts(piece).collect()
        } else {
            piece.split_word_bound_indices().map(|(i, _)| i).collect()
        };
        let mut out = Vec::new();
        let mut prev = from;
        let tail = (end == text.len()).then_some(piece.len());
        for b in starts.into_iter().chain(tail).map(|i| from.byte + i) {
            if b <= prev.byte {
                continue;
            }
            if b > to_byte {
                break;
            }
            let chr = prev.chr + text[prev.byte..b].chars().count();
            prev = Pos { byte: b, chr };
            out.push(prev);
        }
        out
    }

    /// The last position in `pos[first..]` whose distance from `start` is at most `max`, by
    /// galloping then bisecting (the length is monotone in the end position).
    fn last_fitting(&self, pos: &[Pos], first: usize, start: Pos, max: usize) -> Option<Pos> {
        if first >= pos.len() || self.len_between(start, pos[first]) > max {
            return None;
        }
        let mut lo = first; // fits
        let mut step = 1;
        let mut hi = loop {
            let probe = lo + step;
            if probe >= pos.len() {
                break pos.len();
            }
            if self.len_between(start, pos[probe]) <= max {
                lo = probe;
                step *= 2;
            } else {
                break probe;
            }
        };
        // Invariant: pos[lo] fits, pos[hi] (if any) does not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.len_between(start, pos[mid]) <= max {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(pos[lo])
    }

    /// No word fits: as many graphemes of the word at `start` as fit, at least one.
    fn grapheme_end(&mut self, start: Pos) -> Pos {
        let word_end = {
            let words = self.level(WORD);
            words.pos[words.after(start.byte)]
        };
        let piece = &self.text[start.byte..word_end.byte];
        let mut ends = Vec::new();
        let mut chr = start.chr;
        for (i, g) in piece.grapheme_indices(true) {
            chr += g.chars().count();
            ends.push(Pos {
                byte: start.byte + i + g.len(),
                chr,
            });
        }
        self.last_fitting(&ends, 0, start, self.chunker.max_len)
            .unwrap_or(ends[0])
    }

    /// Where the chunk after `[start, stop)` begins: the earliest sentence (else word) boundary
    /// strictly inside the chunk from which the rest of the chunk fits in `overlap`.
    fn overlap_start(&mut self, start: Pos, stop: Pos) -> Option<Pos> {
        let overlap = self.chunker.overlap;
        if matches!(self.chunker.length, Length::Chars) {
            // Only the last `overlap` chars can start the overlap: segment from one char before
            // them (so a boundary right at their start is seen), but never before `start`.
            let head = &self.text[start.byte..stop.byte];
            let from = match head.char_indices().rev().nth(overlap) {
                Some((i, _)) if stop.chr - start.chr > overlap => Pos {
                    byte: start.byte + i,
                    chr: stop.chr - overlap - 1,
                },
                _ => start,
            };
            for which in [SENTENCE, WORD] {
                let found = self
                    .window(which, from, stop.byte)
                    .into_iter()
                    .find(|p| p.byte < stop.byte && stop.chr - p.chr <= overlap);
                if found.is_some() {
                    return found;
                }
            }
            return None;
        }
        for which in [SENTENCE, WORD] {
            self.level(which);
            let level = self.levels[which].take().expect("just computed");
            let first = level.after(start.byte);
            let last = level.pos.partition_point(|p| p.byte < stop.byte);
            let found = if first < last {
                // The overlap shrinks as the boundary moves right: find the first that fits.
                let (mut lo, mut hi) = (first, last);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.len_between(level.pos[mid], stop) <= overlap {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                (lo < last).then(|| level.pos[lo])
            } else {
                None
            };
            self.levels[which] = Some(level);
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Splits `text` into chunks of at most `max_len` chars with at most `overlap` chars of overlap.
pub fn chunk_text(text: &str, max_len: usize, overlap: usize) -> Result<Vec<Chunk<'_>>, RagError> {
    Ok(Chunker::new(max_len, overlap)?.chunks(text))
}
