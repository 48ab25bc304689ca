//! The values conversation memory takes and returns.

/// Identifies a session: it belongs to `user` within `tenant`. Every operation is scoped by all
/// three, so one tenant (or user) can never reach another's session by guessing its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef<'a> {
    /// The tenant (organisation, customer account).
    pub tenant: &'a str,
    /// The end user within the tenant.
    pub user: &'a str,
    /// The session (conversation) id, unique within the tenant.
    pub session: &'a str,
}

impl<'a> SessionRef<'a> {
    /// Shorthand constructor.
    pub fn new(tenant: &'a str, user: &'a str, session: &'a str) -> Self {
        Self {
            tenant,
            user,
            session,
        }
    }
}

/// A message to append. `Debug` shows sizes, never the content or metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Who spoke: "user", "assistant", "system", "tool", ... (stored in clear; at most 64 bytes).
    pub role: String,
    /// The text (encrypted at rest).
    pub content: String,
    /// Optional JSON document (encrypted at rest).
    pub metadata: Option<String>,
    /// The exact token count if the caller knows it; otherwise the store's counter estimates it.
    pub tokens: Option<u32>,
}

impl NewMessage {
    /// A message without metadata whose tokens the store counts.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            metadata: None,
            tokens: None,
        }
    }

    /// Adds JSON metadata.
    pub fn with_metadata(mut self, json: impl Into<String>) -> Self {
        self.metadata = Some(json.into());
        self
    }

    /// Sets the exact token count.
    pub fn with_tokens(mut self, tokens: u32) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// A stored message. `Debug` shows sizes, never the content or metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Row id; increases with every append across the database and is never reused.
    pub id: i64,
    /// Who spoke.
    pub role: String,
    /// The decrypted text.
    pub content: String,
    /// The decrypted JSON metadata, as given.
    pub metadata: Option<String>,
    /// Token count (given or estimated).
    pub tokens: u32,
    /// When it was appended, in milliseconds since the Unix epoch (by the store's clock).
    pub created_at_ms: i64,
}

/// A session as listed by `MemoryStore::sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub session: String,
    /// First append, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last append, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// Number of messages.
    pub message_count: u64,
}

/// What `Debug` shows of a text that must not reach logs: its size.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("role", &self.role)
            .field("content", &Redacted(self.content.len()))
            .field(
                "metadata",
                &self.metadata.as_ref().map(|m| Redacted(m.len())),
            )
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("content", &Redacted(self.content.len()))
            .field(
                "metadata",
                &self.metadata.as_ref().map(|m| Redacted(m.len())),
            )
            .field("tokens", &self.tokens)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_content_or_metadata() {
        let m =
            NewMessage::new("user", "secret-canary-text").with_metadata(r#"{"k":"meta-canary"}"#);
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("secret-canary") && !shown.contains("meta-canary"),
            "{shown}"
        );
        assert!(shown.contains("<18 bytes>"), "{shown}");
    }
}
