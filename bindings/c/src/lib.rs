//! libkeel: the C ABI of keel (`include/keel.h`).
//!
//! A thin layer: convert arguments, call `keel_core`, convert results and errors. Every exported
//! function follows the same rules (ARCHITECTURE.md §3):
//! - its body runs inside `ffi_guard!` (`panic.rs`), so a Rust panic becomes `KEEL_ERR_PANIC` and
//!   never unwinds into C;
//! - every pointer goes through `ffi.rs`, the only place raw pointers become Rust values: NULL is
//!   `KEEL_ERR_NULL_ARG`, and out-parameters are written only on success;
//! - failures become a stable `keel_result` code plus a per-thread message (`error.rs`).
//!
//! The header is generated from the `///` docs of the exported items by cbindgen
//! (`cbindgen.toml`, checked by `src/tests/header.rs`), so those docs are written for the C reader.

#![deny(unsafe_op_in_unsafe_fn)]
// C names: `keel_cache`, `keel_result`, ... are the names C users see.
#![allow(non_camel_case_types)]
// Every exported function's doc states its pointer contract in C terms (ownership, lifetime,
// NULL); that is the text the header carries, and a Rust `# Safety` heading would repeat it.
#![allow(clippy::missing_safety_doc)]

mod panic;

mod ffi;

// Declaration order is the order of the header's sections.
pub mod auth;
pub mod bytes;
pub mod cache;
pub mod engine;
pub mod error;
pub mod kb;
pub mod keyring;
pub mod memory;
pub mod metrics;
pub mod neural;
pub mod rag;
pub mod ratelimit;
pub mod stream;
pub mod telemetry;
pub mod version;

pub use auth::*;
pub use bytes::*;
pub use cache::*;
pub use engine::*;
pub use error::*;
pub use kb::*;
pub use keyring::*;
pub use memory::*;
pub use metrics::*;
pub use neural::*;
pub use rag::*;
pub use ratelimit::*;
pub use stream::*;
pub use telemetry::*;
pub use version::*;

#[cfg(test)]
mod tests;
