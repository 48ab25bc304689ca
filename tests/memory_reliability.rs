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
const SIDE: &str = "KEEL_RELIABILITY_SIDE";

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
    spawn_child_with(test, role, db, keys, db)
}

fn spawn_child_with(test: &str, role: &str, db: &Path, keys: &str, side: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(SIDE, side)
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
        // Eight threads append forever, each to its own session and (every third step) to a
        // session all threads of all processes share; every append that returned is recorded at
        // once in the thread's side file (fsync'd) as `id session content`, before the next.
        "group-writer" => {
            let side = PathBuf::from(std::env::var(SIDE).unwrap());
            let mem = std::sync::Arc::new(mem);
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (mem, side) = (std::sync::Arc::clone(&mem), side.clone());
                    std::thread::spawn(move || group_writer(&mem, &side, t))
                })
                .collect();
            for t in threads {
                t.join().unwrap();
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

/// One thread of a `group-writer` child: appends forever, recording each acknowledged id.
fn group_writer(mem: &MemoryStore, side: &Path, t: u32) -> ! {
    use std::io::Write;
    let pid = std::process::id();
    let own = format!("p{pid}-t{t}");
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(side.join(format!("acks-{pid}-{t}")))
        .unwrap();
    for i in 0u64.. {
        let session = if i % 3 == 2 { "shared" } else { own.as_str() };
        let at = SessionRef::new("t", "u", session);
        let content = format!("{own}-{i}");
        let ids = if i % 4 == 3 {
            let batch: Vec<_> = (0..3)
                .map(|k| NewMessage::new("assistant", format!("{content}-b{k}")))
                .collect();
            let ids = mem.append_many(&at, &batch).unwrap();
            ids.into_iter()
                .zip(batch.into_iter().map(|m| m.content))
                .collect::<Vec<_>>()
        } else {
            let id = mem
                .append(&at, &NewMessage::new("user", content.clone()))
                .unwrap();
            vec![(id, content)]
        };
        let mut line = String::new();
        for (id, content) in ids {
            line.push_str(&format!("{id} {session} {content}\n"));
        }
        acks.write_all(line.as_bytes()).unwrap();
        acks.sync_data().unwrap();
    }
    unreachable!()
}

/// A non-zero seed for [`jitter`] from the clock.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
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
    let mut seed = clock_seed();
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

#[test]
fn kill_9_during_concurrent_appends_of_two_processes_loses_no_acknowledged_id() {
    if let Ok(role) = std::env::var(ROLE) {
        run_child(&role);
    }
    let dir = TempDir::new("kill9-group");
    let db = dir.0.join("memory.db");
    let side = dir.0.join("acks");
    std::fs::create_dir_all(&side).unwrap();
    let keys = format!("1:{}", *Keyring::generate_key().unwrap());
    let mut seed = clock_seed();
    let rounds = 4;
    let mut total = 0;
    for round in 0..rounds {
        let mut children: Vec<_> = (0..2)
            .map(|_| {
                spawn_child_with(
                    "kill_9_during_concurrent_appends_of_two_processes_loses_no_acknowledged_id",
                    "group-writer",
                    &db,
                    &keys,
                    &side,
                )
            })
            .collect();
        // A kill at a moment the writers do not choose (not a synchronisation).
        std::thread::sleep(Duration::from_millis(400) + jitter(&mut seed, 600));
        for child in &mut children {
            child.kill().unwrap(); // SIGKILL on Unix
        }
        for child in &mut children {
            child.wait().unwrap();
        }

        // Every acknowledged (id, content), per session, in each thread's acknowledgement order.
        let mut acked: std::collections::BTreeMap<String, Vec<(i64, String)>> = Default::default();
        let mut per_thread: Vec<Vec<(i64, String)>> = Vec::new();
        for entry in std::fs::read_dir(&side).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut mine = Vec::new();
            // A line cut by the kill was never completely recorded: only whole lines count.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let mut parts = line.trim_end().splitn(3, ' ');
                let (id, session, content) = (
                    parts.next().unwrap().parse::<i64>().unwrap(),
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                );
                acked
                    .entry(session.clone())
                    .or_default()
                    .push((id, content.clone()));
                if session != "shared" {
                    mine.push((id, content));
                }
            }
            per_thread.push(mine);
        }
        let count: usize = acked.values().map(Vec::len).sum();
        assert!(count > total, "round {round}: nothing acknowledged");
        total = count;

        let mem = open(&db, &keys);
        let ok: String = rusqlite::Connection::open(mem.store().path())
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}");
        for (session, acks) in &acked {
            // Reading checks the session's tag, count and prev-id chain (`Tampered` otherwise).
            let stored = mem
                .history(&SessionRef::new("t", "u", session), u32::MAX, 0)
                .unwrap_or_else(|e| panic!("round {round}: session {session}: {e}"));
            assert!(
                stored.windows(2).all(|w| w[0].id > w[1].id),
                "round {round}: ids of {session} out of order"
            );
            let by_id: std::collections::HashMap<i64, &str> =
                stored.iter().map(|m| (m.id, m.content.as_str())).collect();
            for (id, content) in acks {
                assert_eq!(
                    by_id.get(id).copied(),
                    Some(content.as_str()),
                    "round {round}: acknowledged id {id} of {session} lost"
                );
            }
        }
        // Each thread's appends to its own session: acknowledged in id order.
        for mine in &per_thread {
            assert!(
                mine.windows(2).all(|w| w[0].0 < w[1].0),
                "round {round}: a thread's acknowledged ids are out of order"
            );
        }
    }
    eprintln!(
        "{total} acknowledged appends over {rounds} kill -9 rounds of 2 x 8 writers, none lost"
    );
}
