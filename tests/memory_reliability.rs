//! Crash and multi-process reliability of conversation memory.
//!
//! Child processes are this very test binary, re-executed with `KEEL_RELIABILITY_ROLE` set: the
//! test function that sees the variable plays the child and exits, so no helper target is needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel::{Keyring, MemoryOptions, MemoryStore, NewMessage, SessionRef};

const ROLE: &str = "KEEL_RELIABILITY_ROLE";
const DB: &str = "KEEL_RELIABILITY_DB";
const KEYS: &str = "KEEL_RELIABILITY_KEYS";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("keel-rel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(db: &Path, keys: &str) -> MemoryStore {
    MemoryStore::open(db, Keyring::parse(keys).unwrap(), MemoryOptions::default()).unwrap()
}

fn spawn_child(test: &str, role: &str, db: &Path, keys: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DB, db)
        .env(KEYS, keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A child's job; returns only by exiting the process.
fn run_child(role: &str) -> ! {
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let mem = open(&db, &std::env::var(KEYS).unwrap());
    let at = SessionRef::new("t", "u", "crash");
    match role {
        // Append forever, acknowledging each append that returned success: odd steps append one
        // message, even steps an atomic batch of 5 (`...-b0` to `...-b4`).
        "crash-writer" => {
            for i in 0u64.. {
                let content = format!("crash-{}-{i}", std::process::id());
                if i % 2 == 1 {
                    mem.append(&at, &NewMessage::new("user", content.clone()))
                        .unwrap();
                    println!("ACK {content}");
                } else {
                    let batch: Vec<_> = (0..5)
                        .map(|k| NewMessage::new("assistant", format!("{content}-b{k}")))
                        .collect();
                    mem.append_many(&at, &batch).unwrap();
                    for m in &batch {
                        println!("ACK {}", m.content);
                    }
                }
            }
            unreachable!()
        }
        // A fixed amount of appends: 150 single, 10 batches of 10.
        worker => {
            let shared = SessionRef::new("t", "u", "shared");
            let own = format!("own-{worker}");
            let mine = SessionRef::new("t", "u", &own);
            for i in 0..150 {
                mem.append(&shared, &NewMessage::new("user", format!("{worker}-{i}")))
                    .unwrap();
            }
            for b in 0..10 {
                let batch: Vec<_> = (0..10)
                    .map(|i| NewMessage::new("assistant", format!("{worker}-b{b}-{i}")))
                    .collect();
                mem.append_many(&mine, &batch).unwrap();
            }
            println!("DONE {worker}");
            std::process::exit(0)
        }
    }
}

/// Pseudo-random kill delays without a dependency: the clock's low bits, stirred.
fn jitter(seed: &mut u64, max_ms: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(*seed % max_ms)
}

#[test]
fn kill_9_during_appends_loses_no_acknowledged_message_and_never_corrupts() {
    if let Ok(role) = std::env::var(ROLE) {
        run_child(&role);
    }
    let dir = TempDir::new("kill9");
    let db = dir.0.join("memory.db");
    let keys = format!("1:{}", *Keyring::generate_key().unwrap());
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut acked: Vec<String> = Vec::new();
    let rounds = 8;
    for round in 0..rounds {
        let mut child = spawn_child(
            "kill_9_during_appends_loses_no_acknowledged_message_and_never_corrupts",
            "crash-writer",
            &db,
            &keys,
        );
        let stdout = child.stdout.take().unwrap();
        // Read acks on a thread, so the kill happens at a point the writer does not choose.
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned))
                .collect::<Vec<_>>()
        });
        // Let the child get going (open + first appends), then kill at a random moment.
        std::thread::sleep(Duration::from_millis(150) + jitter(&mut seed, 400));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let got = reader.join().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: the writer acknowledged nothing"
        );
        acked.extend(got);

        // Reopen after every crash: integrity, and every acknowledged append is there.
        let mem = open(&db, &keys);
        let ok: String = rusqlite::Connection::open(mem.store().path())
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}");
        let stored: std::collections::HashSet<String> = mem
            .history(&SessionRef::new("t", "u", "crash"), u32::MAX, 0)
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        let lost: Vec<_> = acked.iter().filter(|c| !stored.contains(*c)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: lost {} acknowledged appends",
            lost.len()
        );
        // Batches are atomic even when the writer dies mid-way: all five or none.
        let mut batches: std::collections::HashMap<&str, usize> = Default::default();
        for c in &stored {
            if let Some((base, _)) = c.rsplit_once("-b") {
                *batches.entry(base).or_default() += 1;
            }
        }
        assert!(
            batches.values().all(|&n| n == 5),
            "round {round}: a torn batch: {batches:?}"
        );
    }
    eprintln!(
        "{} acknowledged appends over {rounds} kill -9 rounds, none lost",
        acked.len()
    );
    assert!(
        acked.len() >= 1000,
        "only {} appends over {rounds} crashes; expected thousands",
        acked.len()
    );
}

#[test]
fn four_processes_append_concurrently_without_errors_or_losses() {
    if let Ok(role) = std::env::var(ROLE) {
        run_child(&role);
    }
    let dir = TempDir::new("multiproc");
    let db = dir.0.join("memory.db");
    let keys = format!("1:{}", *Keyring::generate_key().unwrap());
    // The children race on opening (and migrating) a brand-new file as well.
    let children: Vec<_> = (0..4)
        .map(|w| {
            spawn_child(
                "four_processes_append_concurrently_without_errors_or_losses",
                &format!("w{w}"),
                &db,
                &keys,
            )
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a worker failed: {text}");
        assert!(text.contains("DONE w"), "{text}");
    }
    let mem = open(&db, &keys);
    let shared = mem
        .history(&SessionRef::new("t", "u", "shared"), u32::MAX, 0)
        .unwrap();
    assert_eq!(shared.len(), 4 * 150);
    for w in 0..4 {
        let own = format!("own-w{w}");
        let msgs = mem
            .history(&SessionRef::new("t", "u", &own), u32::MAX, 0)
            .unwrap();
        assert_eq!(msgs.len(), 100, "worker {w}");
        // Each worker's own appends are in its order.
        let first = format!("w{w}-b0-0");
        assert_eq!(msgs.last().unwrap().content, first);
    }
    let ids: std::collections::HashSet<i64> = shared.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), shared.len(), "ids are unique");
}
