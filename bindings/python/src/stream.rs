//! `keel.SentenceSegmenter`, `keel.SseParser`, `keel.SseEvent`, `keel.sse_event`,
//! `keel.sse_comment`: the streaming helpers of `keel::stream`.
//!
//! Each call is microseconds of work on text already in memory, so the GIL is kept. A
//! segmenter or parser holds the state of one stream: share one between threads and a second
//! concurrent call raises `RuntimeError` (PyO3's borrow check) rather than interleaving.

use keel::stream::{
    self, segmenter::SegmenterOptions, sse::encode_event_into, SentenceSegmenter, SseEvent,
    SseParser,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::args::{opt_usize_arg, u64_arg, usize_arg};
use crate::errors::{invalid, to_py};

/// Splits a stream of LLM tokens into sentences for speech, each as soon as it is certain.
#[pyclass(module = "keel._native", name = "SentenceSegmenter")]
pub struct PySentenceSegmenter {
    inner: SentenceSegmenter,
}

#[pymethods]
impl PySentenceSegmenter {
    #[new]
    #[pyo3(signature = (min_chars=None, max_chars=None))]
    fn new(min_chars: Option<i128>, max_chars: Option<i128>) -> PyResult<Self> {
        let opts = SegmenterOptions::new(
            opt_usize_arg("min_chars", min_chars)?,
            opt_usize_arg("max_chars", max_chars)?,
        )
        .map_err(to_py)?;
        Ok(Self {
            inner: SentenceSegmenter::new(opts).map_err(to_py)?,
        })
    }

    #[getter]
    fn min_chars(&self) -> usize {
        self.inner.options().min_chars
    }

    #[getter]
    fn max_chars(&self) -> usize {
        self.inner.options().max_chars
    }

    /// Adds the next token; returns the sentences that became certain.
    fn push(&mut self, token: &str) -> Vec<String> {
        self.inner.push(token)
    }

    /// Ends the stream: returns the rest. The segmenter can then start a new stream.
    fn flush(&mut self) -> Vec<String> {
        self.inner.flush()
    }

    fn __repr__(&self) -> String {
        let o = self.inner.options();
        format!(
            "SentenceSegmenter(min_chars={}, max_chars={})",
            o.min_chars, o.max_chars
        )
    }
}

/// One server-sent event.
#[pyclass(module = "keel._native", name = "SseEvent", frozen, eq, get_all)]
#[derive(PartialEq)]
pub struct PySseEvent {
    event: Option<String>,
    data: String,
    id: Option<String>,
    retry_ms: Option<u64>,
}

impl From<SseEvent> for PySseEvent {
    fn from(e: SseEvent) -> Self {
        Self {
            event: e.event,
            data: e.data,
            id: e.id,
            retry_ms: e.retry_ms,
        }
    }
}

impl PySseEvent {
    fn to_core(&self) -> SseEvent {
        SseEvent {
            event: self.event.clone(),
            data: self.data.clone(),
            id: self.id.clone(),
            retry_ms: self.retry_ms,
        }
    }
}

#[pymethods]
impl PySseEvent {
    #[new]
    #[pyo3(signature = (data, *, event=None, id=None, retry_ms=None))]
    fn new(
        data: String,
        event: Option<String>,
        id: Option<String>,
        retry_ms: Option<i128>,
    ) -> PyResult<Self> {
        Ok(Self {
            event,
            data,
            id,
            retry_ms: retry_ms.map(|v| u64_arg("retry_ms", v)).transpose()?,
        })
    }

    /// The event type, `"message"` by default.
    #[getter]
    fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether this is the `data: [DONE]` sentinel ending an OpenAI streaming response.
    #[getter]
    fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// The event on the wire (as `keel.sse_event`).
    fn encode(&self) -> PyResult<String> {
        let mut out = String::new();
        encode_event_into(&self.to_core(), &mut out).map_err(to_py)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "SseEvent(data={:?}, event={:?}, id={:?}, retry_ms={:?})",
            self.data, self.event, self.id, self.retry_ms
        )
    }
}

/// An incremental parser of a Server-Sent Events byte stream (WHATWG rules).
#[pyclass(module = "keel._native", name = "SseParser")]
pub struct PySseParser {
    inner: SseParser,
}

#[pymethods]
impl PySseParser {
    #[new]
    #[pyo3(signature = (max_event_bytes=None))]
    fn new(max_event_bytes: Option<i128>) -> PyResult<Self> {
        let inner = match max_event_bytes {
            None => SseParser::new(),
            Some(v) => {
                SseParser::with_max_event_bytes(usize_arg("max_event_bytes", v)?).map_err(to_py)?
            }
        };
        Ok(Self { inner })
    }

    /// Parses the next read (bytes, or str taken as UTF-8); returns the events it completed.
    fn feed(&mut self, chunk: &Bound<'_, PyAny>) -> PyResult<Vec<PySseEvent>> {
        let events = if let Ok(b) = chunk.downcast::<PyBytes>() {
            self.inner.feed(b.as_bytes())
        } else if let Ok(s) = chunk.downcast::<PyString>() {
            self.inner.feed(s.to_str()?.as_bytes())
        } else if let Ok(v) = chunk.extract::<Vec<u8>>() {
            self.inner.feed(&v)
        } else {
            return Err(invalid(format!(
                "feed() takes bytes or str, got {}",
                chunk.get_type().name()?
            )));
        };
        Ok(events
            .map_err(to_py)?
            .into_iter()
            .map(PySseEvent::from)
            .collect())
    }

    /// The last event id the stream set (`""` if none): the `Last-Event-ID` to reconnect with.
    #[getter]
    fn last_event_id(&self) -> &str {
        self.inner.last_event_id()
    }

    /// The last reconnection time the stream set, in milliseconds.
    #[getter]
    fn retry_ms(&self) -> Option<u64> {
        self.inner.retry_ms()
    }

    #[getter]
    fn max_event_bytes(&self) -> usize {
        self.inner.max_event_bytes()
    }
}

/// One event on the wire (`event:`, `id:`, `retry:`, one `data:` per line, blank line).
#[pyfunction]
#[pyo3(signature = (data, *, event=None, id=None, retry_ms=None))]
pub fn sse_event(
    data: String,
    event: Option<String>,
    id: Option<String>,
    retry_ms: Option<i128>,
) -> PyResult<String> {
    let ev = SseEvent {
        event,
        data,
        id,
        retry_ms: retry_ms.map(|v| u64_arg("retry_ms", v)).transpose()?,
    };
    stream::encode_event(&ev).map_err(to_py)
}

/// A comment block (`: text`, blank line): a heartbeat clients ignore.
#[pyfunction]
#[pyo3(signature = (text=""))]
pub fn sse_comment(text: &str) -> String {
    stream::encode_comment(text)
}
