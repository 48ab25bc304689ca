//! The one error type of the core crate.
//!
//! Each area of keel has its own variant family so that the C binding can map it to a stable
//! result-code range and the Python binding to an exception subclass, each in one place.
//! Messages never contain keys, values, secrets or message content: only sizes, limits and names.

/// Everything that can go wrong in keel.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument was outside the accepted range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A cache-specific failure.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Failures of the [`crate::cache`] module.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// `max_entries` (or `max_weight`) was zero.
    #[error("cache capacity must be at least 1 (got {field} = 0)")]
    ZeroCapacity {
        /// Which limit was zero.
        field: &'static str,
    },
    /// A TTL was zero, negative, NaN or too large to represent.
    #[error("invalid TTL: {0}")]
    InvalidTtl(String),
    /// One entry weighs more than a single cache shard can ever hold.
    #[error("entry weight {weight} exceeds the largest storable weight {max}")]
    EntryTooLarge {
        /// The weight of the rejected entry.
        weight: u64,
        /// The largest weight this cache can store in one entry.
        max: u64,
    },
    /// A get-or-compute for a key was called again, on the same thread, from inside the
    /// computation of that same key; waiting would deadlock, so it fails instead.
    #[error("recursive get_or_insert for a key that this thread is already computing")]
    RecursiveLoad,
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
