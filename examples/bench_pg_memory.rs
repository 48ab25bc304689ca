//! keel's PostgreSQL conversation memory under load (docs/benchmarks.md ("Scale-out II")): appends/s with N
//! concurrent conversations (one thread each), then the time to load a conversation's last 50
//! messages. Run against a server you started: `bench_pg_memory postgres://... 32 2000`.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use keel::memory::backend::PgMemory;
use keel::memory::{MemoryOptions, MemoryStore, NewMessage, SessionRef};
use keel::store::PgOptions;
use keel::Keyring;

fn main() -> keel::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .expect("usage: bench_pg_memory URL CONVERSATIONS APPENDS");
    let conversations: usize = args.get(1).map_or(1, |s| s.parse().unwrap());
    let total: usize = args.get(2).map_or(1000, |s| s.parse().unwrap());
    let options = PgOptions {
        pool_size: conversations.max(1) as u32,
        ..PgOptions::default()
    };
    let mem = Arc::new(MemoryStore::with_backend(
        PgMemory::open(url, options)?,
        Keyring::generate()?,
        MemoryOptions::default(),
    )?);
    let per = total / conversations;
    let barrier = Arc::new(Barrier::new(conversations + 1));
    let handles: Vec<_> = (0..conversations)
        .map(|c| {
            let (mem, barrier) = (Arc::clone(&mem), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let session = format!("conv-{c}");
                let at = SessionRef::new("bench", "user", &session);
                barrier.wait();
                for i in 0..per {
                    let text = format!("message {i} of conversation {c}: some typical chat text");
                    mem.append(&at, &NewMessage::new("user", text)).unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let at = SessionRef::new("bench", "user", "conv-0");
    let mut loads = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let got = mem.history(&at, 50, 0)?;
        loads.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got.len(), 50.min(per));
    }
    loads.sort_by(f64::total_cmp);
    println!(
        "keel conversations={conversations} appends={} appends_per_s={:.0} last50_median_ms={:.3}",
        per * conversations,
        (per * conversations) as f64 / secs,
        loads[loads.len() / 2]
    );
    Ok(())
}
