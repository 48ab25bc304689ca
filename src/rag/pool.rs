//! A bounded pool of ONNX Runtime sessions for one model, so concurrent callers run side by
//! side instead of taking turns on one session.
//!
//! `ort` (2.0 rc) runs a session through `&mut Session`, so a session serves one call at a time;
//! the pool holds `size` sessions of the same model file, built once at open. A caller leases an
//! idle session ([`SessionPool::lease`], blocking while all are busy, or [`SessionPool::try_lease`])
//! and the lease returns it on drop, also on unwinding.
//!
//! Invariants: at most `size` leases exist at once; a returned session wakes one blocked leaser
//! and then runs the release hook (the embedder's micro-batching queue waits on its own lock,
//! and is woken through it); the hook runs after the pool's lock is released, so the lock order
//! is always queue, then pool.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use ort::session::Session;

/// Called after every return of a session to the pool.
type ReleaseHook = Box<dyn Fn() + Send + Sync>;

pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
    size: usize,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    on_release: OnceLock<ReleaseHook>,
}

/// A session leased from a [`SessionPool`]; returned to it on drop.
pub(crate) struct Lease<'p> {
    pool: &'p SessionPool,
    session: Option<Session>,
}

impl SessionPool {
    /// A pool of `sessions` (at least one, all of the same model).
    pub(crate) fn new(sessions: Vec<Session>) -> Self {
        debug_assert!(!sessions.is_empty());
        Self {
            size: sessions.len(),
            idle: Mutex::new(sessions),
            returned: Condvar::new(),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            on_release: OnceLock::new(),
        }
    }

    /// The first session (to read the model's inputs and outputs at open).
    pub(crate) fn with_first<R>(&self, f: impl FnOnce(&Session) -> R) -> R {
        f(&self.lock()[0])
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Session>> {
        // A panic while the lock is held cannot leave the vector half-changed (push and pop).
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the hook run after each return (once; later calls are ignored).
    pub(crate) fn set_release_hook(&self, hook: ReleaseHook) {
        let _ = self.on_release.set(hook);
    }

    /// The number of sessions.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Sessions idle right now (a hint: it may change as soon as it is read).
    pub(crate) fn idle(&self) -> usize {
        self.lock().len()
    }

    /// The most sessions that were leased at the same time since the pool was built.
    pub(crate) fn peak_in_use(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn leased(&self, session: Session) -> Lease<'_> {
        let now = self.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Lease {
            pool: self,
            session: Some(session),
        }
    }

    /// An idle session, waiting for one to be returned if all are leased.
    pub(crate) fn lease(&self) -> Lease<'_> {
        let mut idle = self.lock();
        loop {
            if let Some(s) = idle.pop() {
                drop(idle);
                return self.leased(s);
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// An idle session if there is one now.
    pub(crate) fn try_lease(&self) -> Option<Lease<'_>> {
        let s = self.lock().pop()?;
        Some(self.leased(s))
    }
}

impl Deref for Lease<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session
            .as_ref()
            .expect("a lease holds its session until dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
            self.pool.lock().push(s);
            self.pool.returned.notify_one();
            if let Some(hook) = self.pool.on_release.get() {
                hook();
            }
        }
    }
}
