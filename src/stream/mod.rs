//! Streaming helpers for progressive speech output: an incremental sentence segmenter and SSE
//! encoding/parsing. (Being built: issue 11.)
