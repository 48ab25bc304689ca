//! The one rule for every `threads` argument of the retrieval module (BM25 bulk add and batch
//! search, ONNX Runtime intra-op threads), in every door.
//!
//! `0` means one thread per core. A request above the core count is lowered to it: more threads
//! than cores only add switching, and a value tuned on a large server stays valid on a laptop.
//! A request above [`MAX_THREADS`] is refused: no machine keel runs on has that many cores, so it
//! is a mistake (`threads=10000` once started 10,000 OS threads; `2**31` hung).

use super::RagError;

/// The largest `threads` value accepted.
pub const MAX_THREADS: usize = 1024;

/// The cores this process may use (at least 1).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The `threads` of a caller that gives none, in every door: 0, one thread per core.
pub const DEFAULT_THREADS: usize = 0;

/// The number of threads to run for a `threads` argument: 0 → the core count; 1 to
/// [`MAX_THREADS`] → at most the core count; above [`MAX_THREADS`] → `InvalidConfig` naming the
/// value and the maximum.
pub fn resolve_threads(requested: usize) -> Result<usize, RagError> {
    if requested > MAX_THREADS {
        return Err(RagError::InvalidConfig(format!(
            "threads = {requested} exceeds the maximum of {MAX_THREADS} (0 uses every core; \
             values above the core count are lowered to it)"
        )));
    }
    let cores = cores();
    Ok(if requested == 0 {
        cores
    } else {
        requested.min(cores)
    })
}

/// ONNX Runtime intra-op threads: 0 keeps the runtime's default (one per physical core); other
/// values follow [`resolve_threads`].
pub(crate) fn intra_op_threads(requested: usize) -> Result<usize, RagError> {
    match requested {
        0 => Ok(0),
        n => resolve_threads(n),
    }
}
