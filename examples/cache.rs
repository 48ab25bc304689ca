//! The cache from Rust: bounds, TTLs, single-flight loading and statistics.
//! Run: `cargo run --example cache`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel::{Cache, CacheConfig, EntryOptions};

fn main() -> Result<(), keel::Error> {
    // At most 10k entries and 64 MiB of values; entries live 5 minutes unless told otherwise.
    let cache: Arc<Cache<String, Arc<[u8]>>> = Arc::new(Cache::new(
        CacheConfig::new(10_000)
            .max_weight(64 << 20)
            .ttl(Duration::from_secs(300)),
    )?);

    let greeting: Arc<[u8]> = Arc::from(&b"hello"[..]);
    let weight = greeting.len() as u64;
    cache.insert_with(
        "greeting".into(),
        greeting,
        EntryOptions {
            ttl: Some(Duration::from_secs(30)),
            weight,
        },
    )?;
    println!("greeting = {:?}", cache.get("greeting").map(|v| v.to_vec()));

    // Eight threads miss the same key at once: the loader runs once, the others wait for it.
    let loads = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            std::thread::spawn(move || {
                cache.get_or_try_insert_with(&"profile:ada".to_string(), || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    Ok::<_, keel::Error>(Arc::from(&b"{\"name\":\"Ada\"}"[..]))
                })
            })
        })
        .collect();
    for t in threads {
        t.join().expect("loader thread")?;
    }
    println!(
        "8 concurrent misses, loader ran {} time(s)",
        loads.load(Ordering::SeqCst)
    );

    // Bad settings are typed errors.
    match Cache::<String, String>::new(CacheConfig::new(0)) {
        Err(e) => println!("error: {e}"),
        Ok(_) => unreachable!("a zero-capacity cache is rejected"),
    }
    println!("{:?}", cache.stats());
    Ok(())
}
