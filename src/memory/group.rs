//! Group commit of appends: concurrent appends to one [`MemoryStore`](super::MemoryStore) share
//! write transactions.
//!
//! A caller hands its prepared append (validated, token-counted) to [`GroupCommit::submit`].
//! When fewer than the backend's [`write_concurrency`](super::backend::MemoryBackend::write_concurrency)
//! batches are in flight and nobody is queued, it becomes a leader at once and commits its own
//! append alone, from its own borrowed data: an uncontended caller pays one mutex and nothing
//! else (no copy, no timer, no batching window). Otherwise it queues an owned copy of its append
//! and parks. When a batch commits, its leader hands each of its appends its own result (waking
//! exactly those callers) and wakes the oldest waiter, which takes every queued append (up to
//! [`MAX_BATCH`], oldest first) as the next batch, in one transaction. So
//! a batch holds whatever queued while the previous commit ran, and each caller returns only
//! after the transaction holding *its* rows committed (or failed): durability is exactly that of
//! one append per transaction.
//!
//! What the batch does with its appends (isolation of a failing one, order) is the store's
//! [`commit_batch`](super::MemoryStore): this module only moves appends and results between
//! threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::model::{NewMessage, SessionRef};
use crate::error::{Result, StoreError};

/// Most appends one batch (one transaction) holds, so that a transaction stays short.
pub const MAX_BATCH: usize = 256;

/// What a committed append reports to its caller.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The ids of its messages.
    pub ids: Vec<i64>,
    /// Whether it created its session.
    pub new_session: bool,
}

/// One append of a batch, as the batch runner sees it.
pub(crate) struct Append<'a> {
    /// Where to append.
    pub at: SessionRef<'a>,
    /// The messages, each with its token count.
    pub msgs: &'a [(&'a NewMessage, u32)],
    /// The time stamped on the messages and the session.
    pub now: i64,
}

/// How many write transactions and appends a store committed (see
/// [`MemoryStore::commit_stats`](super::MemoryStore::commit_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions that committed appends.
    pub transactions: u64,
    /// Appends (calls of `append` / `append_many`) they committed.
    pub appends: u64,
}

/// A queued append, owned: the leader that commits it runs on another thread.
struct Job {
    tenant: String,
    user: String,
    session: String,
    msgs: Vec<(NewMessage, u32)>,
    now: i64,
    /// Set once, by the leader that ran it.
    result: Mutex<Option<Result<Outcome>>>,
    /// The waiting caller, unparked when its result is set or when it may lead the next batch.
    thread: std::thread::Thread,
}

impl Job {
    fn take(&self) -> Option<Result<Outcome>> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Sets the result and wakes the caller.
    fn set(&self, r: Result<Outcome>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.thread.unpark();
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Arc<Job>>,
    /// Batches being committed now.
    leaders: usize,
    /// The process these belong to: a child forked while a batch ran inherits a leader and
    /// waiters whose threads it does not have, and starts over (as the store's pool does).
    pid: u32,
}

/// The commit queue of one store.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    transactions: AtomicU64,
    appends: AtomicU64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Releases a leader's slot and wakes the waiters, also when the batch runner panicked (its
/// appends then fail instead of waiting forever).
struct Leading<'a> {
    group: &'a GroupCommit,
    jobs: &'a [Arc<Job>],
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            for job in self.jobs {
                job.set(Err(StoreError::Pool(
                    "the transaction committing this append was abandoned (a panic)".into(),
                )
                .into()));
            }
        }
        let mut st = self.group.lock();
        st.leaders -= 1;
        // The oldest waiter leads the next batch (it may find a newer caller took it first,
        // and then waits again: its append is in that batch).
        if let Some(next) = st.queue.front() {
            next.thread.unpark();
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, emptied first if this process is a fork of the one that filled it.
    fn lock_here(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        let pid = std::process::id();
        if st.pid != pid {
            *st = State {
                pid,
                ..State::default()
            };
        }
        st
    }

    /// Transactions and appends committed so far.
    pub(crate) fn stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
        }
    }

    /// Appends waiting for a batch now (for tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Leaves the state a child forked during a batch of its parent finds (for tests): a
    /// leader in flight and nothing that will ever finish it, recorded under another pid.
    #[cfg(test)]
    pub(crate) fn pretend_forked_during_a_batch(&self) {
        let mut st = self.lock();
        st.pid = std::process::id().wrapping_add(1);
        st.leaders = 1;
    }

    /// Batches being committed now (for tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().leaders
    }

    /// Counts one committed transaction of `appends` appends (called by the batch runner).
    pub(crate) fn committed(&self, appends: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(appends as u64, Ordering::Relaxed);
    }

    /// Commits one append, alone or in a batch with concurrent ones, through `run` (which
    /// returns one result per append it is given, in order). At most `leaders` batches run at
    /// once.
    pub(crate) fn submit(
        &self,
        append: Append<'_>,
        leaders: usize,
        run: impl Fn(&[Append<'_>]) -> Vec<Result<Outcome>>,
    ) -> Result<Outcome> {
        let leaders = leaders.max(1);
        let mut st = self.lock_here();
        if st.leaders < leaders && st.queue.is_empty() {
            // Uncontended: commit from the caller's own data.
            st.leaders += 1;
            drop(st);
            let mut leading = Leading {
                group: self,
                jobs: &[],
                done: false,
            };
            let result = run(std::slice::from_ref(&append)).pop();
            leading.done = true;
            drop(leading);
            return result.unwrap_or_else(|| Err(super::backend::not_run()));
        }
        let job = Arc::new(Job {
            tenant: append.at.tenant.to_owned(),
            user: append.at.user.to_owned(),
            session: append.at.session.to_owned(),
            msgs: append.msgs.iter().map(|&(m, t)| (m.clone(), t)).collect(),
            now: append.now,
            result: Mutex::new(None),
            thread: std::thread::current(),
        });
        st.queue.push_back(Arc::clone(&job));
        loop {
            if let Some(result) = job.take() {
                return result;
            }
            if st.leaders < leaders && !st.queue.is_empty() {
                let n = st.queue.len().min(MAX_BATCH);
                let jobs: Vec<Arc<Job>> = st.queue.drain(..n).collect();
                st.leaders += 1;
                drop(st);
                self.lead(&jobs, &run);
                st = self.lock();
                continue;
            }
            drop(st);
            // Woken by `Job::set` or by a leader that finished; a spurious wake-up (or a stale
            // token) only goes round the loop again.
            std::thread::park();
            st = self.lock();
        }
    }

    /// Runs one batch of queued appends and hands each its result.
    fn lead(&self, jobs: &[Arc<Job>], run: &impl Fn(&[Append<'_>]) -> Vec<Result<Outcome>>) {
        let mut leading = Leading {
            group: self,
            jobs,
            done: false,
        };
        let msgs: Vec<Vec<(&NewMessage, u32)>> = jobs
            .iter()
            .map(|j| j.msgs.iter().map(|(m, t)| (m, *t)).collect())
            .collect();
        let appends: Vec<Append<'_>> = jobs
            .iter()
            .zip(&msgs)
            .map(|(j, msgs)| Append {
                at: SessionRef::new(&j.tenant, &j.user, &j.session),
                msgs,
                now: j.now,
            })
            .collect();
        let mut results = run(&appends).into_iter();
        for job in jobs {
            job.set(
                results
                    .next()
                    .unwrap_or_else(|| Err(super::backend::not_run())),
            );
        }
        leading.done = true;
    }
}
