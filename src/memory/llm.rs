//! A session's history as the messages of an LLM request: `[{"role", "content"}]`, with an
//! optional system prompt and retrieved passages formatted with citation markers.
//!
//! The budget rule: the first message, when there is one, is the system message: the system
//! prompt, then (after a blank line, when both are present) the passages block. Its tokens are
//! counted with the store's [`TokenCounter`](super::TokenCounter) and taken from the budget
//! first; the history gets the rest, as in [`MemoryStore::window`] (the newest turns whose
//! token counts fit, oldest first, a contiguous suffix). Only contents are counted: the few
//! tokens a chat format adds per message are not, so leave some headroom under the model's
//! context. A budget smaller than the system message alone is
//! [`MemoryError::BudgetTooSmall`] (naming both numbers); a session that does not exist yet
//! has no history (the first turn of a conversation), not an error.
//!
//! The passages block is
//!
//! ```text
//! Sources:
//! [1] Title (doc-id)
//! passage text
//!
//! [2] doc-id
//! passage text
//! ```
//!
//! numbered from 1 in the order given (best first, as retrieval returns them); a passage
//! without a title shows its document id alone. An answer cites `[n]`; `passages[n - 1]` is
//! the source.

use super::backend::MemoryBackend;
use super::{MemoryStore, SessionRef};
use crate::error::{Error, MemoryError, Result};
use crate::rag::Hit;

/// A retrieved passage to cite in the system message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContextPassage {
    /// The document id.
    pub doc_id: String,
    /// The document title (may be empty).
    pub title: String,
    /// The passage text.
    pub text: String,
}

impl From<&Hit> for ContextPassage {
    fn from(hit: &Hit) -> Self {
        Self {
            doc_id: hit.passage.doc_id.clone(),
            title: hit.passage.title.clone(),
            text: hit.passage.text.clone(),
        }
    }
}

/// One message of an LLM request.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmMessage {
    /// "system", "user", "assistant", ... as stored.
    pub role: String,
    /// The text.
    pub content: String,
}

impl std::fmt::Debug for LlmMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmMessage")
            .field("role", &self.role)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

/// The passages block with citation markers `[1]`, `[2]`, ... (see the module docs); empty
/// for no passages.
pub fn format_passages(passages: &[ContextPassage]) -> String {
    if passages.is_empty() {
        return String::new();
    }
    let mut out = String::from("Sources:");
    for (i, p) in passages.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { "\n\n" });
        out.push_str(&format!("[{}] ", i + 1));
        if p.title.is_empty() {
            out.push_str(&p.doc_id);
        } else {
            out.push_str(&format!("{} ({})", p.title, p.doc_id));
        }
        out.push('\n');
        out.push_str(&p.text);
    }
    out
}

/// The system message's content: the prompt, a blank line, the passages block (either part may
/// be absent); None when both are.
pub fn system_content(system: Option<&str>, passages: &[ContextPassage]) -> Option<String> {
    let block = format_passages(passages);
    match (system.filter(|s| !s.is_empty()), block.is_empty()) {
        (None, true) => None,
        (Some(s), true) => Some(s.to_owned()),
        (None, false) => Some(block),
        (Some(s), false) => Some(format!("{s}\n\n{block}")),
    }
}

/// Passages from JSON text: an array of objects with `text` and optional `title` and `doc_id`
/// (strings); empty text is no passages. Anything else is `Error::InvalidArgument` naming the
/// offending element.
pub fn passages_from_json(json: &str) -> Result<Vec<ContextPassage>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |what: String| Error::InvalidArgument(format!("passages: {what}"));
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Array(items) = value else {
        return Err(bad("must be a JSON array".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| -> Result<Option<String>> {
                match item.get(name) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(bad(format!("element {i}: {name} must be a string"))),
                }
            };
            if !item.is_object() {
                return Err(bad(format!("element {i} must be an object")));
            }
            Ok(ContextPassage {
                doc_id: field("doc_id")?.unwrap_or_default(),
                title: field("title")?.unwrap_or_default(),
                text: field("text")?.ok_or_else(|| bad(format!("element {i} has no \"text\"")))?,
            })
        })
        .collect()
}

/// Messages as OpenAI-style JSON: `[{"role": ..., "content": ...}, ...]`.
pub fn messages_to_json(messages: &[LlmMessage]) -> String {
    let list: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

impl<B: MemoryBackend> MemoryStore<B> {
    /// The messages of an LLM request for this session within `budget` tokens: the system
    /// message (prompt and cited passages), then the newest turns that fit, oldest first. See
    /// the module docs of `keel::memory::llm` for the budget rule.
    pub fn llm_messages(
        &self,
        at: &SessionRef<'_>,
        budget: u64,
        system: Option<&str>,
        passages: &[ContextPassage],
    ) -> Result<Vec<LlmMessage>> {
        self.llm_messages_counted(at, budget, system, passages, None)
    }

    /// [`Self::llm_messages`] with the system message's token count given (`Some`, as
    /// [`system_content`] formats it; e.g. counted by the caller's own tokenizer, as
    /// `NewMessage::tokens` is) instead of counted by the store's counter.
    pub fn llm_messages_counted(
        &self,
        at: &SessionRef<'_>,
        budget: u64,
        system: Option<&str>,
        passages: &[ContextPassage],
        system_tokens: Option<u32>,
    ) -> Result<Vec<LlmMessage>> {
        let system = system_content(system, passages);
        let needed = system.as_deref().map_or(0, |s| {
            u64::from(system_tokens.unwrap_or_else(|| self.counter.count(s)))
        });
        if needed > budget {
            return Err(MemoryError::BudgetTooSmall { budget, needed }.into());
        }
        let history = match self.window(at, budget - needed) {
            Ok(h) => h,
            Err(Error::Memory(MemoryError::SessionNotFound)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(history.len() + 1);
        if let Some(content) = system {
            out.push(LlmMessage {
                role: "system".into(),
                content,
            });
        }
        out.extend(history.into_iter().map(|m| LlmMessage {
            role: m.role,
            content: m.content,
        }));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOptions, NewMessage};
    use crate::store::test_support::TempDir;
    use crate::Keyring;

    const AT: SessionRef<'static> = SessionRef {
        tenant: "acme",
        user: "alice",
        session: "s1",
    };

    fn store(dir: &TempDir) -> MemoryStore {
        let keys = Keyring::new(1, &crate::crypto::test_key(3)).unwrap();
        MemoryStore::open(dir.path().join("m.db"), keys, MemoryOptions::default()).unwrap()
    }

    fn passages() -> Vec<ContextPassage> {
        vec![
            ContextPassage {
                doc_id: "wings.md".into(),
                title: "Wings".into(),
                text: "Lift grows with incidence.".into(),
            },
            ContextPassage {
                doc_id: "notes.txt".into(),
                title: String::new(),
                text: "Shells buckle.".into(),
            },
        ]
    }

    #[test]
    fn passages_are_numbered_with_title_and_doc_id() {
        assert_eq!(
            format_passages(&passages()),
            "Sources:\n[1] Wings (wings.md)\nLift grows with incidence.\n\n[2] notes.txt\nShells buckle."
        );
        assert_eq!(format_passages(&[]), "");
        assert_eq!(system_content(None, &[]), None);
        assert_eq!(system_content(Some(""), &[]), None);
        assert_eq!(system_content(Some("Be brief."), &[]).unwrap(), "Be brief.");
        assert!(system_content(Some("Be brief."), &passages())
            .unwrap()
            .starts_with("Be brief.\n\nSources:\n[1] Wings"));
    }

    #[test]
    fn the_budget_counts_the_system_message_then_the_newest_turns() {
        let dir = TempDir::new("llm-budget");
        let mem = store(&dir);
        // Turns of 10, 10, 10 tokens (given counts win over the estimate).
        for (role, text) in [("user", "q1"), ("assistant", "a1"), ("user", "q2")] {
            mem.append(&AT, &NewMessage::new(role, text).with_tokens(10))
                .unwrap();
        }
        let system = system_content(Some("Be brief."), &passages()).unwrap();
        let sys_tokens = u64::from(mem.counter.count(&system));
        // Room for the system message and exactly two turns.
        let got = mem
            .llm_messages(&AT, sys_tokens + 25, Some("Be brief."), &passages())
            .unwrap();
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("system", system.as_str()),
                ("assistant", "a1"),
                ("user", "q2")
            ]
        );
        // Exactly the system message: no history.
        let got = mem
            .llm_messages(&AT, sys_tokens, Some("Be brief."), &passages())
            .unwrap();
        assert_eq!(got.len(), 1);
        // One token short of the system message: a typed error with both numbers.
        let err = mem
            .llm_messages(&AT, sys_tokens - 1, Some("Be brief."), &passages())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Memory(MemoryError::BudgetTooSmall { budget, needed })
                    if budget == sys_tokens - 1 && needed == sys_tokens
            ),
            "{err:?}"
        );
        // No system prompt and no passages: the plain window.
        let got = mem.llm_messages(&AT, 30, None, &[]).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            messages_to_json(&got[..1]),
            r#"[{"content":"q1","role":"user"}]"#
        );
    }

    #[test]
    fn passages_parse_from_json_with_errors_naming_the_element() {
        let got =
            passages_from_json(r#"[{"text": "t", "title": "T", "doc_id": "d"}, {"text": "u"}]"#)
                .unwrap();
        assert_eq!(got[0].doc_id, "d");
        assert_eq!(
            got[1],
            ContextPassage {
                text: "u".into(),
                ..Default::default()
            }
        );
        assert!(passages_from_json("  ").unwrap().is_empty());
        for (json, want) in [
            ("{", "not valid JSON"),
            ("{}", "must be a JSON array"),
            ("[1]", "element 0 must be an object"),
            (
                r#"[{"text": "a"}, {"title": "x"}]"#,
                "element 1 has no \"text\"",
            ),
            (r#"[{"text": 3}]"#, "element 0: text must be a string"),
        ] {
            let err = passages_from_json(json).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains(want)),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn a_new_session_has_no_history_yet() {
        let dir = TempDir::new("llm-new");
        let mem = store(&dir);
        let got = mem.llm_messages(&AT, 100, Some("Hi."), &[]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].role, "system");
    }
}
