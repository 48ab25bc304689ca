//! Host-shared rate limiting across real processes: 4 processes hammering one key against a
//! limit of L allow exactly L in total. The test binary re-executes itself as the workers, which
//! wait at a start barrier (files in a shared folder) and then make enough decisions that they
//! certainly run at the same time; the test checks that their run times overlapped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use keel::clock::{Clock, HostMonotonicClock};
use keel::ratelimit::{Policy, RateLimiter};

const LIMIT: u64 = 500;
const WORKERS: usize = 4;
const ATTEMPTS: usize = 50_000;
const CHILD_ENV: &str = "KEEL_RL_SHARED_CHILD";

fn policy() -> Policy {
    Policy::gcra("shared", LIMIT, Duration::from_secs(3600)).unwrap()
}

fn now_nanos() -> u128 {
    HostMonotonicClock.now().as_nanos()
}

/// The worker: runs only inside a child process started by the test below (ignored, so that it
/// is never reported as a passing test of its own; the parent runs it with `--ignored`).
#[test]
#[ignore = "a worker process of four_processes_allow_exactly_the_limit"]
fn worker_process() {
    let dir = std::env::var(CHILD_ENV)
        .expect("a worker process: run by four_processes_allow_exactly_the_limit, not alone");
    let dir = PathBuf::from(dir);
    let id = std::env::var("KEEL_RL_WORKER").unwrap();
    let limiter = RateLimiter::host_shared(policy(), dir.join("state"), 10_000).unwrap();
    // Start barrier: announce readiness, then wait for the parent's go.
    std::fs::write(dir.join(format!("ready-{id}")), b"").unwrap();
    while !dir.join("go").exists() {
        std::thread::yield_now();
    }
    let start = now_nanos();
    let allowed = (0..ATTEMPTS)
        .filter(|_| limiter.check("tenant-1", 1).unwrap().allowed)
        .count();
    let end = now_nanos();
    println!("ALLOWED={allowed} START={start} END={end}");
}

fn field(text: &str, name: &str) -> u128 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in: {text}"))
        .parse()
        .unwrap()
}

#[test]
fn four_processes_allow_exactly_the_limit() {
    let dir = temp_path("4proc");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "worker_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &dir)
                .env("KEEL_RL_WORKER", i.to_string())
                .output_async()
        })
        .collect();
    let deadline = now_nanos() + Duration::from_secs(60).as_nanos();
    while (0..WORKERS).any(|i| !dir.join(format!("ready-{i}")).exists()) {
        assert!(now_nanos() < deadline, "workers never got ready");
        std::thread::yield_now();
    }
    std::fs::write(dir.join("go"), b"").unwrap();
    let mut total = 0;
    let mut spans = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("ALLOWED="))
            .unwrap_or_else(|| panic!("no ALLOWED line in: {text}"));
        total += field(line, "ALLOWED=") as u64;
        spans.push((field(line, "START="), field(line, "END=")));
    }
    // On a loaded machine one worker may be scheduled late, but some must run together.
    let overlapping = spans
        .iter()
        .filter(|(s, e)| spans.iter().filter(|(s2, e2)| s2 < e && s < e2).count() > 1)
        .count();
    assert!(
        overlapping >= 2,
        "the workers did not run at the same time ({spans:?}): the test proves nothing"
    );
    assert_eq!(total, LIMIT, "{WORKERS} processes x {ATTEMPTS} attempts");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 1000 threads of one process on one host-shared limiter (the stripe lock, not a mutex,
/// serialises them) allow exactly the limit.
#[test]
fn thousand_threads_on_a_host_shared_limiter_allow_exactly_the_limit() {
    let base = temp_path("1000threads");
    remove_state_files(&base);
    let limiter = Arc::new(RateLimiter::host_shared(policy(), &base, 10_000).unwrap());
    let barrier = Arc::new(Barrier::new(1000));
    let threads: Vec<_> = (0..1000)
        .map(|_| {
            let (limiter, barrier) = (limiter.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..20)
                    .filter(|_| limiter.check("tenant-1", 1).unwrap().allowed)
                    .count() as u64
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, LIMIT);
    remove_state_files(&base);
}

/// A state file of format 1 (written by keel before per-policy file names, see
/// tests/fixtures/ratelimit_v1/generate.py) at the bare path: new workers start beside it and
/// leave it untouched, so old workers still running on it keep their counts.
#[test]
fn a_version_1_file_at_the_path_is_left_alone() {
    let base = temp_path("v1");
    remove_state_files(&base);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ratelimit_v1/state.bin");
    let v1 = std::fs::read(&fixture).unwrap();
    std::fs::write(&base, &v1).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let limiter = RateLimiter::host_shared(
        Policy::gcra("default", 3, Duration::from_secs(60)).unwrap(),
        &base,
        100,
    )
    .unwrap();
    assert_ne!(limiter.shared_path().unwrap(), base);
    assert_eq!(
        (0..4)
            .filter(|_| limiter.check("k", 1).unwrap().allowed)
            .count(),
        3
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        v1,
        "the old workers' file was changed"
    );
    remove_state_files(&base);
}

trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("keel-rl-it-{}-{name}", std::process::id()))
}

fn remove_state_files(base: &std::path::Path) {
    let dir = base.parent().unwrap();
    let stem = base.file_name().unwrap().to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == stem || name.starts_with(&format!("{stem}.")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The one state file that `host_shared(…, base, …)` created (whatever its naming rule).
fn state_file(base: &std::path::Path) -> std::path::PathBuf {
    let dir = base.parent().unwrap();
    let stem = base.file_name().unwrap().to_string_lossy().into_owned();
    let found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n == stem.as_str() || n.starts_with(&format!("{stem}."))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// A redeploy with a changed policy opens its own state beside the old workers' file: both
/// generations keep working (rolling deploy), each on its own budget.
#[test]
fn a_changed_policy_gets_its_own_state_file() {
    let base = temp_path("redeploy");
    remove_state_files(&base);
    let old = RateLimiter::host_shared(
        Policy::gcra("api", 3, Duration::from_secs(60)).unwrap(),
        &base,
        100,
    )
    .unwrap();
    let new = RateLimiter::host_shared(
        Policy::gcra("api", 5, Duration::from_secs(60)).unwrap(),
        &base,
        100,
    )
    .expect("a new policy must not crash-loop the new workers");
    let other_bound = RateLimiter::host_shared(
        Policy::gcra("api", 5, Duration::from_secs(60)).unwrap(),
        &base,
        5000,
    )
    .expect("a new key bound must not either");
    assert_eq!(
        (0..4)
            .filter(|_| old.check("k", 1).unwrap().allowed)
            .count(),
        3
    );
    assert_eq!(
        (0..6)
            .filter(|_| new.check("k", 1).unwrap().allowed)
            .count(),
        5
    );
    assert!(other_bound.check("k", 1).unwrap().allowed);
    remove_state_files(&base);
}

/// A state file removed (or replaced) while workers run: they re-attach to the file now at the
/// path instead of counting alone on the orphaned one (which would double the limit).
#[test]
fn a_removed_state_file_is_noticed_and_re_attached() {
    let base = temp_path("removed");
    remove_state_files(&base);
    let policy = || Policy::gcra("api", 3, Duration::from_secs(3600)).unwrap();
    let a = RateLimiter::host_shared(policy(), &base, 100).unwrap();
    assert!(a.check("warm", 1).unwrap().allowed);
    std::fs::remove_file(state_file(&base)).unwrap();
    let b = RateLimiter::host_shared(policy(), &base, 100).unwrap();
    // Let `a` make decisions for longer than its check interval (the host monotonic clock).
    let clock = keel::clock::HostMonotonicClock;
    use keel::clock::Clock;
    let start = clock.now();
    while clock.now() - start < Duration::from_millis(50) {
        a.check("tick", 1).unwrap();
    }
    assert_eq!(
        (0..3).filter(|_| b.check("k", 1).unwrap().allowed).count(),
        3
    );
    assert!(
        !a.check("k", 1).unwrap().allowed,
        "`a` still counts on the removed file: the limit doubled"
    );
    remove_state_files(&base);
}

/// The worker of `truncating_the_file_never_crashes`: runs only in a child process (ignored, so
/// that it is never reported as a passing test of its own; the parent runs it with `--ignored`).
#[test]
#[ignore = "a worker process of truncating_the_file_never_crashes"]
fn truncation_worker() {
    let path = std::env::var("KEEL_RL_TRUNCATE_CHILD")
        .expect("a worker process: run by truncating_the_file_never_crashes, not alone");
    let base = std::path::PathBuf::from(path);
    let policy = || Policy::gcra("api", 3, Duration::from_secs(3600)).unwrap();
    let a = RateLimiter::host_shared(policy(), &base, 100).unwrap();
    assert!(a.check("k", 1).unwrap().allowed);
    let file = state_file(&base);
    // Truncated under a live limiter: its next decisions must not crash the process.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    for i in 0..2000 {
        a.check(&format!("key-{i}"), 1).unwrap();
    }
    a.check("k", 1).unwrap();
    // And a fresh open of a truncated file neither crashes nor refuses: it re-initialises.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(100)
        .unwrap();
    let b = RateLimiter::host_shared(policy(), &base, 100).unwrap();
    assert!(b.check("k", 1).unwrap().allowed);
    for i in 0..2000 {
        a.check(&format!("key-{i}"), 1).unwrap();
    }
    println!("TRUNCATION-SURVIVED");
}

#[test]
fn truncating_the_file_never_crashes() {
    let base = temp_path("truncated");
    remove_state_files(&base);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "truncation_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KEEL_RL_TRUNCATE_CHILD", &base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("TRUNCATION-SURVIVED"),
        "the worker died ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    remove_state_files(&base);
}

/// The same flood as in process, on the host-shared slot groups: an exhausted key survives.
#[test]
fn host_shared_flooding_does_not_reset_an_exhausted_key() {
    let base = temp_path("flood");
    remove_state_files(&base);
    for policy in [
        Policy::gcra("p", 3, Duration::from_secs(3600)).unwrap(),
        Policy::sliding_window("p", 3, Duration::from_secs(3600)).unwrap(),
    ] {
        let l = RateLimiter::host_shared(policy, &base, 100).unwrap();
        for _ in 0..3 {
            assert!(l.check("victim", 1).unwrap().allowed);
        }
        assert!(!l.check("victim", 1).unwrap().allowed);
        for i in 0..50_000 {
            assert!(l.check(&format!("flood-{i}"), 3).unwrap().allowed);
        }
        assert!(l.stats().evicted_active > 0);
        assert!(
            !l.check("victim", 1).unwrap().allowed,
            "the victim's exhausted bucket was reset by the flood"
        );
        remove_state_files(&base);
    }
}
