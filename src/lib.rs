//! keel: the production core for conversational and voice-bot backends.
//!
//! One engine with three front doors: this crate, a C ABI (`include/keel.h`) and a Python module
//! (`import keel`). See `docs/` and the README for the map.
#![warn(missing_docs)]

pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod memory;
pub mod rag;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod store;
pub mod stream;
pub mod telemetry;

pub use cache::{Cache, CacheConfig, CacheStats, EntryOptions};
pub use clock::{Clock, CoarseClock, ManualClock, MonotonicClock};
pub use clock::{ManualWallClock, SystemWallClock, WallClock};
pub use config::Config;
pub use crypto::Keyring;
pub use engine::Engine;
pub use error::{AuthError, CacheError, Error, RateLimitError, Result};
pub use error::{ConfigError, CryptoError, MemoryError, RagError, RedisError};
pub use error::{StoreError, StreamError, TraceError};
pub use memory::{MemoryOptions, MemoryStore, Message, NewMessage, SessionInfo, SessionRef};
pub use store::{Store, StoreOptions, Synchronous};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The README's Rust examples, compiled and run by `cargo test --doc`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
