//! Host-shared rate limiting across real processes: 4 processes hammering one key against a
//! limit of L allow exactly L in total. The test binary re-executes itself as the workers.

use std::process::Command;
use std::time::Duration;

use keel::ratelimit::{Policy, RateLimiter};

const LIMIT: u64 = 500;
const WORKERS: usize = 4;
const ATTEMPTS: usize = 400;
const CHILD_ENV: &str = "KEEL_RL_SHARED_CHILD";

fn policy() -> Policy {
    Policy::gcra("shared", LIMIT, Duration::from_secs(3600)).unwrap()
}

/// The worker: runs only inside a child process started by the test below.
#[test]
fn worker_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let limiter = RateLimiter::host_shared(policy(), &path, 10_000).unwrap();
    let allowed = (0..ATTEMPTS)
        .filter(|_| limiter.check("tenant-1", 1).unwrap().allowed)
        .count();
    println!("ALLOWED={allowed}");
}

#[test]
fn four_processes_allow_exactly_the_limit() {
    let path = std::env::temp_dir().join(format!("keel-rl-4proc-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "worker_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &path)
                .output_async()
        })
        .collect();
    let mut total = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let allowed: usize = text
            .lines()
            .find_map(|l| l.split("ALLOWED=").nth(1))
            .unwrap_or_else(|| panic!("no ALLOWED line in: {text}"))
            .trim()
            .parse()
            .unwrap();
        total += allowed;
    }
    assert_eq!(
        total as u64, LIMIT,
        "{WORKERS} processes x {ATTEMPTS} attempts"
    );
    std::fs::remove_file(&path).unwrap();
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
