//! Character classes and word lists of the sentence segmenter (`segmenter.rs` holds the rules).

/// Whitespace that may separate sentences. No-break spaces (U+00A0, U+2007, U+202F) are not:
/// "Dr.\u{a0}Smith" was written to stay together.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() && !matches!(c, '\u{a0}' | '\u{2007}' | '\u{202f}')
}

/// A line or paragraph break: a whitespace run holding one always ends a sentence.
pub(crate) fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Sentence terminators that need whitespace after them (Latin script habits, plus the Arabic
/// question mark and the Devanagari danda, which are also followed by a space).
pub(crate) fn is_spaced_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '؟' | '।' | '॥'
    )
}

/// Full-width terminators of Chinese and Japanese text: a sentence ends right after them (and
/// any closing brackets), with or without whitespace.
pub(crate) fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．' | '｡')
}

pub(crate) fn is_terminator(c: char) -> bool {
    is_spaced_terminator(c) || is_cjk_terminator(c)
}

/// Closing quotes, brackets and Markdown emphasis that belong to the sentence they close.
pub(crate) fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '”'
            | '’'
            | ')'
            | ']'
            | '}'
            | '»'
            | '›'
            | '」'
            | '』'
            | '）'
            | '】'
            | '〕'
            | '〉'
            | '》'
            | '〗'
            | '*'
            | '_'
            | '`'
            | '~'
    )
}

/// Opening quotes, brackets, Markdown markers and bullets skipped to find the first letter of
/// the next sentence.
pub(crate) fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '“'
            | '‘'
            | '„'
            | '('
            | '['
            | '{'
            | '«'
            | '‹'
            | '「'
            | '『'
            | '（'
            | '【'
            | '¿'
            | '¡'
            | '*'
            | '_'
            | '`'
            | '#'
            | '>'
            | '-'
            | '•'
            | '–'
            | '—'
    )
}

/// Clause punctuation where an overlong sentence may be split for TTS (when followed by
/// whitespace).
pub(crate) fn is_clause_mark(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–')
}

/// Full-width clause punctuation: a split point with or without whitespace after it.
pub(crate) fn is_cjk_clause_mark(c: char) -> bool {
    matches!(c, '，' | '、' | '；' | '：')
}

/// A code point that can start an emoji (Extended_Pictographic, approximated by its blocks,
/// plus regional indicators for flags).
pub(crate) fn is_emoji_start(c: char) -> bool {
    matches!(
        c,
        '\u{1F000}'..='\u{1FAFF}'
            | '\u{2600}'..='\u{27BF}'
            | '\u{2B00}'..='\u{2BFF}'
            | '\u{2300}'..='\u{23FF}'
            | '\u{3030}'
            | '\u{303D}'
            | '\u{3297}'
            | '\u{3299}'
    )
}

/// A code point that can continue an emoji sequence (selectors, joiners, keycaps, tags).
pub(crate) fn is_emoji_part(c: char) -> bool {
    is_emoji_start(c)
        || matches!(
            c,
            '\u{FE0F}' | '\u{FE0E}' | '\u{200D}' | '\u{20E3}' | '\u{E0020}'..='\u{E007F}'
        )
}

/// Characters of the "word" before a period: letters, digits, inner dots and apostrophes, and
/// the characters of URLs and e-mail addresses (so that `example.com/a?b=c.` is one word, not
/// the single letter `c`).
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(
            c,
            '.' | '\''
                | '’'
                | '/'
                | ':'
                | '='
                | '?'
                | '&'
                | '%'
                | '-'
                | '+'
                | '@'
                | '~'
                | '#'
                | '_'
        )
}

/// Abbreviations that never end a sentence: titles and prefixes that always precede a name, a
/// number or a phrase. Lowercase, inner dots kept, final dot dropped.
pub(crate) const NEVER_FINAL: &[&str] = &[
    "mr", "mrs", "ms", "mx", "messrs", "mme", "mlle", "dr", "drs", "prof", "st", "mt", "vs", "e.g",
    "i.e", "cf", "viz", "approx", "a.k.a", "gen", "sen", "rep", "gov", "capt", "lt", "col", "sgt",
    "cmdr", "adm", "maj", "rev", "hon", "pres", "supt", "insp", "ca",
];

/// Abbreviations that end nothing when a number follows ("No. 5", "Fig. 3", "Jan. 12", "p. 4")
/// but are ordinary words otherwise ("No. I can't.").
pub(crate) const BEFORE_NUMBER: &[&str] = &[
    "no", "nos", "nr", "p", "pp", "vol", "vols", "fig", "figs", "ch", "chap", "sec", "sect", "eq",
    "eqs", "art", "op", "ed", "pt", "para", "tel", "ext", "min", "max", "hr", "hrs", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ver", "v", "ref",
];

/// Capitalised words that commonly start a sentence: after an initialism ("U.S.", "a.m.") or a
/// single letter ("J.", "B."), a period ends the sentence only if one of these follows ("in the
/// U.S. The ..." ends, "the U.S. Army" does not).
pub(crate) const STARTERS: &[&str] = &[
    "A", "After", "Also", "Although", "An", "And", "Any", "As", "At", "Because", "Before", "Both",
    "But", "By", "Can", "Could", "Do", "Does", "Each", "Every", "Finally", "First", "For", "From",
    "He", "Her", "Here", "His", "How", "However", "I", "If", "In", "It", "Its", "Let", "Many",
    "Most", "My", "Next", "No", "Not", "Note", "Now", "On", "One", "Our", "Overall", "Please",
    "Second", "She", "Since", "So", "Some", "That", "The", "Their", "Then", "There", "These",
    "They", "This", "Those", "To", "Today", "Unlike", "We", "What", "When", "Where", "Which",
    "While", "Who", "Why", "With", "Yes", "You", "Your",
];

/// The longest word in [`STARTERS`], so that looking ahead for one is bounded.
pub(crate) const MAX_STARTER_LEN: usize = 8;
