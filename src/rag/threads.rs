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

/// The largest `sessions` value accepted for one model: each session holds its own copy of the
/// model's working memory, so more than this is a mistake, not a tuning.
pub const MAX_SESSIONS: usize = 64;

/// How a neural model runs: `sessions` ONNX Runtime sessions, each with `threads` intra-op
/// threads, so up to `sessions` callers run at once and `sessions * threads` stays within the
/// cores (unless more sessions than cores were asked for: then one thread each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Sessions in the pool (at least 1).
    pub sessions: usize,
    /// Intra-op threads per session (at least 1).
    pub threads: usize,
}

/// The pool of a model from its `sessions` (None: chosen here) and `threads` (0: chosen here)
/// settings, on `cores` cores:
/// - neither given: one single-threaded session per core (concurrent callers run side by side,
///   a lone caller's large batch is split across the idle sessions);
/// - `threads` only: `cores / threads` sessions (at least 1) of `threads` threads;
/// - `sessions` only: `cores / sessions` threads each (at least 1);
/// - both: `threads` lowered so that `sessions * threads` fits the cores (at least 1).
///
/// `sessions` of 0 or above [`MAX_SESSIONS`], and `threads` above [`MAX_THREADS`], are
/// `InvalidConfig` naming the value.
pub fn pool_shape(sessions: Option<usize>, threads: usize) -> Result<PoolShape, RagError> {
    shape_on(cores(), sessions, threads)
}

fn shape_on(cores: usize, sessions: Option<usize>, threads: usize) -> Result<PoolShape, RagError> {
    if threads > MAX_THREADS {
        return Err(RagError::InvalidConfig(format!(
            "threads = {threads} exceeds the maximum of {MAX_THREADS} (0 chooses it from the \
             cores and the sessions)"
        )));
    }
    let sessions =
        match sessions {
            Some(0) => return Err(RagError::InvalidConfig(
                "sessions = 0: a model needs at least 1 session (leave it unset to use one per \
                 core)"
                    .into(),
            )),
            Some(n) if n > MAX_SESSIONS => {
                return Err(RagError::InvalidConfig(format!(
                    "sessions = {n} exceeds the maximum of {MAX_SESSIONS} (each session holds its \
                 own copy of the model's working memory)"
                )))
            }
            Some(n) => n,
            None if threads == 0 => cores,
            None => (cores / threads.min(cores)).max(1),
        };
    let fair = (cores / sessions).max(1);
    let threads = if threads == 0 {
        fair
    } else {
        threads.min(fair)
    };
    Ok(PoolShape { sessions, threads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_shape_never_oversubscribes_the_cores() {
        let s = |sessions, threads| shape_on(8, sessions, threads).unwrap();
        assert_eq!(
            s(None, 0),
            PoolShape {
                sessions: 8,
                threads: 1
            }
        );
        assert_eq!(
            s(None, 4),
            PoolShape {
                sessions: 2,
                threads: 4
            }
        );
        assert_eq!(
            s(None, 100),
            PoolShape {
                sessions: 1,
                threads: 8
            }
        );
        assert_eq!(
            s(Some(2), 0),
            PoolShape {
                sessions: 2,
                threads: 4
            }
        );
        assert_eq!(
            s(Some(2), 8),
            PoolShape {
                sessions: 2,
                threads: 4
            }
        );
        assert_eq!(
            s(Some(3), 1),
            PoolShape {
                sessions: 3,
                threads: 1
            }
        );
        assert_eq!(
            s(Some(16), 0),
            PoolShape {
                sessions: 16,
                threads: 1
            }
        );
        assert_eq!(
            shape_on(2, None, 0).unwrap(),
            PoolShape {
                sessions: 2,
                threads: 1
            }
        );
    }

    #[test]
    fn zero_or_absurd_sessions_are_errors_naming_the_value() {
        for (sessions, threads, needle) in [
            (Some(0), 0, "sessions = 0"),
            (Some(65), 0, "sessions = 65"),
            (Some(usize::MAX), 1, &*format!("sessions = {}", usize::MAX)),
            (None, 1025, "threads = 1025"),
        ] {
            match shape_on(4, sessions, threads) {
                Err(RagError::InvalidConfig(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{sessions:?}/{threads}: {other:?}"),
            }
        }
    }
}
