//! A guard against `SIGBUS` from a host-shared state file that someone truncated while it is
//! mapped (another process, `truncate(1)`, a clean-up script): touching a mapped page past the
//! new end of file raises `SIGBUS`, which would kill the host process (a Python or C server).
//!
//! Every mapped state file is registered here with its descriptor and full size. On `SIGBUS`
//! inside a registered mapping, the handler grows the file back to its size with `ftruncate`
//! (async-signal-safe) and returns: the faulting access is retried and now lands on a zero page
//! of the same shared file, so every process keeps counting together (the lost part of the
//! state reads as fresh). The next periodic check of the table then rewrites a zeroed header.
//! A `SIGBUS` anywhere else is passed to the handler that was installed before this one (or
//! to the default action), so the host's own crash handling (Rust's stack-overflow report,
//! Python's `faulthandler`) is unchanged.
//!
//! The handler reads only atomics from a fixed table and calls only `fstat`, `ftruncate`,
//! `sigaction` and `raise`, all async-signal-safe. It repairs only a file found shorter than its
//! mapping; any other fault in a mapping (e.g. tmpfs out of memory) takes the normal path.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 128;

struct Region {
    base: AtomicUsize,
    len: AtomicUsize,
    fd: AtomicI32,
    size: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Region = Region {
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    fd: AtomicI32::new(-1),
    size: AtomicU64::new(0),
};

static REGIONS: [Region; SLOTS] = [EMPTY; SLOTS];
/// Files grown back by the handler (for tests and the periodic check).
static REPAIRS: AtomicU64 = AtomicU64::new(0);

/// The handler that was installed before ours, set once before ours is installed.
static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// How many times a truncated state file was grown back.
pub(crate) fn repairs() -> u64 {
    REPAIRS.load(Ordering::Acquire)
}

/// Registers a mapping of `len` bytes at `base` backed by `fd`, a file of `size` bytes.
/// Returns the slot to pass to [`unregister`], or `None` when the table is full (the mapping
/// then works unguarded, as before).
pub(crate) fn register(base: usize, len: usize, fd: i32, size: u64) -> Option<usize> {
    install();
    for (i, r) in REGIONS.iter().enumerate() {
        if r.base
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            r.len.store(len, Ordering::Relaxed);
            r.fd.store(fd, Ordering::Relaxed);
            r.size.store(size, Ordering::Relaxed);
            r.base.store(base, Ordering::Release);
            return Some(i);
        }
    }
    tracing::warn!("too many host-shared rate-limit mappings; this one is not SIGBUS-guarded");
    None
}

/// Forgets a registration (before the mapping is unmapped and its descriptor closed).
pub(crate) fn unregister(slot: usize) {
    let r = &REGIONS[slot];
    r.fd.store(-1, Ordering::Relaxed);
    r.base.store(0, Ordering::Release);
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain sigaction calls with valid, zero-initialised structs.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous);
            let _ = PREVIOUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                handler;
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for r in &REGIONS {
        let base = r.base.load(Ordering::Acquire);
        if base == 0 || base == usize::MAX {
            continue;
        }
        if addr >= base && addr < base + r.len.load(Ordering::Relaxed) {
            let fd = r.fd.load(Ordering::Relaxed);
            let size = r.size.load(Ordering::Relaxed) as libc::off_t;
            // Only a truncation is ours to repair: a fault on a file of full size (e.g. tmpfs
            // out of memory) would recur forever after returning, so it goes to the previous
            // handler like any other fault.
            // SAFETY: fstat and ftruncate are async-signal-safe; a stale fd at worst fails.
            let truncated = fd >= 0
                && unsafe {
                    let mut st: libc::stat = std::mem::zeroed();
                    libc::fstat(fd, &mut st) == 0 && st.st_size < size
                };
            // SAFETY: as above.
            if truncated && unsafe { libc::ftruncate(fd, size) } == 0 {
                REPAIRS.fetch_add(1, Ordering::AcqRel);
                return;
            }
            break;
        }
    }
    // Not ours (or not repairable): hand it to whoever handled SIGBUS before us.
    let default_action: libc::sigaction = {
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags.
        unsafe { std::mem::zeroed() }
    };
    let previous = PREVIOUS.get().unwrap_or(&default_action);
    // SAFETY: calling the previous handler as it was registered (with or without SA_SIGINFO),
    // or restoring the default action: what the kernel would have done without us.
    unsafe {
        let action = previous.sa_sigaction;
        if action == libc::SIG_DFL || action == libc::SIG_IGN {
            // Restore the default action and re-raise: delivered when this handler returns
            // (a fault would also simply recur), it ends the process as it would have.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            libc::raise(sig);
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(action);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(action);
            f(sig);
        }
    }
}
