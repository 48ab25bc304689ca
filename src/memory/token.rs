//! Token counting for budget windows: pluggable, with a cheap default.
//!
//! Exact counts depend on the model's tokenizer, which keel does not ship. The default,
//! [`CharEstimate`], uses the common rule of thumb for English with BPE tokenizers (about four
//! characters per token): `ceil(chars / 4)`, where `chars` counts Unicode scalar values. It
//! over-counts rather than under-counts on typical prose, so a window chosen with it fits.
//! Callers with a real tokenizer either implement [`TokenCounter`] or pass the exact count with
//! each message (`NewMessage::tokens`), which then wins over any counter.

/// Counts the tokens of a message's content.
pub trait TokenCounter: Send + Sync + std::fmt::Debug {
    /// The number of tokens `text` takes.
    fn count(&self, text: &str) -> u32;
}

/// `ceil(chars / 4)`: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CharEstimate;

impl TokenCounter for CharEstimate {
    fn count(&self, text: &str) -> u32 {
        let chars = text.chars().count();
        u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_estimate_rounds_up_and_counts_scalars() {
        let cases = [
            ("", 0),
            ("a", 1),
            ("abcd", 1),
            ("abcde", 2),
            ("héllo wörld", 3),
        ];
        for (text, expected) in cases {
            assert_eq!(CharEstimate.count(text), expected, "{text:?}");
        }
    }
}
