//! A byte cache shared by several hosts: the in-process [`Cache`] as L1 over Redis as L2, with
//! invalidation broadcast (Cargo feature `redis`).
//!
//! - `get`: L1, else Redis (`GET`), copied into L1;
//! - `set` / `delete` / `clear`: Redis first, then L1, then a message on the invalidation
//!   channel: every other host drops its L1 copy as the message arrives (one pub/sub delivery:
//!   milliseconds, measured in the tests), and its next `get` reads the new value from Redis;
//! - a fill that raced with an invalidation is not kept (a generation counter, as for API keys),
//!   so a host never re-caches the value a concurrent delete removed;
//! - Redis down: `get` serves L1 hits, and a miss is a miss (`Ok(None)`, counted in
//!   [`SharedCache::l2_errors`]); `set`, `delete` and `clear` fail with
//!   [`crate::RedisError::Unavailable`] after changing L1 only. Hosts whose subscription was lost
//!   clear their whole L1 when it comes back (messages published meanwhile are lost); until then
//!   an L1 entry may be stale for at most the cache's TTL.
//!
//! Values are bytes (the C door's and the Engine's byte caches; Python: `bytes`, or `str` stored
//! as UTF-8). L2 entries expire with the cache's `ttl` (Redis `PX`), none when it has no TTL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Cache, CacheConfig};
use crate::error::Result;
use crate::redis::{Invalidate, Redis};

/// The L1 type: the Engine's byte cache.
pub type BytesL1 = Cache<Box<[u8]>, Arc<[u8]>>;

/// L1 in process over L2 in Redis, invalidated on every host. `Send + Sync`.
pub struct SharedCache {
    name: String,
    topic: String,
    key_base: Vec<u8>,
    l1: Arc<BytesL1>,
    redis: Arc<Redis>,
    generation: AtomicU64,
    l2_errors: AtomicU64,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("name", &self.name)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl SharedCache {
    /// A shared cache `name` (1-64 ASCII letters, digits, `_`, `-`, `.`): every host that opens
    /// the same name on the same Redis (and prefix) shares its L2 and its invalidations.
    pub fn new(name: &str, config: CacheConfig, redis: Arc<Redis>) -> Result<Arc<Self>> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(crate::Error::InvalidArgument(format!(
                "shared cache name {name:?}: use 1-64 ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        let l1 = Arc::new(Cache::new(config)?);
        let cache = Arc::new(Self {
            name: name.to_owned(),
            topic: format!("cache:{name}"),
            key_base: format!("{}:c:{name}:", redis.prefix()).into_bytes(),
            l1,
            redis: Arc::clone(&redis),
            generation: AtomicU64::new(0),
            l2_errors: AtomicU64::new(0),
        });
        let sink: std::sync::Weak<dyn Invalidate> =
            Arc::downgrade(&cache) as std::sync::Weak<dyn Invalidate>;
        redis.subscribe(sink);
        Ok(cache)
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The in-process L1 (reading it directly skips Redis; writing it skips the other hosts).
    pub fn l1(&self) -> &Arc<BytesL1> {
        &self.l1
    }

    /// The Redis this cache uses.
    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    /// L2 reads that failed because Redis was unreachable (served as misses).
    pub fn l2_errors(&self) -> u64 {
        self.l2_errors.load(Ordering::Relaxed)
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.key_base.len() + key.len());
        k.extend_from_slice(&self.key_base);
        k.extend_from_slice(key);
        k
    }

    /// The value of `key`: from L1, else from Redis (then kept in L1).
    pub fn get(&self, key: &[u8]) -> Result<Option<Arc<[u8]>>> {
        if let Some(v) = self.l1.get(key) {
            return Ok(Some(v));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let rkey = self.key(key);
        let got: Option<Vec<u8>> = match self
            .redis
            .with_conn(|c| ::redis::cmd("GET").arg(&rkey).query(c))
        {
            Ok(v) => v,
            Err(crate::Error::Redis(crate::RedisError::Unavailable { .. })) => {
                self.l2_errors.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(v) = got else { return Ok(None) };
        let v: Arc<[u8]> = Arc::from(v);
        if self.generation.load(Ordering::Acquire) == generation {
            // Too heavy for L1 is fine: it stays in L2 only.
            let _ = self.l1.insert(key.into(), Arc::clone(&v));
        }
        Ok(Some(v))
    }

    /// Stores `value` under `key` on every host (Redis, this L1, and an invalidation of the
    /// other hosts' L1 copies).
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let rkey = self.key(key);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.l1.remove(key);
        let ttl = self.l1.config().ttl;
        self.redis.with_conn(|c| {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(&rkey).arg(value);
            if let Some(t) = ttl {
                cmd.arg("PX")
                    .arg(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
            }
            cmd.query::<()>(c)
        })?;
        self.redis.publish(&self.topic, Some(key))?;
        let _ = self.l1.insert(key.into(), Arc::from(value));
        Ok(())
    }

    /// Deletes `key` on every host; returns whether Redis held it.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.l1.remove(key);
        let rkey = self.key(key);
        let n: i64 = self
            .redis
            .with_conn(|c| ::redis::cmd("UNLINK").arg(&rkey).query(c))?;
        self.redis.publish(&self.topic, Some(key))?;
        Ok(n > 0)
    }

    /// Deletes every entry on every host.
    pub fn clear(&self) -> Result<()> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.l1.clear();
        let mut pattern = Vec::new();
        for &b in &self.key_base {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'*');
        self.redis.with_conn(|c| {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                if !keys.is_empty() {
                    ::redis::cmd("UNLINK").arg(&keys).query::<()>(c)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })?;
        self.redis.publish(&self.topic, None)
    }
}

impl Invalidate for SharedCache {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn forget(&self, key: &[u8]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.l1.remove(key);
    }

    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.l1.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{test_server::RedisServer, RedisOptions};
    use std::time::{Duration, Instant};

    fn host(url: &str) -> Arc<SharedCache> {
        let r = Redis::open(url, RedisOptions::default()).unwrap();
        let c = SharedCache::new("answers", CacheConfig::new(100), Arc::clone(&r)).unwrap();
        assert!(r.wait_subscribed(Duration::from_secs(10)));
        c
    }

    /// Waits until `f` holds (a deadline, not a sleep) and returns how long it took.
    fn within(bound: Duration, mut f: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < bound, "not propagated within {bound:?}");
            std::thread::yield_now();
        }
        start.elapsed()
    }

    #[test]
    fn a_delete_or_update_on_one_host_is_seen_by_the_others() {
        let server = RedisServer::start();
        let (a, b, c) = (
            host(&server.url()),
            host(&server.url()),
            host(&server.url()),
        );
        a.set(b"q1", b"v1").unwrap();
        for h in [&b, &c] {
            // A fill is not kept while an invalidation (here: of A's own set) crosses it.
            within(Duration::from_secs(2), || {
                assert_eq!(h.get(b"q1").unwrap().as_deref(), Some(&b"v1"[..]));
                h.l1().get(&b"q1"[..]).is_some()
            });
        }
        a.delete(b"q1").unwrap();
        for h in [&b, &c] {
            let took = within(Duration::from_secs(2), || h.l1().get(&b"q1"[..]).is_none());
            eprintln!("delete propagated in {took:?}");
            assert_eq!(h.get(b"q1").unwrap(), None);
        }
        a.set(b"q2", b"old").unwrap();
        assert_eq!(b.get(b"q2").unwrap().as_deref(), Some(&b"old"[..]));
        c.set(b"q2", b"new").unwrap();
        within(Duration::from_secs(2), || {
            b.get(b"q2").unwrap().as_deref() == Some(&b"new"[..])
        });
        b.clear().unwrap();
        within(Duration::from_secs(2), || {
            a.l1().is_empty() && c.l1().is_empty()
        });
        assert_eq!(a.get(b"q2").unwrap(), None);
    }

    #[test]
    fn redis_down_serves_l1_and_clears_on_resubscribe() {
        let mut server = RedisServer::start();
        let a = host(&server.url());
        a.set(b"k", b"v").unwrap();
        server.kill();
        assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "L1 hit");
        assert_eq!(a.get(b"other").unwrap(), None, "a miss while down");
        assert_eq!(a.l2_errors(), 1);
        assert!(matches!(
            a.delete(b"k"),
            Err(crate::Error::Redis(crate::RedisError::Unavailable { .. }))
        ));
        a.l1()
            .insert(b"stale".to_vec().into(), Arc::from(&b"x"[..]))
            .unwrap();
        let resyncs = a.redis().subscriber_stats().resyncs;
        server.restart();
        within(Duration::from_secs(10), || {
            a.redis().subscriber_stats().resyncs > resyncs
        });
        assert!(
            a.l1().is_empty(),
            "L1 cleared after the subscription came back"
        );
        a.set(b"k", b"v2").unwrap();
        assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    }
}
