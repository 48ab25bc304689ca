//! Host-shared rate-limit state: one memory-mapped file (normally under `/dev/shm`) that every
//! worker process on the machine maps, so all of them count against the same limits.
//!
//! File naming: the caller's `path` names a family; the file used is
//! `<path>.v2.<algorithm>.<limit>per<window>.<slots>keys` (e.g. `keel-api.v2.gcra.100per60s.
//! 102400keys`). A redeploy that changes the policy or the key bound therefore opens a new
//! file beside the old one: old workers keep counting on the old file, new workers on the new,
//! and nothing crash-loops. The header repeats the settings; a file whose header disagrees with
//! its name is refused with an error naming the file and both settings.
//!
//! Layout (format 2, little-endian): a header of 8 words (magic, version, algorithm, limit,
//! window, stripes, slots per stripe), one 64-bit lock word per stripe, then
//! `stripes * slots_per_stripe` slots of four `u64`s: `[key word, a, b, c]` where the key word
//! is the key's 63-bit hash (0 = empty) plus a top "limited" bit, GCRA uses `a = tat` and the
//! sliding window `a = window index, b = current count, c = previous count`.
//!
//! Invariants and choices:
//! - a key lives in the stripe chosen by its hash, so one stripe lock serialises every decision
//!   for that key across all processes (exactness: N processes against a limit L allow exactly
//!   L);
//! - keys are identified by a 63-bit hash with a fixed seed (the same in every process); two
//!   keys colliding would share a budget, with probability about n^2 / 2^64 for n live keys;
//! - a lock word is a lease: the holder's pid (high 32 bits, for diagnostics and to tell
//!   acquisitions apart) and the acquisition time in milliseconds of `CLOCK_MONOTONIC` (low 32
//!   bits). A decision holds a stripe for well under a microsecond, so a lock held longer than
//!   [`LEASE`] belongs to a holder that died (kill -9) or is frozen (SIGSTOP), and a waiter takes
//!   it over. Pids are never trusted for this: a pid may be reused, and a holder in another pid
//!   namespace (containers sharing `/dev/shm`) is invisible to `kill(pid, 0)`. Processes in
//!   different pid namespaces may therefore share a file, provided they share the host's
//!   `CLOCK_MONOTONIC` (containers do; separate machines or VMs do not). A waiter gives up after
//!   [`MAX_WAIT`] with [`RateLimitError::SharedBusy`] instead of spinning forever;
//! - a stripe that is full drops idle keys first, then, among active keys, those never limited
//!   before those recently denied ("limited" bit, kept until the key is idle), each group closest
//!   to idle first (counted): a flood of fresh keys cannot reset a victim's exhausted bucket;
//! - every [`CHECK_INTERVAL_NANOS`] of decision time (amortised: no system call per decision),
//!   one decision checks the file: if the path now names another file or none (removed,
//!   replaced), the table re-attaches to the file at the path (creating it), so workers never
//!   count alone on an orphaned file; a file found truncated is grown back and its header
//!   rewritten. Between checks, a truncated file cannot crash the process: see [`super::sigbus`];
//! - time is `CLOCK_MONOTONIC`, which all processes of the host share.

use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use memmap2::MmapMut;

use super::algo::State;
use super::policy::{Algorithm, Policy};
use super::sigbus;
use crate::clock::{Clock, HostMonotonicClock};
use crate::error::{RateLimitError, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"keelrl02");
const VERSION: u64 = 2;
const STRIPES: usize = 1024;
const HEADER_WORDS: usize = 8;
const SLOT_WORDS: usize = 4;
/// The fixed seed of the key hash: part of the file format.
const HASH_SEED: u64 = 0x6b65_656c_5f72_6c31;
/// Top bit of a key word: the key was denied since it was last idle.
const LIMITED: u64 = 1 << 63;

/// A stripe lock held longer than this is presumed abandoned and taken over.
pub const LEASE: Duration = Duration::from_millis(500);
/// The longest a decision waits for a stripe lock before failing with
/// [`RateLimitError::SharedBusy`].
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// How often (in decision time) one decision re-checks the state file's identity and size.
pub const CHECK_INTERVAL_NANOS: u64 = 5_000_000;
/// The largest key bound of a host-shared limiter (the file takes 32 bytes per key slot).
pub const MAX_SHARED_KEYS: usize = 1 << 24;

/// One mapping of one state file, with its descriptor kept open for `fstat` and the SIGBUS
/// guard.
struct Mapping {
    map: MmapMut,
    file: File,
    dev: u64,
    ino: u64,
    guard: Option<usize>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(slot) = self.guard {
            sigbus::unregister(slot);
        }
    }
}

fn words_of(map: &MmapMut) -> &[AtomicU64] {
    let ptr = map.as_ptr().cast::<AtomicU64>();
    // SAFETY: the map is page-aligned, its length a multiple of 8, and AtomicU64 has the
    // layout of u64; shared mutation only ever happens through these atomics.
    unsafe { std::slice::from_raw_parts(ptr, map.len() / 8) }
}

impl Mapping {
    fn words(&self) -> &[AtomicU64] {
        words_of(&self.map)
    }

    fn lock_word(&self, stripe: usize) -> &AtomicU64 {
        &self.words()[HEADER_WORDS + stripe]
    }
}

/// A mapped state file, re-attached when the file at its path changes.
pub(crate) struct SharedTable {
    /// The current mapping (a leaked `Box`); replaced ones move to `retired`.
    current: AtomicPtr<Mapping>,
    /// Mappings replaced by a re-attach: other threads may still be inside a decision on them,
    /// so they live until the table is dropped (a re-attach is rare: the file was removed).
    #[allow(clippy::vec_box)] // boxed: other threads hold references into them
    retired: Mutex<Vec<Box<Mapping>>>,
    path: PathBuf,
    header: [u64; 6],
    size: u64,
    slots_per_stripe: usize,
    hasher: foldhash::fast::FixedState,
    next_check: AtomicU64,
    /// [`sigbus::repairs`] when last seen.
    seen_repairs: AtomicU64,
    lease_ms: u32,
    max_wait_nanos: u64,
}

// SAFETY: `current` points to a `Mapping` owned by the table (freed only in `Drop`, which has
// exclusive access); every shared access to mapped memory goes through atomics.
unsafe impl Send for SharedTable {}
// SAFETY: as above.
unsafe impl Sync for SharedTable {}

impl Drop for SharedTable {
    fn drop(&mut self) {
        let current = *self.current.get_mut();
        // SAFETY: `current` came from `Box::into_raw` and nobody else can use it any more.
        drop(unsafe { Box::from_raw(current) });
    }
}

/// This process's id, kept current across `fork()` by an atfork handler, so that a lock word
/// always names the process that really holds it, without a `getpid` per decision.
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

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

fn host_now() -> u64 {
    super::algo::nanos(HostMonotonicClock.now())
}

fn shared_err(path: &Path, what: &str, e: impl std::fmt::Display) -> crate::error::Error {
    RateLimitError::Shared(format!("{what} {}: {e}", path.display())).into()
}

/// The state file under an exclusive `flock`, while it is created, checked or repaired.
/// Dropping it unlocks (the file stays open with its owner).
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<Self> {
        // SAFETY: flock on a valid, open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(shared_err(
                path,
                "cannot lock the state file",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we locked and still own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `60s`, `1500ms` or `1500001ns`: the shortest exact spelling of a window.
fn window_token(nanos: u64) -> String {
    if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Human form of a header's settings, for error messages.
fn describe(header: &[u64; 6]) -> String {
    let algorithm = match header[1] {
        0 => "gcra".to_owned(),
        1 => "sliding_window".to_owned(),
        other => format!("algorithm #{other}"),
    };
    format!(
        "format {}, {algorithm}, limit {} per {}, {} keys",
        header[0],
        header[2],
        window_token(header[3]),
        header[4].saturating_mul(header[5])
    )
}

impl SharedTable {
    /// Opens (creating if needed) the state file of `policy` and the key bound `max_keys`
    /// in the family named by `path` (see the module docs for the file name).
    pub(crate) fn open(path: &Path, policy: &Policy, max_keys: usize) -> Result<Self> {
        if max_keys == 0 || max_keys > MAX_SHARED_KEYS {
            return Err(crate::error::Error::InvalidArgument(format!(
                "max_keys must be between 1 and {MAX_SHARED_KEYS} for a host-shared limiter \
                 (got {max_keys})"
            )));
        }
        let slots_per_stripe = max_keys.div_ceil(STRIPES).max(4);
        let words = HEADER_WORDS + STRIPES + STRIPES * slots_per_stripe * SLOT_WORDS;
        let size = (words * 8) as u64;
        let header = [
            VERSION,
            policy.algorithm() as u64,
            policy.limit(),
            policy.window_nanos(),
            STRIPES as u64,
            slots_per_stripe as u64,
        ];
        let path = state_path(path, &header)?;
        let mapping = attach(&path, &header, size)?;
        Ok(Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(mapping))),
            retired: Mutex::new(Vec::new()),
            path,
            header,
            size,
            slots_per_stripe,
            hasher: foldhash::fast::FixedState::with_seed(HASH_SEED),
            next_check: AtomicU64::new(host_now().saturating_add(CHECK_INTERVAL_NANOS)),
            seen_repairs: AtomicU64::new(sigbus::repairs()),
            lease_ms: LEASE.as_millis() as u32,
            max_wait_nanos: MAX_WAIT.as_nanos() as u64,
        })
    }

    /// The state file in use.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn mapping(&self) -> &Mapping {
        // SAFETY: `current` always points to a live mapping; replaced ones are kept in
        // `retired` until the table is dropped, so the reference cannot dangle.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Amortised file check: at most one decision per [`CHECK_INTERVAL_NANOS`] pays for it.
    fn maybe_check(&self, now: u64) {
        let due = self.next_check.load(Ordering::Relaxed);
        let repairs = sigbus::repairs();
        if now < due && repairs == self.seen_repairs.load(Ordering::Relaxed) {
            return;
        }
        if repairs != self.seen_repairs.swap(repairs, Ordering::Relaxed) {
            // The SIGBUS guard grew a truncated file back: rewrite its header now.
            self.check_file();
        }
        if now < due {
            return;
        }
        let next = now.saturating_add(CHECK_INTERVAL_NANOS);
        if self
            .next_check
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.check_file();
        }
    }

    /// Re-attaches when the path names another file (or none), and repairs a truncated file.
    /// Failures are logged and retried at the next check: the current mapping keeps working.
    pub(crate) fn check_file(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.mapping();
        let replaced = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => meta.dev() != m.dev || meta.ino() != m.ino,
            Err(_) => true,
        };
        if replaced {
            match attach(&self.path, &self.header, self.size) {
                Ok(fresh) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        "host-shared rate-limit state file was removed or replaced; re-attached"
                    );
                    let old = self
                        .current
                        .swap(Box::into_raw(Box::new(fresh)), Ordering::AcqRel);
                    // SAFETY: `old` came from `Box::into_raw`; it stays alive in `retired`.
                    retired.push(unsafe { Box::from_raw(old) });
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "host-shared rate-limit state file vanished and cannot be re-created"
                ),
            }
            return;
        }
        let damaged = m.file.metadata().map(|meta| meta.len()).ok() != Some(self.size)
            || m.words()[0].load(Ordering::Acquire) != MAGIC;
        if damaged {
            if let Err(e) = repair(m, &self.path, &self.header, self.size) {
                tracing::warn!(error = %e, "host-shared rate-limit state file cannot be repaired");
            }
        }
    }

    #[cfg(test)]
    fn set_timeouts(&mut self, lease: Duration, max_wait: Duration) {
        self.lease_ms = lease.as_millis() as u32;
        self.max_wait_nanos = max_wait.as_nanos() as u64;
    }

    fn lock<'m>(&self, m: &'m Mapping, stripe: usize, now: u64) -> Result<StripeGuard<'m>> {
        let word = m.lock_word(stripe);
        let pid = u64::from(current_pid()) << 32;
        let stamp = |t: u64| pid | u64::from((t / 1_000_000) as u32);
        let mine = stamp(now);
        if word
            .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(StripeGuard { word, mine });
        }
        let start = host_now();
        let mut spins = 0u32;
        loop {
            let held = word.load(Ordering::Relaxed);
            let t = if spins < 64 { start } else { host_now() };
            if held == 0 {
                let mine = stamp(t);
                if word
                    .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(StripeGuard { word, mine });
                }
                continue;
            }
            spins = spins.saturating_add(1);
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            // Signed: a holder may have stamped a millisecond later than our clock read.
            let held_ms = ((t / 1_000_000) as u32).wrapping_sub(held as u32) as i32;
            if i64::from(held_ms) > i64::from(self.lease_ms) {
                let mine = stamp(t);
                if word
                    .compare_exchange(held, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    tracing::warn!(
                        holder_pid = held >> 32,
                        held_ms,
                        "host-shared rate-limit stripe lock outlived its lease; taken over"
                    );
                    return Ok(StripeGuard { word, mine });
                }
                continue;
            }
            let waited = t.saturating_sub(start);
            if waited > self.max_wait_nanos {
                return Err(RateLimitError::SharedBusy {
                    path: self.path.display().to_string(),
                    waited_ms: waited / 1_000_000,
                    holder_pid: (held >> 32) as u32,
                }
                .into());
            }
            std::thread::yield_now();
        }
    }

    /// Runs `f` on the state of `key` under its stripe lock. `f` returns its result and whether
    /// the request was denied (which marks the key as limited until it is idle). Returns `f`'s
    /// result and whether a still-active key had to be dropped to make room.
    pub(crate) fn with_state<T>(
        &self,
        key: &str,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<(T, bool)> {
        self.maybe_check(now);
        let hash = (self.hasher.hash_one(key) >> 1).max(1);
        let stripe = (hash % STRIPES as u64) as usize;
        let m = self.mapping();
        let _guard = self.lock(m, stripe, now)?;
        let words = m.words();
        let first = HEADER_WORDS + STRIPES + stripe * self.slots_per_stripe * SLOT_WORDS;
        let slot_at = |i: usize| &words[first + i * SLOT_WORDS..first + (i + 1) * SLOT_WORDS];
        let mut found = None;
        let mut empty = None;
        // Eviction order: never-limited keys before limited ones, each closest to idle first.
        let mut victim = ((true, u64::MAX), 0usize);
        for i in 0..self.slots_per_stripe {
            let s = slot_at(i);
            let k = s[0].load(Ordering::Relaxed);
            if k & !LIMITED == hash {
                found = Some((i, k & LIMITED != 0));
                break;
            }
            if k == 0 {
                empty.get_or_insert(i);
                continue;
            }
            let idle_at = read_state(s, policy.algorithm()).idle_at(policy);
            let rank = (k & LIMITED != 0, idle_at);
            if idle_at <= now {
                empty.get_or_insert(i);
            } else if rank < victim.0 {
                victim = (rank, i);
            }
        }
        let (index, state, limited, evicted) = match (found, empty) {
            (Some((i, limited)), _) => {
                let state = read_state(slot_at(i), policy.algorithm());
                // A key idle again starts over as never limited.
                let limited = limited && state.idle_at(policy) > now;
                (i, state, limited, false)
            }
            (None, Some(i)) => (i, State::fresh(policy.algorithm()), false, false),
            (None, None) => (victim.1, State::fresh(policy.algorithm()), false, true),
        };
        let mut state = state;
        let (out, denied) = f(&mut state);
        let s = slot_at(index);
        write_state(s, &state);
        let flag = if limited || denied { LIMITED } else { 0 };
        s[0].store(hash | flag, Ordering::Relaxed);
        Ok((out, evicted))
    }

    /// Keys currently stored (active or not yet reclaimed).
    pub(crate) fn len(&self) -> u64 {
        let words = self.mapping().words();
        let first = HEADER_WORDS + STRIPES;
        (0..STRIPES * self.slots_per_stripe)
            .filter(|i| words[first + i * SLOT_WORDS].load(Ordering::Relaxed) != 0)
            .count() as u64
    }

    /// Empties every slot.
    pub(crate) fn clear(&self) -> Result<()> {
        let m = self.mapping();
        for stripe in 0..STRIPES {
            let _guard = self.lock(m, stripe, host_now())?;
            let words = m.words();
            let first = HEADER_WORDS + STRIPES + stripe * self.slots_per_stripe * SLOT_WORDS;
            for w in &words[first..first + self.slots_per_stripe * SLOT_WORDS] {
                w.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// `<path>.v2.<algorithm>.<limit>per<window>.<slots>keys`.
fn state_path(path: &Path, header: &[u64; 6]) -> Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(shared_err(
            path,
            "the state path must name a file, not a folder:",
            "no file name",
        ));
    };
    let algorithm = if header[1] == Algorithm::Gcra as u64 {
        "gcra"
    } else {
        "sliding_window"
    };
    let mut name = name.to_os_string();
    name.push(format!(
        ".v{}.{algorithm}.{}per{}.{}keys",
        header[0],
        header[2],
        window_token(header[3]),
        header[4] * header[5]
    ));
    Ok(path.with_file_name(name))
}

/// Opens (creating if needed), checks and maps the state file at `path`.
fn attach(path: &Path, header: &[u64; 6], size: u64) -> Result<Mapping> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let hint = match path.parent() {
                Some(dir) if e.kind() == std::io::ErrorKind::NotFound => {
                    format!(" (does the folder {} exist?)", dir.display())
                }
                _ => String::new(),
            };
            shared_err(path, "cannot open the state file", format!("{e}{hint}"))
        })?;
    check_owner(&file, path)?;
    let meta = file
        .metadata()
        .map_err(|e| shared_err(path, "cannot stat the state file", e))?;
    let lock = Flock::exclusive(&file, path)?;
    let len = file
        .metadata()
        .map_err(|e| shared_err(path, "cannot stat the state file", e))?
        .len();
    // Never map past the end of the file (SIGBUS): size it first. A file of another size under
    // our exact name was truncated or damaged: start it over.
    if len != size {
        if len != 0 {
            tracing::warn!(
                path = %path.display(),
                len,
                size,
                "host-shared rate-limit state file had the wrong size; re-initialised"
            );
            file.set_len(0)
                .map_err(|e| shared_err(path, "cannot size the state file", e))?;
        }
        file.set_len(size)
            .map_err(|e| shared_err(path, "cannot size the state file", e))?;
        // Reserve the pages now (tmpfs allocates them lazily): running out of memory then is an
        // error here, naming the file, instead of a SIGBUS at some later decision.
        #[cfg(target_os = "linux")]
        {
            // SAFETY: posix_fallocate on a valid descriptor, within the file's size.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
            if rc == libc::ENOSPC {
                return Err(shared_err(
                    path,
                    "not enough space for the state file",
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
        }
    }
    // SAFETY: the file is ours to map and has `size` bytes; other processes map it too, which
    // is the point: every access goes through atomics on aligned words. A later truncation
    // by someone else is caught by the SIGBUS guard.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len(size as usize)
            .map_mut(&file)
    }
    .map_err(|e| shared_err(path, "cannot map the state file", e))?;
    let guard = sigbus::register(map.as_ptr() as usize, map.len(), file.as_raw_fd(), size);
    let checked = check_header(words_of(&map), path, header);
    drop(lock);
    // Built even on error, so that dropping it unregisters the guard before the unmap.
    let mapping = Mapping {
        map,
        file,
        dev: meta.dev(),
        ino: meta.ino(),
        guard,
    };
    checked.map(|()| mapping)
}

/// Grows a truncated file back and rewrites a lost header (the slots' lost part reads as
/// fresh state).
fn repair(m: &Mapping, path: &Path, header: &[u64; 6], size: u64) -> Result<()> {
    let file = &m.file;
    let _lock = Flock::exclusive(file, path)?;
    let len = file
        .metadata()
        .map_err(|e| shared_err(path, "cannot stat the state file", e))?
        .len();
    if len != size {
        file.set_len(size)
            .map_err(|e| shared_err(path, "cannot size the state file", e))?;
    }
    tracing::warn!(path = %path.display(), "host-shared rate-limit state file was truncated; repaired");
    check_header(m.words(), path, header)
}

/// Writes the header of a zeroed (new or truncated) file, or checks an existing one.
/// Call with the file's `flock` held.
fn check_header(words: &[AtomicU64], path: &Path, expected: &[u64; 6]) -> Result<()> {
    match words[0].load(Ordering::Acquire) {
        0 => {
            for (i, v) in expected.iter().enumerate() {
                words[1 + i].store(*v, Ordering::Relaxed);
            }
            words[0].store(MAGIC, Ordering::Release);
            Ok(())
        }
        MAGIC => {
            let mut found = [0u64; 6];
            for (i, v) in found.iter_mut().enumerate() {
                *v = words[1 + i].load(Ordering::Relaxed);
            }
            if found == *expected {
                return Ok(());
            }
            Err(RateLimitError::Shared(format!(
                "the state file {} was created for {} but this process wants {}; its name \
                 should have kept them apart: remove the file",
                path.display(),
                describe(&found),
                describe(expected)
            ))
            .into())
        }
        _ => Err(RateLimitError::Shared(format!(
            "{} is not a keel rate-limit state file (format {}); remove it or choose another path",
            path.display(),
            VERSION
        ))
        .into()),
    }
}

/// The file must belong to this user and be private to it: in a shared directory such as
/// `/dev/shm`, another local user could otherwise pre-create it and reset or corrupt the counts.
fn check_owner(file: &File, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| shared_err(path, "cannot stat the state file", e))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(RateLimitError::Shared(format!(
            "the state file {} must be owned by this user with mode 0600",
            path.display()
        ))
        .into());
    }
    Ok(())
}

struct StripeGuard<'a> {
    word: &'a AtomicU64,
    mine: u64,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // Only release a lock we still hold: if another process took it over after our lease
        // ran out, clearing it would let a third one in alongside it.
        let _ = self
            .word
            .compare_exchange(self.mine, 0, Ordering::Release, Ordering::Relaxed);
    }
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
    use std::sync::Arc;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("keel-rl-test-{}-{name}", std::process::id()))
    }

    fn policy() -> Policy {
        Policy::gcra("p", 5, Duration::from_secs(60)).unwrap()
    }

    fn stripe_of(table: &SharedTable, key: &str) -> usize {
        ((table.hasher.hash_one(key) >> 1).max(1) % STRIPES as u64) as usize
    }

    fn decide(table: &SharedTable, key: &str) -> Result<bool> {
        let policy = policy();
        let now = host_now();
        table
            .with_state(key, &policy, now, |s| {
                let o = super::super::algo::apply(&policy, s, now, 1);
                (o.allowed, !o.allowed)
            })
            .map(|(allowed, _)| allowed)
    }

    /// A lock word naming a live process that is not holding it (pid reuse after a kill -9, or
    /// a holder in another pid namespace): the lease runs out and the lock is taken over,
    /// instead of the waiter spinning forever.
    #[test]
    fn a_lock_word_of_a_live_unrelated_pid_is_taken_over_after_its_lease() {
        let path = temp_path("live-holder");
        let table = Arc::new(SharedTable::open(&path, &policy(), 100).unwrap());
        let stripe = stripe_of(&table, "victim");
        // Our own pid (alive) with a stamp taken just now: only the lease can free it.
        let stamp =
            (u64::from(std::process::id()) << 32) | u64::from((host_now() / 1_000_000) as u32);
        table
            .mapping()
            .lock_word(stripe)
            .store(stamp, Ordering::Release);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = table.clone();
        let started = host_now();
        std::thread::spawn(move || {
            let _ = tx.send(decide(&t, "victim"));
        });
        let outcome = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("hit() spins forever on a lock word naming a live pid");
        assert!(outcome.unwrap());
        let waited = Duration::from_nanos(host_now() - started);
        assert!(waited >= LEASE - Duration::from_millis(5), "{waited:?}");
        assert_eq!(table.mapping().lock_word(stripe).load(Ordering::Acquire), 0);
        std::fs::remove_file(table.path()).unwrap();
    }

    /// A lock that someone keeps renewing (so its lease never runs out) makes the decision
    /// fail with a typed error after the bounded wait.
    #[test]
    fn a_lock_kept_busy_fails_with_a_typed_error_after_the_bounded_wait() {
        let path = temp_path("busy");
        let mut table = SharedTable::open(&path, &policy(), 100).unwrap();
        table.set_timeouts(Duration::from_secs(10), Duration::from_millis(50));
        let table = Arc::new(table);
        let stripe = stripe_of(&table, "victim");
        let stamp = (1u64 << 32) | u64::from((host_now() / 1_000_000) as u32);
        table
            .mapping()
            .lock_word(stripe)
            .store(stamp, Ordering::Release);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, s) = (table.clone(), stop.clone());
        let renewer = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let stamp = (1u64 << 32) | u64::from((host_now() / 1_000_000) as u32);
                t.mapping()
                    .lock_word(stripe)
                    .store(stamp, Ordering::Release);
                std::thread::yield_now();
            }
        });
        let err = decide(&table, "victim").unwrap_err();
        stop.store(true, Ordering::Relaxed);
        renewer.join().unwrap();
        assert!(
            matches!(
                err,
                Error::RateLimit(RateLimitError::SharedBusy { waited_ms, holder_pid: 1, .. })
                    if waited_ms >= 50
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&table.path().display().to_string()),
            "{err}"
        );
        std::fs::remove_file(table.path()).unwrap();
    }

    #[test]
    fn a_dead_lock_holder_is_taken_over() {
        let path = temp_path("dead-holder");
        let table = SharedTable::open(&path, &policy(), 100).unwrap();
        let stripe = stripe_of(&table, "victim");
        // A stamp long past its lease (the pid does not matter).
        let stale =
            (12345u64 << 32) | u64::from(((host_now() / 1_000_000) as u32).wrapping_sub(60_000));
        table
            .mapping()
            .lock_word(stripe)
            .store(stale, Ordering::Release);
        assert!(decide(&table, "victim").unwrap());
        assert_eq!(table.mapping().lock_word(stripe).load(Ordering::Acquire), 0);
        std::fs::remove_file(table.path()).unwrap();
    }

    #[test]
    fn files_whose_header_disagrees_with_their_name_are_refused_naming_both() {
        let path = temp_path("mismatch");
        let table = SharedTable::open(&path, &policy(), 100).unwrap();
        let file = table.path().to_owned();
        // Another policy's header under this policy's name.
        table.mapping().words()[3].store(6, Ordering::Relaxed);
        drop(table);
        let err = SharedTable::open(&path, &policy(), 100)
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            matches!(err, Error::RateLimit(RateLimitError::Shared(_))),
            "{err}"
        );
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(
            msg.contains("limit 6 per 60s") && msg.contains("limit 5 per 60s"),
            "{msg}"
        );
        // Same size, but not our format.
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::write(&file, vec![0xAB; len as usize]).unwrap();
        let err = SharedTable::open(&path, &policy(), 100)
            .err()
            .expect("garbage refused");
        assert!(
            err.to_string().contains("not a keel rate-limit state file"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn file_names_carry_the_policy_and_the_key_bound() {
        let header = |alg: Algorithm, limit, window: u64, slots| {
            [VERSION, alg as u64, limit, window, STRIPES as u64, slots]
        };
        let base = Path::new("/dev/shm/keel-api");
        let cases = [
            (
                header(Algorithm::Gcra, 100, 60_000_000_000, 4),
                "keel-api.v2.gcra.100per60s.4096keys",
            ),
            (
                header(Algorithm::SlidingWindow, 7, 1_500_000_000, 98),
                "keel-api.v2.sliding_window.7per1500ms.100352keys",
            ),
            (
                header(Algorithm::Gcra, 1, 1_000_001, 4),
                "keel-api.v2.gcra.1per1000001ns.4096keys",
            ),
        ];
        for (h, name) in cases {
            assert_eq!(state_path(base, &h).unwrap(), base.with_file_name(name));
        }
        assert!(state_path(Path::new("/"), &cases[0].0).is_err());
    }

    #[test]
    fn huge_key_bounds_are_refused_naming_the_value() {
        for max_keys in [0, MAX_SHARED_KEYS + 1, usize::MAX] {
            let err = SharedTable::open(&temp_path("huge"), &policy(), max_keys)
                .err()
                .expect("refused");
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(&max_keys.to_string()), "{err}");
        }
    }
}
