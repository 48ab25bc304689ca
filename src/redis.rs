//! The Redis connection shared by keel's Redis backends (Cargo feature `redis`): rate limiters
//! whose state lives in Redis (server-side scripts, see `ratelimit/redis.lua`), the invalidation
//! broadcast of the API-key verification cache, and the byte caches' shared L2.
//!
//! One [`Redis`] handle is a pool of synchronous connections (r2d2, with keel's own connection
//! manager so that connecting, reading and writing all time out after [`RedisOptions::timeout`])
//! plus, once something subscribes, one background thread holding the pub/sub connection.
//!
//! Invariants:
//! - no call blocks longer than about `timeout` (twice when a pooled connection turned out dead:
//!   a command that fails because its connection was dropped (Redis restarted) is retried once on
//!   a fresh connection, so recovery after a restart needs no action from the application);
//! - every failure is a typed [`RedisError`] naming the endpoint (host and port, never the
//!   password) and never a key, a value or a message;
//! - invalidations travel on one channel, `<prefix>:invalidate`; a subscriber that lost its
//!   connection calls [`Invalidate::forget_all`] on every sink when it is subscribed again,
//!   because messages published meanwhile are lost (pub/sub has no replay).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::{RedisError, Result};

/// Default [`RedisOptions::timeout`]: how long connecting, a command or a pool checkout may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default [`RedisOptions::pool_size`].
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// Default [`RedisOptions::prefix`] of every key and channel keel uses.
pub const DEFAULT_PREFIX: &str = "keel";
/// How often the subscriber thread wakes up to notice that its handle was dropped.
const POLL: Duration = Duration::from_millis(100);

/// How a [`Redis`] handle connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Connect, read and write timeout, and the longest wait for a pooled connection.
    pub timeout: Duration,
    /// Most pooled connections.
    pub pool_size: u32,
    /// Prefix of every key and channel (ASCII letters, digits, `_`, `-`, `.`, `:`), so that
    /// several deployments can share one Redis.
    pub prefix: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Something holding cached copies that a message on the invalidation channel may make stale.
pub(crate) trait Invalidate: Send + Sync {
    /// The topic this sink listens to (`api_keys`, `cache:<name>`).
    fn topic(&self) -> &str;
    /// Drops the entry of `key`.
    fn forget(&self, key: &[u8]);
    /// Drops every entry (the subscription was lost: messages may have been missed).
    fn forget_all(&self);
}

struct Manager {
    client: ::redis::Client,
    timeout: Duration,
}

impl r2d2::ManageConnection for Manager {
    type Connection = ::redis::Connection;
    type Error = ::redis::RedisError;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }

    fn is_valid(&self, con: &mut Self::Connection) -> Result<(), Self::Error> {
        ::redis::cmd("PING").query::<()>(con)
    }

    fn has_broken(&self, con: &mut Self::Connection) -> bool {
        !::redis::ConnectionLike::is_open(con)
    }
}

/// Counters of the invalidation subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Whether the subscriber is subscribed right now.
    pub subscribed: bool,
    /// Invalidation messages received.
    pub received: u64,
    /// Times the subscription was (re)established after being lost or failing to start (each
    /// cleared every cache that listens).
    pub resyncs: u64,
}

struct Bus {
    origin: [u8; 8],
    sinks: Mutex<Vec<Weak<dyn Invalidate>>>,
    started: AtomicBool,
    stop: AtomicBool,
    subscribed: Mutex<bool>,
    changed: Condvar,
    received: AtomicU64,
    resyncs: AtomicU64,
}

/// A pool of connections to one Redis, shared by the backends that use it. `Send + Sync`.
pub struct Redis {
    client: ::redis::Client,
    pool: r2d2::Pool<Manager>,
    endpoint: String,
    options: RedisOptions,
    channel: String,
    bus: Arc<Bus>,
}

/// A random id per handle, sent with each invalidation so that a handle's subscriber skips its
/// own messages (the publisher already changed its own caches).
fn new_origin() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish().to_le_bytes()
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.options.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.bus.stop.store(true, Ordering::Release);
    }
}

/// Host and port of a URL (no user info, no path), for messages.
fn endpoint_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        "localhost:6379".to_owned()
    } else {
        host.to_owned()
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidArgument(format!(
            "Redis key prefix {prefix:?}: use 1-64 ASCII letters, digits, '_', '-', '.' or ':'"
        )))
    }
}

impl Redis {
    /// A handle on the Redis at `url` (`redis://[:password@]host[:port][/db]`,
    /// `redis+unix:///path`). Nothing is connected yet: a Redis that is down at open is reported
    /// by the first command (so that fail-open rate limiters keep an application starting).
    pub fn open(url: &str, options: RedisOptions) -> Result<Arc<Self>> {
        let endpoint = endpoint_of(url);
        if options.timeout.is_zero() {
            return Err(crate::Error::InvalidArgument(
                "Redis timeout must be positive".into(),
            ));
        }
        if options.pool_size == 0 {
            return Err(crate::Error::InvalidArgument(
                "Redis pool_size must be at least 1".into(),
            ));
        }
        check_prefix(&options.prefix)?;
        // The client's own message may quote the URL: not repeated.
        let client = ::redis::Client::open(url).map_err(|_| RedisError::InvalidUrl {
            url: crate::config::redact_url(url),
            reason: "use redis://[:password@]host[:port][/db] or redis+unix:///path".into(),
        })?;
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(0))
            .connection_timeout(options.timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager {
                client: client.clone(),
                timeout: options.timeout,
            });
        let channel = format!("{}:invalidate", options.prefix);
        Ok(Arc::new(Self {
            client,
            pool,
            endpoint,
            options,
            channel,
            bus: Arc::new(Bus {
                origin: new_origin(),
                sinks: Mutex::new(Vec::new()),
                started: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                subscribed: Mutex::new(false),
                changed: Condvar::new(),
                received: AtomicU64::new(0),
                resyncs: AtomicU64::new(0),
            }),
        }))
    }

    /// Host and port (never the password).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The options this handle was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.options.prefix
    }

    pub(crate) fn unavailable(&self, e: &::redis::RedisError) -> crate::Error {
        RedisError::Unavailable {
            endpoint: self.endpoint.clone(),
            reason: describe(e),
        }
        .into()
    }

    fn error(&self, e: &::redis::RedisError) -> crate::Error {
        if is_unavailable(e) {
            self.unavailable(e)
        } else {
            RedisError::Command {
                endpoint: self.endpoint.clone(),
                reason: describe(e),
            }
            .into()
        }
    }

    /// Runs `f` on a pooled connection; a connection found dropped (Redis restarted since it was
    /// opened) is discarded and `f` runs once more on a new one.
    pub(crate) fn with_conn<T>(
        &self,
        mut f: impl FnMut(&mut ::redis::Connection) -> ::redis::RedisResult<T>,
    ) -> Result<T> {
        for attempt in 0..2 {
            let mut con = self.pool.get().map_err(|e| {
                crate::Error::from(RedisError::Unavailable {
                    endpoint: self.endpoint.clone(),
                    reason: format!("no connection within {:?} ({e})", self.options.timeout),
                })
            })?;
            match f(&mut con) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && (e.is_connection_dropped() || e.is_io_error()) => {
                    // r2d2 drops it on return: `has_broken` sees it closed.
                    tracing::debug!(error = %describe(&e), "Redis connection dropped; retrying once");
                    continue;
                }
                Err(e) => return Err(self.error(&e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// One round trip (`PING`): `Ok` when Redis answers.
    pub fn ping(&self) -> Result<()> {
        self.with_conn(|c| ::redis::cmd("PING").query::<()>(c))
    }

    /// Publishes an invalidation of `key` (or, with `None`, of everything) for `topic`.
    pub(crate) fn publish(&self, topic: &str, key: Option<&[u8]>) -> Result<()> {
        let mut payload = Vec::with_capacity(topic.len() + 10 + key.map_or(0, <[u8]>::len));
        payload.extend_from_slice(topic.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(&self.bus.origin);
        match key {
            Some(k) => {
                payload.push(b'k');
                payload.extend_from_slice(k);
            }
            None => payload.push(b'*'),
        }
        self.with_conn(|c| {
            ::redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&payload)
                .query::<i64>(c)
        })
        .map(|_| ())
    }

    /// Registers `sink` for invalidations of its topic (kept while `sink` lives) and starts the
    /// subscriber thread if it is not running.
    pub(crate) fn subscribe(&self, sink: Weak<dyn Invalidate>) {
        self.bus
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
        if !self.bus.started.swap(true, Ordering::AcqRel) {
            let bus = Arc::clone(&self.bus);
            let client = self.client.clone();
            let channel = self.channel.clone();
            let timeout = self.options.timeout;
            let spawned = std::thread::Builder::new()
                .name("keel-redis-sub".into())
                .spawn(move || subscriber(&bus, &client, &channel, timeout));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the Redis invalidation subscriber");
                self.bus.started.store(false, Ordering::Release);
            }
        }
    }

    /// The invalidation subscriber's state and counters.
    pub fn subscriber_stats(&self) -> SubscriberStats {
        SubscriberStats {
            subscribed: *self
                .bus
                .subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            received: self.bus.received.load(Ordering::Relaxed),
            resyncs: self.bus.resyncs.load(Ordering::Relaxed),
        }
    }

    /// Waits until the invalidation subscriber is subscribed (`true`) or `timeout` passes.
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut sub = self
            .bus
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while !*sub {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            sub = self
                .bus
                .changed
                .wait_timeout(sub, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

fn is_unavailable(e: &::redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ::redis::ErrorKind::Server(
                ::redis::ServerErrorKind::BusyLoading
                    | ::redis::ServerErrorKind::TryAgain
                    | ::redis::ServerErrorKind::MasterDown
            )
        )
}

/// A Redis error's kind and detail, without any argument of the command.
fn describe(e: &::redis::RedisError) -> String {
    e.to_string()
}

fn set_subscribed(bus: &Bus, value: bool) {
    *bus.subscribed.lock().unwrap_or_else(|p| p.into_inner()) = value;
    bus.changed.notify_all();
}

fn dispatch(bus: &Bus, payload: &[u8]) {
    let Some(nl) = payload.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (topic, rest) = (&payload[..nl], &payload[nl + 1..]);
    let Some((origin, rest)) = rest.split_at_checked(8) else {
        return;
    };
    if origin == bus.origin {
        return; // our own message: the publisher updated its caches already
    }
    let mut sinks = bus.sinks.lock().unwrap_or_else(|p| p.into_inner());
    sinks.retain(|s| s.strong_count() > 0);
    let live: Vec<Arc<dyn Invalidate>> = sinks.iter().filter_map(Weak::upgrade).collect();
    drop(sinks);
    for sink in live {
        if sink.topic().as_bytes() != topic {
            continue;
        }
        match rest.split_first() {
            Some((b'k', key)) => sink.forget(key),
            Some((b'*', _)) => sink.forget_all(),
            _ => {}
        }
    }
}

fn forget_all(bus: &Bus) {
    let live: Vec<Arc<dyn Invalidate>> = bus
        .sinks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for sink in live {
        sink.forget_all();
    }
}

/// The subscriber thread: (re)connects, subscribes, dispatches, until the handle is dropped.
fn subscriber(bus: &Bus, client: &::redis::Client, channel: &str, timeout: Duration) {
    let mut missed = false;
    while !bus.stop.load(Ordering::Acquire) {
        let session = (|| -> ::redis::RedisResult<()> {
            let mut con = client.get_connection_with_timeout(timeout)?;
            con.set_write_timeout(Some(timeout))?;
            let mut ps = con.as_pubsub();
            ps.set_read_timeout(Some(timeout))?;
            ps.subscribe(channel)?;
            ps.set_read_timeout(Some(POLL))?;
            if missed {
                // Invalidations published while we were not subscribed are lost.
                forget_all(bus);
                bus.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Redis invalidation subscriber resubscribed; caches cleared");
            }
            set_subscribed(bus, true);
            while !bus.stop.load(Ordering::Acquire) {
                match ps.get_message() {
                    Ok(msg) => {
                        bus.received.fetch_add(1, Ordering::Relaxed);
                        dispatch(bus, msg.get_payload_bytes());
                    }
                    Err(e) if e.is_timeout() => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        set_subscribed(bus, false);
        if let Err(e) = session {
            if !missed {
                tracing::warn!(error = %describe(&e), "Redis invalidation subscriber lost its connection");
            }
            missed = true;
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_never_carry_a_password() {
        assert_eq!(endpoint_of("redis://:s3cret@db:6380/2"), "db:6380");
        assert_eq!(endpoint_of("redis://u:p@h"), "h");
        assert_eq!(endpoint_of("redis://127.0.0.1:1"), "127.0.0.1:1");
    }

    #[test]
    fn bad_urls_and_options_are_typed_errors() {
        let e = Redis::open("http://x", RedisOptions::default()).unwrap_err();
        assert!(
            matches!(e, crate::Error::Redis(RedisError::InvalidUrl { .. })),
            "{e}"
        );
        let e = Redis::open(
            "redis://:pw@x",
            RedisOptions {
                prefix: "a b".into(),
                ..RedisOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
    }

    #[test]
    fn a_redis_that_is_down_is_a_clear_error_within_the_timeout() {
        // A port nothing listens on (bound then closed).
        let port = test_server::free_port();
        let r = Redis::open(
            &format!("redis://:secretpw@127.0.0.1:{port}"),
            RedisOptions::default(),
        )
        .unwrap();
        let t = Instant::now();
        let e = r.ping().unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(e, crate::Error::Redis(RedisError::Unavailable { .. })),
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains("secretpw"), "{text}");
    }

    #[test]
    fn recovers_after_a_restart_without_a_new_handle() {
        let mut server = test_server::RedisServer::start();
        let r = Redis::open(&server.url(), RedisOptions::default()).unwrap();
        r.ping().unwrap();
        server.kill();
        assert!(r.ping().is_err());
        server.restart();
        r.ping().unwrap();
    }
}
