//! Host-shared rate-limit state: one memory-mapped file (normally under `/dev/shm`) that every
//! worker process on the machine maps, so all of them count against the same limits.
//!
//! Layout (all little-endian, fixed at creation): a header (magic, version, policy, geometry),
//! one lock word per stripe, then `stripes * slots_per_stripe` slots of four `u64`s:
//! `[key hash (0 = empty), a, b, c]` where GCRA uses `a = tat` and the sliding window
//! `a = window index, b = current count, c = previous count`.
//!
//! Invariants and choices:
//! - a key lives in the stripe chosen by its hash, so one stripe lock serialises every decision
//!   for that key across all processes (exactness: N processes against a limit L allow exactly
//!   L);
//! - keys are identified by a 64-bit hash with a fixed seed (the same in every process); two keys
//!   colliding would share a budget, with probability about n^2 / 2^65 for n live keys;
//! - a lock word holds the holder's pid; a waiter that finds the holder dead (killed while
//!   holding it) takes the lock over, so a crashed worker cannot wedge the others;
//! - a stripe that is full drops idle keys first, then the key closest to idle (counted);
//! - time is `CLOCK_MONOTONIC`, which all processes of the host share.

use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapMut;

use super::algo::State;
use super::policy::{Algorithm, Policy};
use crate::error::{RateLimitError, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"keelrl01");
const VERSION: u64 = 1;
const STRIPES: usize = 1024;
const HEADER_WORDS: usize = 8;
const SLOT_WORDS: usize = 4;
/// The fixed seed of the key hash: part of the file format.
const HASH_SEED: u64 = 0x6b65_656c_5f72_6c31;

/// A mapped state file.
pub(crate) struct SharedTable {
    map: MmapMut,
    slots_per_stripe: usize,
    hasher: foldhash::fast::FixedState,
}

/// This process's id, kept current across `fork()` by an atfork handler, so that a lock word
/// always names the process that really holds it (a child must not lock under its parent's pid,
/// or the parent's death would hand the child's lock to others) without a `getpid` per decision.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn refresh_pid_after_fork() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

fn current_pid() -> u32 {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        refresh_pid_after_fork();
        // SAFETY: registers a handler that only stores to an atomic, which is async-signal-safe
        // and valid in the child after fork.
        unsafe { libc::pthread_atfork(None, None, Some(refresh_pid_after_fork)) };
    });
    PID.load(Ordering::Relaxed)
}

fn shared_err(what: &str, e: impl std::fmt::Display) -> crate::error::Error {
    RateLimitError::Shared(format!("{what}: {e}")).into()
}

/// The state file under an exclusive `flock`, while it is created or checked. Dropping it
/// unlocks (then closes) the file; `unlock` hands the file back still open.
struct LockedFile(Option<File>);

impl LockedFile {
    fn exclusive(file: File) -> Result<Self> {
        // SAFETY: flock on a valid, open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(shared_err(
                "cannot lock the state file",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self(Some(file)))
    }

    fn file(&self) -> &File {
        self.0.as_ref().expect("present until unlock")
    }

    fn unlock(mut self) -> File {
        let file = self.0.take().expect("present until unlock");
        // SAFETY: unlocking a descriptor we locked and still own.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        file
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        if let Some(file) = &self.0 {
            // SAFETY: unlocking a descriptor we locked and still own.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl SharedTable {
    /// Opens (creating if needed) the state file at `path` for `policy` with room for about
    /// `max_keys` keys. Every process must use the same policy and key bound.
    pub(crate) fn open(path: &Path, policy: &Policy, max_keys: usize) -> Result<Self> {
        let slots_per_stripe = max_keys.div_ceil(STRIPES).max(4);
        let words = HEADER_WORDS + STRIPES / 2 + STRIPES * slots_per_stripe * SLOT_WORDS;
        let size = (words * 8) as u64;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| shared_err("cannot open the state file", e))?;
        check_owner(&file)?;
        let locked = LockedFile::exclusive(file)?;
        let len = locked
            .file()
            .metadata()
            .map_err(|e| shared_err("cannot stat the state file", e))?
            .len();
        let fresh = len == 0;
        if fresh {
            locked
                .file()
                .set_len(size)
                .map_err(|e| shared_err("cannot size the state file", e))?;
        } else if len != size {
            return Err(mismatch("size (key bound)"));
        }
        // SAFETY: the file is ours to map; other processes map it too, which is the point:
        // every access below goes through atomics on aligned words.
        let map = unsafe { MmapMut::map_mut(locked.file()) }
            .map_err(|e| shared_err("cannot map the state file", e))?;
        let table = Self {
            map,
            slots_per_stripe,
            hasher: foldhash::fast::FixedState::with_seed(HASH_SEED),
        };
        let expected = [
            VERSION,
            policy.algorithm() as u64,
            policy.limit(),
            policy.window_nanos(),
            STRIPES as u64,
            slots_per_stripe as u64,
        ];
        if fresh {
            for (i, v) in expected.iter().enumerate() {
                table.word(1 + i).store(*v, Ordering::Relaxed);
            }
            table.word(0).store(MAGIC, Ordering::Release);
        } else {
            if table.word(0).load(Ordering::Acquire) != MAGIC {
                return Err(mismatch("format (not a keel rate-limit state file)"));
            }
            for (i, v) in expected.iter().enumerate() {
                if table.word(1 + i).load(Ordering::Relaxed) != *v {
                    return Err(mismatch("policy (algorithm, limit, window) or key bound"));
                }
            }
        }
        let file = locked.unlock();
        // The mapping stays valid after the descriptor is closed.
        drop(file);
        Ok(table)
    }

    fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_ptr().cast::<AtomicU64>();
        // SAFETY: the map is page-aligned, its length a multiple of 8, and AtomicU64 has the
        // layout of u64; shared mutation only ever happens through these atomics.
        unsafe { std::slice::from_raw_parts(ptr, self.map.len() / 8) }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self.words()[i]
    }

    fn lock_word(&self, stripe: usize) -> &AtomicU32 {
        let base = self.map.as_ptr().cast::<AtomicU32>();
        // SAFETY: lock words follow the header, inside the map, 4-byte aligned.
        unsafe { &*base.add(HEADER_WORDS * 2 + stripe) }
    }

    fn lock(&self, stripe: usize) -> StripeGuard<'_> {
        let word = self.lock_word(stripe);
        let pid = current_pid();
        let mut spins = 0u32;
        loop {
            match word.compare_exchange_weak(0, pid, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return StripeGuard { word, pid },
                Err(holder) => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                        continue;
                    }
                    if spins.is_multiple_of(1024) && holder != 0 && !process_alive(holder) {
                        // The holder died holding the lock: take it over.
                        let taken = word.compare_exchange(
                            holder,
                            pid,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        );
                        if taken.is_ok() {
                            return StripeGuard { word, pid };
                        }
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Runs `f` on the state of `key` under its stripe lock; returns `f`'s result and whether a
    /// still-active key had to be dropped to make room.
    pub(crate) fn with_state<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> T,
    ) -> (T, bool) {
        let hash = self.hasher.hash_one(key).max(1);
        let stripe = (hash % STRIPES as u64) as usize;
        let _guard = self.lock(stripe);
        let words = self.words();
        let first = HEADER_WORDS + STRIPES / 2 + stripe * self.slots_per_stripe * SLOT_WORDS;
        let slot_at = |i: usize| &words[first + i * SLOT_WORDS..first + (i + 1) * SLOT_WORDS];
        let mut found = None;
        let mut empty = None;
        let mut victim = (u64::MAX, 0usize);
        for i in 0..self.slots_per_stripe {
            let s = slot_at(i);
            let k = s[0].load(Ordering::Relaxed);
            if k == hash {
                found = Some(i);
                break;
            }
            if k == 0 {
                empty.get_or_insert(i);
                continue;
            }
            let idle_at = read_state(s, policy.algorithm()).idle_at(policy);
            if idle_at <= now {
                empty.get_or_insert(i);
            } else if idle_at < victim.0 {
                victim = (idle_at, i);
            }
        }
        let (index, state, evicted) = match (found, empty) {
            (Some(i), _) => (i, read_state(slot_at(i), policy.algorithm()), false),
            (None, Some(i)) => (i, State::fresh(policy.algorithm()), false),
            (None, None) => (victim.1, State::fresh(policy.algorithm()), true),
        };
        let mut state = state;
        let out = f(&mut state);
        let s = slot_at(index);
        write_state(s, &state);
        s[0].store(hash, Ordering::Relaxed);
        (out, evicted)
    }

    /// Keys currently stored (active or not yet reclaimed).
    pub(crate) fn len(&self) -> u64 {
        let words = self.words();
        let first = HEADER_WORDS + STRIPES / 2;
        (0..STRIPES * self.slots_per_stripe)
            .filter(|i| words[first + i * SLOT_WORDS].load(Ordering::Relaxed) != 0)
            .count() as u64
    }

    /// Empties every slot.
    pub(crate) fn clear(&self) {
        for stripe in 0..STRIPES {
            let _guard = self.lock(stripe);
            let words = self.words();
            let first = HEADER_WORDS + STRIPES / 2 + stripe * self.slots_per_stripe * SLOT_WORDS;
            for w in &words[first..first + self.slots_per_stripe * SLOT_WORDS] {
                w.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The file must belong to this user and be private to it: in a shared directory such as
/// `/dev/shm`, another local user could otherwise pre-create it and reset or corrupt the counts.
fn check_owner(file: &File) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(|e| shared_err("cannot stat the state file", e))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(RateLimitError::Shared(
            "the state file must be owned by this user with mode 0600".into(),
        )
        .into());
    }
    Ok(())
}

fn mismatch(what: &str) -> crate::error::Error {
    RateLimitError::Shared(format!(
        "the state file was created with a different {what}; every process must use the same \
         settings (or remove the file)"
    ))
    .into()
}

struct StripeGuard<'a> {
    word: &'a AtomicU32,
    pid: u32,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // Only release a lock we still hold: if another process wrongly judged us dead and took
        // it over, clearing it would let a third one in alongside it.
        let _ = self
            .word
            .compare_exchange(self.pid, 0, Ordering::Release, Ordering::Relaxed);
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn read_state(s: &[AtomicU64], algorithm: Algorithm) -> State {
    let (a, b, c) = (
        s[1].load(Ordering::Relaxed),
        s[2].load(Ordering::Relaxed),
        s[3].load(Ordering::Relaxed),
    );
    match algorithm {
        Algorithm::Gcra => State::Gcra { tat: a },
        Algorithm::SlidingWindow => State::Window {
            idx: a,
            curr: b,
            prev: c,
        },
    }
}

fn write_state(s: &[AtomicU64], state: &State) {
    let (a, b, c) = match *state {
        State::Gcra { tat } => (tat, 0, 0),
        State::Window { idx, curr, prev } => (idx, curr, prev),
    };
    s[1].store(a, Ordering::Relaxed);
    s[2].store(b, Ordering::Relaxed);
    s[3].store(c, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::time::Duration;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("keel-rl-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_dead_lock_holder_is_taken_over() {
        let path = temp_path("dead-holder");
        let _ = std::fs::remove_file(&path);
        let policy = Policy::gcra("p", 5, Duration::from_secs(60)).unwrap();
        let table = SharedTable::open(&path, &policy, 100).unwrap();
        // A pid that surely exited: a child we already reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let hash = table.hasher.hash_one("victim").max(1);
        let stripe = (hash % STRIPES as u64) as usize;
        table.lock_word(stripe).store(dead, Ordering::Release);
        let (allowed, _) = table.with_state("victim", &policy, 1, |s| {
            *s = State::Gcra { tat: 7 };
            true
        });
        assert!(allowed);
        assert_eq!(table.lock_word(stripe).load(Ordering::Acquire), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn files_of_other_settings_or_formats_are_refused() {
        let path = temp_path("mismatch");
        let _ = std::fs::remove_file(&path);
        let policy = Policy::gcra("p", 5, Duration::from_secs(60)).unwrap();
        drop(SharedTable::open(&path, &policy, 100).unwrap());
        let other = Policy::gcra("p", 6, Duration::from_secs(60)).unwrap();
        for result in [
            SharedTable::open(&path, &other, 100),
            SharedTable::open(&path, &policy, 100_000),
        ] {
            let err = result.err().expect("must be refused");
            assert!(
                matches!(err, Error::RateLimit(RateLimitError::Shared(_))),
                "{err}"
            );
        }
        // Same size, but not our format.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, vec![0xAB; len as usize]).unwrap();
        let err = SharedTable::open(&path, &policy, 100)
            .err()
            .expect("garbage refused");
        assert!(err.to_string().contains("format"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
