//! Data parallelism for the retrieval module's `threads` arguments, in one place so the `rayon`
//! feature decides it: with the feature, a rayon pool of exactly `threads` threads; without it,
//! the calling thread. Either way the results come back in the input's order, so the outcome does
//! not depend on the feature (only the time does).

use super::RagError;

/// `items.into_iter().map(f).collect()`, run on `threads` threads (already resolved by
/// [`super::resolve_threads`]).
pub(crate) fn map<T, R, F>(threads: usize, items: Vec<T>, f: F) -> Result<Vec<R>, RagError>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync + Send,
{
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        Ok(pool(threads)?.install(|| items.into_par_iter().map(f).collect()))
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = threads;
        Ok(items.into_iter().map(f).collect())
    }
}

/// `items.iter().map(f).collect()`, run on `threads` threads.
pub(crate) fn map_ref<T, R, F>(threads: usize, items: &[T], f: F) -> Result<Vec<R>, RagError>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync + Send,
{
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        Ok(pool(threads)?.install(|| items.par_iter().map(f).collect()))
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = threads;
        Ok(items.iter().map(f).collect())
    }
}

#[cfg(feature = "rayon")]
fn pool(threads: usize) -> Result<rayon::ThreadPool, RagError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RagError::InvalidConfig(format!("thread pool: {e}")))
}
