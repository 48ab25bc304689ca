//! The incremental sentence segmenter: LLM tokens in, sentences for TTS out, each as soon as
//! it is certain.
//!
//! # Output contract
//! - **Nothing is lost or changed**: the concatenation of everything `push` and `flush` return
//!   equals the concatenation of the tokens pushed, byte for byte. Whitespace after a sentence
//!   belongs to that sentence (`"Hi. How are you?"` gives `"Hi. "` and `"How are you?"`), so a
//!   piece ends with the whitespace that followed it and starts with a non-space character;
//!   only the first piece can start with whitespace (when the stream does). Strip pieces before
//!   speaking them if your TTS minds.
//! - **Chunking does not matter**: the pieces depend only on the text, never on how it was cut
//!   into tokens (checked by the property tests with random chunkings).
//! - **As soon as certain**: a sentence is returned by the `push` that delivers the first
//!   character after its end that decides it (for `"Hi. "` that is the next non-space
//!   character, which tells "Dr. Smith" from "Hi. Then"), never later. At the end of the stream,
//!   `flush` returns the rest.
//! - **Lengths** are counted in chars (Unicode scalar values, Python `str` length) of the piece
//!   without its trailing whitespace. A piece is never longer than `max_chars` (an overlong
//!   sentence is split at its last clause mark `, ; : — –` in the second half of the window,
//!   else at its last whitespace, else at its last grapheme boundary), unless it is a single
//!   grapheme that is longer. A piece shorter than `min_chars` is held and joined to the
//!   next, unless the two together would exceed `max_chars`; `flush` returns a short last piece.
//!
//! # Where a sentence ends (the rules)
//! 1. After a run of terminators (`. ! ? …`, also `‼ ⁉ ؟ । ॥`) and any closing quotes, brackets,
//!    Markdown emphasis or emoji glued to it, when whitespace follows; the whitespace (and any
//!    emoji after it, `"Done! 🎉 Next"`) belong to the sentence. Not before a lowercase word
//!    (`"approx. five"`, `"Yahoo! is"`, `"Wait... maybe"`); opening quotes and brackets are
//!    skipped to find the next word.
//! 2. A single `.` after an abbreviation does not end a sentence: titles and prefixes (`Dr.`,
//!    `Mr.`, `e.g.`, `i.e.`, `vs.`, `approx.`, [`super::chars::NEVER_FINAL`]); `No.`, `Fig.`,
//!    `p.`, month names... before a number ([`super::chars::BEFORE_NUMBER`]); a list number or
//!    letter at the start of a line or after a colon (`"1. First"`, `"Steps: 1. Open"`); an
//!    initialism (`U.S.`, `a.m.`, `Ph.D.`) or a single letter (`J. K. Rowling`) unless a common
//!    sentence starter follows (`"in the U.S. The"` ends, `"the U.S. Army"` does not;
//!    [`super::chars::STARTERS`]).
//! 3. A terminator with no whitespace after it ends nothing: decimals (`3.14`), versions
//!    (`v1.2.3`), URLs and e-mail addresses (`example.com/a?b=c`).
//! 4. Full-width terminators (`。！？`) end a sentence right after them and their closing
//!    brackets (`」』）`), whitespace or not.
//! 5. A line break always ends a sentence (list items, headings, paragraphs), once the piece has
//!    some non-space text.

use unicode_segmentation::UnicodeSegmentation;

use super::chars::{
    is_cjk_clause_mark, is_cjk_terminator, is_clause_mark, is_closer, is_emoji_part,
    is_emoji_start, is_line_break, is_opener, is_space, is_terminator, is_word_char, BEFORE_NUMBER,
    MAX_STARTER_LEN, NEVER_FINAL, STARTERS,
};
use crate::error::{Result, StreamError};

/// Default `min_chars`: 0, no merging (the first sentence is spoken as early as possible).
pub const DEFAULT_MIN_CHARS: usize = 0;
/// Default `max_chars`: 300 chars, about 20 seconds of speech, under the input limits of common
/// TTS engines.
pub const DEFAULT_MAX_CHARS: usize = 300;
/// The smallest accepted `max_chars`.
pub const SMALLEST_MAX_CHARS: usize = 8;

/// Length bounds of the pieces a [`SentenceSegmenter`] returns, in chars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterOptions {
    /// Pieces shorter than this are held and joined to the next one (0: never).
    pub min_chars: usize,
    /// Longer sentences are split at a clause mark, a space or a grapheme boundary.
    pub max_chars: usize,
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_CHARS,
            max_chars: DEFAULT_MAX_CHARS,
        }
    }
}

impl SegmenterOptions {
    /// Options from optional values (`None`: the default), validated.
    pub fn new(min_chars: Option<usize>, max_chars: Option<usize>) -> Result<Self> {
        let opts = Self {
            min_chars: min_chars.unwrap_or(DEFAULT_MIN_CHARS),
            max_chars: max_chars.unwrap_or(DEFAULT_MAX_CHARS),
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Checks `SMALLEST_MAX_CHARS <= max_chars` and `min_chars <= max_chars`.
    pub fn validate(&self) -> Result<()> {
        if self.max_chars < SMALLEST_MAX_CHARS {
            return Err(StreamError::InvalidOptions(format!(
                "max_chars = {} is below the smallest accepted value {SMALLEST_MAX_CHARS}",
                self.max_chars
            ))
            .into());
        }
        if self.min_chars > self.max_chars {
            return Err(StreamError::InvalidOptions(format!(
                "min_chars = {} exceeds max_chars = {}",
                self.min_chars, self.max_chars
            ))
            .into());
        }
        Ok(())
    }
}

/// Splits a stream of text into sentences for speech; see the module docs for the contract.
///
/// ```
/// use keel::stream::SentenceSegmenter;
/// let mut seg = SentenceSegmenter::default();
/// let mut out = Vec::new();
/// for token in ["Dr. Smith ", "arrived at ", "5 p.m. ", "He ", "said hi", "."] {
///     out.extend(seg.push(token));
/// }
/// out.extend(seg.flush());
/// assert_eq!(out, ["Dr. Smith arrived at 5 p.m. ", "He said hi."]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SentenceSegmenter {
    opts: SegmenterOptions,
    /// Text received and not yet cut.
    pending: String,
    /// The start of a character split between two `push_bytes` calls (at most 3 bytes).
    partial: Vec<u8>,
    /// How far `pending` has been scanned without needing more text.
    scan: Scan,
    /// Cut pieces shorter than `min_chars`, waiting to be joined to the next.
    held: String,
}

impl SentenceSegmenter {
    /// A segmenter with these options (validated).
    pub fn new(opts: SegmenterOptions) -> Result<Self> {
        opts.validate()?;
        Ok(Self {
            opts,
            ..Self::default()
        })
    }

    /// The options in use.
    pub fn options(&self) -> SegmenterOptions {
        self.opts
    }

    /// Adds the next token; returns the pieces that became certain (often none).
    pub fn push(&mut self, token: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.push_into(token, &mut out);
        out
    }

    /// As [`Self::push`], appending to `out`.
    pub fn push_into(&mut self, token: &str, out: &mut Vec<String>) {
        self.pending.push_str(token);
        self.drain(false, out);
    }

    /// Adds the next token given as UTF-8 bytes, which may end inside a character (its other
    /// bytes then start the next token, as byte-level LLM tokenizers emit them). Invalid UTF-8
    /// is an error that changes nothing.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Vec<String>> {
        let joined;
        let input = if self.partial.is_empty() {
            bytes
        } else {
            joined = [self.partial.as_slice(), bytes].concat();
            &joined
        };
        let (text, rest) = match std::str::from_utf8(input) {
            Ok(text) => (text, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (head, tail) = input.split_at(e.valid_up_to());
                // The first `valid_up_to` bytes are UTF-8, so this never falls back.
                (std::str::from_utf8(head).unwrap_or_default(), tail)
            }
            Err(e) => {
                let offset = e.valid_up_to().saturating_sub(self.partial.len());
                return Err(StreamError::InvalidUtf8(format!(
                    "invalid byte at offset {offset} of the token"
                ))
                .into());
            }
        };
        let out = self.push(text);
        self.partial = rest.to_vec();
        Ok(out)
    }

    /// As [`Self::flush`] for a stream fed with [`Self::push_bytes`]: an error if the stream
    /// ended inside a character (those bytes are dropped; the text before them stays pending,
    /// and another `flush` returns it).
    pub fn flush_bytes(&mut self) -> Result<Vec<String>> {
        if !self.partial.is_empty() {
            let n = std::mem::take(&mut self.partial).len();
            return Err(StreamError::InvalidUtf8(format!(
                "the stream ended inside a character ({n} bytes of it)"
            ))
            .into());
        }
        Ok(self.flush())
    }

    /// Ends the stream: returns everything not returned yet. The segmenter is then empty and
    /// can start a new stream.
    pub fn flush(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.flush_into(&mut out);
        out
    }

    /// As [`Self::flush`], appending to `out`.
    pub fn flush_into(&mut self, out: &mut Vec<String>) {
        self.drain(true, out);
        if !self.held.is_empty() {
            out.push(std::mem::take(&mut self.held));
        }
    }

    /// The text received but not returned yet (held short pieces first).
    pub fn pending_len(&self) -> usize {
        self.held.len() + self.pending.len()
    }

    /// Segments a whole text at once (`push` then `flush`).
    pub fn split(text: &str, opts: SegmenterOptions) -> Result<Vec<String>> {
        let mut seg = Self::new(opts)?;
        let mut out = seg.push(text);
        seg.flush_into(&mut out);
        Ok(out)
    }

    fn drain(&mut self, eof: bool, out: &mut Vec<String>) {
        while !self.pending.is_empty() {
            match next_cut(&self.pending, self.scan, self.opts.max_chars, eof) {
                Next::More(scan) => {
                    self.scan = scan;
                    return;
                }
                Next::Cut(at) => {
                    let piece = self.pending[..at].to_owned();
                    self.pending.replace_range(..at, "");
                    self.scan = Scan::default();
                    self.accept(piece, out);
                }
            }
        }
        self.scan = Scan::default();
    }

    /// Applies `min_chars` (and `max_chars` to joined pieces) to a piece just cut.
    fn accept(&mut self, piece: String, out: &mut Vec<String>) {
        let min = self.opts.min_chars;
        if self.held.is_empty() {
            if spoken_len(&piece) >= min {
                out.push(piece);
            } else {
                self.held = piece;
            }
            return;
        }
        if self.held.chars().count() + spoken_len(&piece) > self.opts.max_chars {
            out.push(std::mem::replace(&mut self.held, piece));
        } else {
            self.held.push_str(&piece);
        }
        if spoken_len(&self.held) >= min {
            out.push(std::mem::take(&mut self.held));
        }
    }
}

/// A piece's length for the bounds: chars without trailing whitespace.
fn spoken_len(s: &str) -> usize {
    s.trim_end_matches(is_space).chars().count()
}

/// Where a scan of the pending text stopped: everything before `byte` is decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scan {
    byte: usize,
    /// Chars before `byte`.
    chars: usize,
    /// Whether a non-space char precedes `byte`.
    content: bool,
}

enum Next {
    /// The first piece is `text[..at]`.
    Cut(usize),
    /// Undecided until more text arrives; rescan from here.
    More(Scan),
}

/// Finds the end of the first piece of `text` (text not yet cut), starting the scan at `from`.
/// Monotone: if it returns `Cut(at)` for a text, it returns the same for every extension of it.
fn next_cut(text: &str, from: Scan, max: usize, eof: bool) -> Next {
    let mut s = from;
    while let Some(c) = text[s.byte..].chars().next() {
        if !is_space(c) && s.chars >= max {
            return forced_split(text, max, eof);
        }
        if is_terminator(c) {
            match sentence_end(text, s.byte, eof) {
                End::More => {
                    // A run of terminators, closers or emoji that reaches `max` chars can only
                    // end in a forced split: decide now, so that such a run never piles up.
                    let run = skip(text, s.byte, |c| {
                        is_terminator(c) || is_closer(c) || is_emoji_part(c)
                    });
                    if s.chars + text[s.byte..run].chars().count() > max {
                        return forced_split(text, max, eof);
                    }
                    return Next::More(s);
                }
                End::Cut { at, end } => {
                    let len = s.chars + text[s.byte..end].chars().count();
                    return if len <= max {
                        Next::Cut(at)
                    } else {
                        forced_split(text, max, eof)
                    };
                }
                End::No(resume) => {
                    s.chars += text[s.byte..resume].chars().count();
                    s.byte = resume;
                    s.content = true;
                    continue;
                }
            }
        }
        if is_space(c) {
            if s.content && is_line_break(c) {
                let end = skip(text, s.byte, is_space);
                if end == text.len() && !eof {
                    return Next::More(s);
                }
                return Next::Cut(end);
            }
        } else {
            s.content = true;
        }
        s.byte += c.len_utf8();
        s.chars += 1;
    }
    if eof && !text.is_empty() {
        Next::Cut(text.len())
    } else {
        Next::More(s)
    }
}

/// The most bytes of emoji or opening punctuation looked through after a sentence end: past
/// that the decision is taken without them, so undecided text stays bounded.
const MAX_LOOKAHEAD: usize = 64;

enum End {
    More,
    /// A sentence ends: the piece is `text[..at]`, its text without trailing space `text[..end]`.
    Cut {
        at: usize,
        end: usize,
    },
    /// Not a sentence end; carry on scanning at this byte.
    No(usize),
}

fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|t| t.chars().next())
}

/// The first byte at or after `i` whose char is not in the class (or the end).
fn skip(text: &str, i: usize, class: impl Fn(char) -> bool) -> usize {
    text[i..]
        .char_indices()
        .find(|&(_, c)| !class(c))
        .map_or(text.len(), |(b, _)| i + b)
}

/// Decides whether the terminator at byte `i` ends a sentence (rules 1-4 of the module docs).
fn sentence_end(text: &str, i: usize, eof: bool) -> End {
    let n = text.len();
    let term_end = skip(text, i, is_terminator);
    let terms = &text[i..term_end];
    let last = terms.chars().last().unwrap_or('.');
    let glued = skip(text, term_end, |c| is_closer(c) || is_emoji_part(c));
    if glued == n {
        return if eof {
            End::Cut { at: n, end: n }
        } else {
            End::More
        };
    }
    if is_cjk_terminator(last) {
        let at = skip(text, glued, is_space);
        return if at == n && !eof {
            End::More
        } else {
            End::Cut { at, end: glued }
        };
    }
    let (mut space, mut end) = (glued, glued);
    let mut next = skip(text, space, is_space);
    if next == space {
        return End::No(glued);
    }
    loop {
        if next == n {
            return if eof {
                End::Cut { at: n, end }
            } else {
                End::More
            };
        }
        if text[space..next].chars().any(is_line_break) {
            return End::Cut { at: next, end };
        }
        if char_at(text, next).is_some_and(is_emoji_start) {
            let emoji_end = skip(text, next, |c| is_emoji_part(c) || is_closer(c));
            if emoji_end - next > MAX_LOOKAHEAD {
                break; // not a few emoji closing the sentence: the next one starts here
            }
            if emoji_end == n && !eof {
                return End::More;
            }
            let after = skip(text, emoji_end, is_space);
            if after > emoji_end || after == n {
                (space, end, next) = (emoji_end, emoji_end, after);
                continue;
            }
        }
        break;
    }
    let cut = End::Cut { at: next, end };
    let sig = skip(text, next, is_opener);
    if sig - next > MAX_LOOKAHEAD {
        return cut;
    }
    let Some(first) = char_at(text, sig) else {
        return if eof { cut } else { End::More };
    };
    if first.is_lowercase() {
        return End::No(glued);
    }
    if terms != "." {
        return cut;
    }
    let word = word_before(text, i);
    if word.is_empty() {
        return cut;
    }
    let lower = word.to_lowercase();
    if NEVER_FINAL.contains(&lower.as_str()) {
        return End::No(glued);
    }
    if BEFORE_NUMBER.contains(&lower.as_str()) && (first.is_ascii_digit() || first == '#') {
        return End::No(glued);
    }
    let single_letter = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
    let list_number = word.len() <= 3 && word.bytes().all(|b| b.is_ascii_digit());
    if (single_letter || list_number) && at_line_start(text, i - word.len()) {
        return End::No(glued);
    }
    if single_letter || is_initialism(word) {
        if !first.is_uppercase() {
            return End::No(glued);
        }
        let word_end = skip(text, sig, char::is_alphabetic);
        let next_word = &text[sig..word_end];
        if next_word.chars().count() > MAX_STARTER_LEN {
            return End::No(glued);
        }
        if word_end == n && !eof {
            return End::More;
        }
        return if STARTERS.contains(&next_word) {
            cut
        } else {
            End::No(glued)
        };
    }
    cut
}

/// The word that ends at byte `i`, without leading quotes or apostrophes.
fn word_before(text: &str, i: usize) -> &str {
    let head = &text[..i];
    let start = head
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_word_char(c))
        .last()
        .map_or(i, |(b, _)| b);
    head[start..].trim_start_matches(['\'', '’'])
}

/// Whether only spaces or tabs precede byte `i` on its line (or in the pending text), or a colon
/// does (`"Steps: 1. Open"`): where a list number or letter stands.
fn at_line_start(text: &str, i: usize) -> bool {
    text[..i]
        .chars()
        .rev()
        .find(|&c| !matches!(c, ' ' | '\t'))
        .is_none_or(|c| is_line_break(c) || c == ':')
}

/// `U.S`, `a.m`, `Ph.D`: letters in groups of one or two, separated by single dots.
fn is_initialism(word: &str) -> bool {
    word.contains('.')
        && word.split('.').all(|g| {
            let len = g.chars().count();
            (1..=2).contains(&len) && g.chars().all(char::is_alphabetic)
        })
}

/// Cuts an overlong sentence: the text has a non-space char at char index `max` or later and
/// no sentence ends within its first `max` chars.
fn forced_split(text: &str, max: usize, eof: bool) -> Next {
    let window_end = text.char_indices().nth(max).map_or(text.len(), |(b, _)| b);
    let (mut clause, mut space) = (None, None);
    let mut prev: Option<char> = None;
    let mut content = false;
    for (chars, (b, c)) in text[..window_end].char_indices().enumerate() {
        if is_space(c) {
            if content && !prev.is_some_and(is_space) {
                let at = skip(text, b, is_space);
                space = Some(at);
                if prev.is_some_and(is_clause_mark) && chars * 2 >= max {
                    clause = Some(at);
                }
            }
        } else {
            content = true;
            if is_cjk_clause_mark(c) {
                let at = skip(text, b + c.len_utf8(), is_space);
                space = Some(at);
                if (chars + 1) * 2 >= max {
                    clause = Some(at);
                }
            }
        }
        prev = Some(c);
    }
    // A space right at char `max` ends a piece of exactly `max` chars.
    if char_at(text, window_end).is_some_and(is_space) && content && !prev.is_some_and(is_space) {
        let at = skip(text, window_end, is_space);
        space = Some(at);
        if prev.is_some_and(is_clause_mark) {
            clause = Some(at);
        }
    }
    if let Some(at) = clause.or(space) {
        return Next::Cut(at);
    }
    let mut graphemes = text.grapheme_indices(true).map(|(b, _)| b).skip(1);
    let last_fitting = graphemes.clone().take_while(|&b| b <= window_end).last();
    match last_fitting.or_else(|| graphemes.next()) {
        Some(at) => Next::Cut(at),
        None if eof => Next::Cut(text.len()),
        None => Next::More(Scan::default()),
    }
}

#[cfg(test)]
mod tests;
