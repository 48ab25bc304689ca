//! Server-Sent Events: an encoder for streaming endpoints and an incremental parser for
//! consuming streams (an OpenAI-compatible chat-completions response, for one).
//!
//! # Encoding
//! [`encode_event`] writes `event:`, `id:`, `retry:` (each only when set) and one `data:` line
//! per line of the data (split at CRLF, CR or LF, so the receiver rebuilds the data with LF
//! line ends), then the blank line that dispatches the event. An event name or id containing a
//! line break, or an id containing NUL, cannot be carried and is a
//! [`StreamError::InvalidSseField`] error. [`encode_comment`] writes `: text` lines and a blank
//! line: a heartbeat that every client ignores but that keeps proxies from closing the stream.
//!
//! # Parsing (WHATWG HTML, "Interpreting an event stream")
//! Lines end at CRLF, CR or LF, also when a CRLF pair is split between two reads; a leading
//! UTF-8 BOM is dropped; each line is decoded as UTF-8 with replacement characters (bytes of a
//! line are gathered before decoding, so a read may split a character). `:` lines are comments;
//! one space after the field's colon is dropped; `data` lines are joined with LF; `event` sets
//! the type ([`SseEvent::event`] is `None` for the default type `message`); `id` sets the last
//! event id unless it contains NUL, and the id persists to later events ([`SseEvent::id`] is
//! `None` while it is empty); `retry` is kept when it is all ASCII digits; unknown fields are
//! ignored. A blank line dispatches the event, unless no `data` line came (then nothing is
//! dispatched). An incomplete event at the end of the stream is never returned.
//!
//! Events come out the same whatever the split of the byte stream into reads (a property
//! test). The OpenAI end-of-stream sentinel is an ordinary event whose data is `[DONE]`
//! ([`SseEvent::is_done`]).
//!
//! # Bounded memory
//! The parser holds at most `max_event_bytes` (default [`DEFAULT_MAX_EVENT_BYTES`], 1 MiB) of an
//! unfinished line and as much of an event's data. Past that, `feed` returns
//! [`StreamError::SseTooLarge`]: the oversized line and the event it belongs to are dropped,
//! and parsing resumes at the next event (the rest of the read is consumed; events it
//! completed are returned by the next `feed`).

use crate::error::{Result, StreamError};

/// The default `max_event_bytes` of [`SseParser`]: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type; `None` is the default type, `message`.
    pub event: Option<String>,
    /// The data: the `data` lines joined with LF.
    pub data: String,
    /// The event id (when parsing: the last id the stream set, which persists; `None` when
    /// empty).
    pub id: Option<String>,
    /// The reconnection time the client should use, in milliseconds (when parsing: a `retry`
    /// field of this event's block).
    pub retry_ms: Option<u64>,
}

impl SseEvent {
    /// An event of the default type with this data and nothing else.
    pub fn new(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// Whether this is the `data: [DONE]` sentinel that ends an OpenAI streaming response.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// The event type, `message` by default.
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

fn check_field(field: &'static str, value: Option<&str>, nul: bool) -> Result<()> {
    let Some(v) = value else { return Ok(()) };
    if v.contains(['\r', '\n']) {
        return Err(StreamError::InvalidSseField {
            field,
            what: "a line break",
        }
        .into());
    }
    if nul && v.contains('\0') {
        return Err(StreamError::InvalidSseField { field, what: "NUL" }.into());
    }
    Ok(())
}

/// The lines of `text` split at CRLF, CR or LF (an empty text is one empty line).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\r', '\n']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// One event on the wire, ending with the blank line that dispatches it.
///
/// ```
/// use keel::stream::{encode_event, SseEvent};
/// let ev = SseEvent { event: Some("token".into()), id: Some("7".into()), ..SseEvent::new("a\nb") };
/// assert_eq!(encode_event(&ev).unwrap(), "event: token\nid: 7\ndata: a\ndata: b\n\n");
/// ```
pub fn encode_event(event: &SseEvent) -> Result<String> {
    let mut out = String::with_capacity(event.data.len() + 16);
    encode_event_into(event, &mut out)?;
    Ok(out)
}

/// As [`encode_event`], appending to `out` (left unchanged on error).
pub fn encode_event_into(event: &SseEvent, out: &mut String) -> Result<()> {
    check_field("event", event.event.as_deref(), false)?;
    check_field("id", event.id.as_deref(), true)?;
    if let Some(name) = &event.event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    if let Some(id) = &event.id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(ms) = event.retry_ms {
        out.push_str("retry: ");
        out.push_str(itoa::Buffer::new().format(ms));
        out.push('\n');
    }
    for line in lines(&event.data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Ok(())
}

/// A comment block (`: text` per line, then a blank line): a heartbeat clients ignore. An empty
/// text gives `":\n\n"`.
pub fn encode_comment(text: &str) -> String {
    if text.is_empty() {
        return ":\n\n".to_owned();
    }
    let mut out = String::with_capacity(text.len() + 4);
    for line in lines(text) {
        out.push_str(": ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// An incremental SSE parser: feed it reads as they come, get complete events back. See the
/// module docs for the rules and the memory bound.
#[derive(Debug, Clone)]
pub struct SseParser {
    max: usize,
    /// Bytes of the unfinished line.
    line: Vec<u8>,
    /// The last byte was a CR: an LF right after it ends nothing.
    after_cr: bool,
    /// No line has ended yet (a BOM may start the first).
    first_line: bool,
    /// Dropping the rest of an oversized line.
    skip_line: bool,
    /// Dropping the rest of an event that grew too large.
    skip_event: bool,
    data: String,
    event: String,
    last_id: String,
    block_retry: Option<u64>,
    retry: Option<u64>,
    /// Events completed by a `feed` that returned an error.
    queued: Vec<SseEvent>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES).expect("the default limit is valid")
    }
}

impl SseParser {
    /// A parser with the default limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser holding at most `max_event_bytes` of a line and of an event's data (at least 1).
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Result<Self> {
        if max_event_bytes == 0 {
            return Err(StreamError::InvalidOptions(
                "max_event_bytes must be at least 1".to_owned(),
            )
            .into());
        }
        Ok(Self {
            max: max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            skip_line: false,
            skip_event: false,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            block_retry: None,
            retry: None,
            queued: Vec::new(),
        })
    }

    /// The limit in bytes of one line and of one event's data.
    pub fn max_event_bytes(&self) -> usize {
        self.max
    }

    /// The last event id the stream set (`""` if none): what a reconnecting client sends as
    /// `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The last reconnection time the stream set, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry
    }

    /// Parses the next read; returns the events it completed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        let mut out = std::mem::take(&mut self.queued);
        let mut too_large = false;
        let mut i = 0;
        while i < bytes.len() {
            if std::mem::take(&mut self.after_cr) && bytes[i] == b'\n' {
                i += 1;
                continue;
            }
            match bytes[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(off) => {
                    too_large |= self.append(&bytes[i..i + off]);
                    too_large |= self.end_line(&mut out);
                    self.after_cr = bytes[i + off] == b'\r';
                    i += off + 1;
                }
                None => {
                    too_large |= self.append(&bytes[i..]);
                    break;
                }
            }
        }
        if too_large {
            self.queued = out;
            return Err(StreamError::SseTooLarge { limit: self.max }.into());
        }
        Ok(out)
    }

    /// Adds bytes to the unfinished line; true when the line became too long.
    fn append(&mut self, bytes: &[u8]) -> bool {
        if self.skip_line || bytes.is_empty() {
            return false;
        }
        if self.line.len() + bytes.len() > self.max {
            self.line = Vec::new();
            self.skip_line = true;
            self.skip_event = true;
            return true;
        }
        self.line.extend_from_slice(bytes);
        false
    }

    /// Processes the line that just ended; true when the event's data became too large.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> bool {
        let first = std::mem::replace(&mut self.first_line, false);
        if std::mem::take(&mut self.skip_line) {
            return false;
        }
        let mut raw = std::mem::take(&mut self.line);
        if first && raw.starts_with(b"\xEF\xBB\xBF") {
            raw.drain(..3);
        }
        if raw.is_empty() {
            self.dispatch(out);
        } else if raw[0] != b':' {
            let line = String::from_utf8_lossy(&raw);
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            if self.field(field, value) {
                return true;
            }
        }
        // Reuse the line's allocation unless it grew large.
        if raw.capacity() <= 4096 {
            raw.clear();
            self.line = raw;
        }
        false
    }

    fn field(&mut self, field: &str, value: &str) -> bool {
        match field {
            _ if self.skip_event => {}
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_id),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    self.skip_event = true;
                    self.data = String::new();
                    return true;
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => value.clone_into(&mut self.event),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                    self.block_retry = Some(ms);
                }
            }
            _ => {}
        }
        false
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        let retry_ms = self.block_retry.take();
        if std::mem::take(&mut self.skip_event) || data.is_empty() {
            return;
        }
        data.pop();
        out.push(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
            retry_ms,
        });
    }
}

#[cfg(test)]
mod tests;
