//! Streaming helpers for progressive speech output.
//!
//! - [`SentenceSegmenter`]: LLM tokens in, sentences out as soon as each is certain, bounded in
//!   length for TTS (rules and guarantees in the [`segmenter`] docs).
//! - [`encode_event`] / [`encode_comment`]: Server-Sent Events on the wire, for streaming
//!   endpoints; [`SseParser`]: an incremental parser of an SSE byte stream (e.g. an
//!   OpenAI-compatible streaming response), fed partial reads split anywhere (see [`sse`]).
//!
//! Everything here is plain, synchronous, allocation-light code with no I/O: the caller owns
//! the socket, the TTS engine and the clock.

mod chars;
pub mod segmenter;
pub mod sse;

pub use segmenter::{SegmenterOptions, SentenceSegmenter};
pub use sse::{encode_comment, encode_event, SseEvent, SseParser};
