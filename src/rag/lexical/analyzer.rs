//! Text analysis for lexical search: Unicode word segmentation (UAX #29), lowercasing, stopword
//! removal and Snowball stemming, configurable per index.
//!
//! The same analyzer must see the documents and the queries of an index, so its configuration is
//! stored with the index and restored when the index is reopened.

use std::collections::HashSet;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

use crate::rag::RagError;

/// How an index turns text into terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// ISO 639-1 code of the language of the stemmer and the stopword list, e.g. "en".
    pub language: String,
    /// Apply the language's Snowball stemmer.
    pub stemming: bool,
    /// Drop the language's stopwords (the NLTK list).
    pub stopwords: bool,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            language: "en".into(),
            stemming: true,
            stopwords: true,
        }
    }
}

/// The analyzer itself: immutable, `Send + Sync`.
pub struct Analyzer {
    config: AnalyzerConfig,
    stemmer: Option<Stemmer>,
    stopwords: HashSet<&'static str>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("config", &self.config)
            .finish()
    }
}

fn algorithm(language: &str) -> Option<Algorithm> {
    Some(match language {
        "ar" => Algorithm::Arabic,
        "da" => Algorithm::Danish,
        "nl" => Algorithm::Dutch,
        "en" => Algorithm::English,
        "fi" => Algorithm::Finnish,
        "fr" => Algorithm::French,
        "de" => Algorithm::German,
        "el" => Algorithm::Greek,
        "hu" => Algorithm::Hungarian,
        "it" => Algorithm::Italian,
        "no" | "nb" => Algorithm::Norwegian,
        "pt" => Algorithm::Portuguese,
        "ro" => Algorithm::Romanian,
        "ru" => Algorithm::Russian,
        "es" => Algorithm::Spanish,
        "sv" => Algorithm::Swedish,
        "ta" => Algorithm::Tamil,
        "tr" => Algorithm::Turkish,
        _ => return None,
    })
}

impl Analyzer {
    /// Builds an analyzer; fails for a language without a stemmer (when stemming) or without a
    /// stopword list (when removing stopwords).
    pub fn new(config: AnalyzerConfig) -> Result<Self, RagError> {
        let stemmer = if config.stemming {
            let alg = algorithm(&config.language).ok_or_else(|| {
                RagError::InvalidConfig(format!(
                    "no Snowball stemmer for language {:?}",
                    config.language
                ))
            })?;
            Some(Stemmer::create(alg))
        } else {
            None
        };
        let stopwords = if config.stopwords {
            let code = if config.language == "nb" {
                "no"
            } else {
                config.language.as_str()
            };
            stop_words::lookup(code)
                .ok_or_else(|| {
                    RagError::InvalidConfig(format!(
                        "no stopword list for language {:?}",
                        config.language
                    ))
                })?
                .iter()
                .copied()
                .collect()
        } else {
            HashSet::new()
        };
        Ok(Self {
            config,
            stemmer,
            stopwords,
        })
    }

    /// The configuration this analyzer was built from.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// Calls `emit` with each term of `text`, in order.
    pub fn analyze(&self, text: &str, mut emit: impl FnMut(&str)) {
        let mut lower = String::new();
        for word in text.unicode_words() {
            lower.clear();
            if word.is_ascii() {
                lower.push_str(word);
                lower.make_ascii_lowercase();
            } else {
                lower.extend(word.chars().flat_map(char::to_lowercase));
            }
            self.emit_normalized(&lower, &mut emit);
        }
    }

    /// The remaining steps for an already lowercased word: stopwords, then stemming. Split out so
    /// that indexing can cache the result per distinct word.
    pub fn emit_normalized(&self, lower: &str, emit: &mut impl FnMut(&str)) {
        if self.stopwords.contains(lower) {
            return;
        }
        match &self.stemmer {
            Some(s) => emit(&s.stem(lower)),
            None => emit(lower),
        }
    }

    /// Calls `emit` with each lowercased word of `text` before stopwords and stemming.
    pub fn words(&self, text: &str, mut emit: impl FnMut(&str)) {
        let mut lower = String::new();
        for word in text.unicode_words() {
            if word.is_ascii() {
                if word.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower.clear();
                    lower.push_str(word);
                    lower.make_ascii_lowercase();
                    emit(&lower);
                } else {
                    emit(word);
                }
            } else {
                lower.clear();
                lower.extend(word.chars().flat_map(char::to_lowercase));
                emit(&lower);
            }
        }
    }

    /// The terms of `text` as owned strings (convenient for tests and small inputs).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.analyze(text, |t| out.push(t.to_owned()));
        out
    }
}
