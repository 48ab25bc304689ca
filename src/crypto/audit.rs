//! The audit log: append-only, encrypted, hash-chained.
//!
//! Each entry (actor, action, target, outcome, request id) is stored as one AES-SIV ciphertext
//! bound to its sequence number. Entries are chained: `link[n] = HMAC(k, link[n-1] ‖ seq ‖ at ‖
//! key id ‖ actor tag ‖ ciphertext)` with a key derived from the keyring, and a head row holds
//! `HMAC(k, "head" ‖ last seq ‖ last link)`. [`AuditLog::verify`] recomputes everything, so an
//! edited, deleted, inserted or reordered entry, or a log truncated after its head, is found
//! without the key material being stored anywhere near the database. (Someone who can write the
//! database AND restore an older copy of both the log and its head can roll the log back; export
//! [`AuditVerification::head`] elsewhere to detect that too.)
//!
//! Times and a keyed hash of the actor are stored in clear so that queries by time range and
//! actor use indexes; nothing else is readable without the keyring.
//!
//! The link and actor-tag keys are derived from the keyring with [`Keyring::derive`]; each row
//! (and the head) records its key id and derivation version (`kdf`), so entries written before
//! HKDF (version 1) keep verifying next to new ones.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use std::time::Duration;

use sha2::Sha256;

use super::field::{self, Ad};
use super::{Kdf, Keyring};
use crate::clock::{SystemWallClock, WallClock};
use crate::error::{CryptoError, Error, Result};
use crate::store::Store;
use crate::telemetry::metrics;

pub mod backend;
#[cfg(feature = "postgres")]
mod postgres;

use backend::AuditFilter;
pub(crate) use backend::{sqlite_writer, SCHEMA as SQLITE_SCHEMA};
pub use backend::{AuditBackend, AuditRow, AuditWrite, SqliteAudit};
#[cfg(feature = "postgres")]
pub use postgres::PgAudit;

/// The most entries a query returns when [`AuditQuery::limit`] is 0 (and the Python door's
/// default `limit`).
pub const DEFAULT_QUERY_LIMIT: u32 = 1000;
const TABLE: &str = "audit_log";
const LINK_LABEL: &[u8] = b"keel/audit-chain/v1";
const ACTOR_LABEL: &[u8] = b"keel/audit-actor/v1";
const MAX_FIELD: usize = 1024;

/// The outcome of an entry whose caller does not name one (the Python door's default).
pub const DEFAULT_OUTCOME: &str = "success";

/// One entry to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who acted (an admin user, a service, an API key's display prefix).
    pub actor: String,
    /// What was done (`api_key.create`, `api_key.verify`...).
    pub action: String,
    /// On what (a key id, a session id...).
    pub target: String,
    /// `success`, `failure`, `denied`... (free text, short).
    pub outcome: String,
    /// The request that caused it, for correlation.
    pub request_id: Option<String>,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log (1, 2, ...).
    pub seq: i64,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// The recorded fields.
    pub entry: NewAuditEntry,
}

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// From this time (ms since the epoch, inclusive).
    pub from_ms: Option<i64>,
    /// Until this time (ms since the epoch, exclusive).
    pub until_ms: Option<i64>,
    /// At most this many entries (oldest first); 0 means 1000.
    pub limit: u32,
}

/// The result of a successful [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: u64,
    /// The last link (all zeros for an empty log): keep a copy elsewhere to detect rollback.
    pub head: [u8; 32],
}

/// An entry checked, tagged and ready to be chained inside a transaction.
struct Prepared {
    key_id: u32,
    kdf: Kdf,
    chain: Hmac<Sha256>,
    tag: Vec<u8>,
    plaintext: Vec<u8>,
    at: i64,
}

/// The audit log over an [`AuditBackend`] (SQLite by default). `Send + Sync`.
pub struct AuditLog {
    backend: Arc<dyn AuditBackend>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn WallClock>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn derive(keyring: &Keyring, kdf: Kdf, key_id: u32, label: &[u8]) -> Result<Hmac<Sha256>> {
    Ok(keyring.derive_with(kdf, key_id, label)?.hmac())
}

fn check_field(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_FIELD || value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "audit {what} must be at most {MAX_FIELD} bytes without control characters"
        )));
    }
    Ok(())
}

fn encode(e: &NewAuditEntry) -> Vec<u8> {
    serde_json::json!({
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "request_id": e.request_id,
    })
    .to_string()
    .into_bytes()
}

fn decode(bytes: &[u8]) -> Result<NewAuditEntry> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| CryptoError::Format("audit entry is not JSON".into()))?;
    let text = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Ok(NewAuditEntry {
        actor: text("actor"),
        action: text("action"),
        target: text("target"),
        outcome: text("outcome"),
        request_id: v
            .get("request_id")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
    })
}

fn link(
    mac: &Hmac<Sha256>,
    prev: &[u8],
    seq: i64,
    at: i64,
    key_id: u32,
    tag: &[u8],
    entry: &[u8],
) -> [u8; 32] {
    let mut m = mac.clone();
    m.update(prev);
    m.update(&seq.to_le_bytes());
    m.update(&at.to_le_bytes());
    m.update(&key_id.to_le_bytes());
    m.update(&(tag.len() as u64).to_le_bytes());
    m.update(tag);
    m.update(&(entry.len() as u64).to_le_bytes());
    m.update(entry);
    m.finalize().into_bytes().into()
}

fn head_mac(mac: &Hmac<Sha256>, seq: i64, last: &[u8]) -> [u8; 32] {
    let mut m = mac.clone();
    m.update(b"head");
    m.update(&seq.to_le_bytes());
    m.update(last);
    m.finalize().into_bytes().into()
}

impl AuditLog {
    /// An audit log on `store` (whose migrations created its tables), keyed by `keyring`, on
    /// the system wall clock.
    pub fn new(store: Store, keyring: Arc<Keyring>) -> Self {
        Self::with_clock(store, keyring, Arc::new(SystemWallClock))
    }

    /// As [`AuditLog::new`] with another wall clock.
    pub fn with_clock(store: Store, keyring: Arc<Keyring>, clock: Arc<dyn WallClock>) -> Self {
        Self::with_backend(Arc::new(SqliteAudit::new(store)), keyring, clock)
    }

    /// An audit log over any backend, on the wall clock `clock` (time since the Unix epoch).
    pub fn with_backend(
        backend: Arc<dyn AuditBackend>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        Self {
            backend,
            keyring,
            clock,
        }
    }

    /// Where the log is stored (a URL without credentials); logs and API-key registries at one
    /// location share transactions.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The identity of the store (connection pool) the backend uses, when it has one
    /// ([`Store::id`]).
    pub fn store_id(&self) -> Option<u64> {
        self.backend.store_id()
    }

    fn actor_tag(&self, kdf: Kdf, key_id: u32, actor: &str) -> Result<Vec<u8>> {
        let mut m = derive(&self.keyring, kdf, key_id, ACTOR_LABEL)?;
        m.update(actor.as_bytes());
        Ok(m.finalize().into_bytes().to_vec())
    }

    /// Appends an entry; returns its sequence number.
    pub fn append(&self, e: &NewAuditEntry) -> Result<i64> {
        metrics::start(metrics::Op::AuditAppend).finish(self.append_measured(e))
    }

    fn append_measured(&self, e: &NewAuditEntry) -> Result<i64> {
        let _span = tracing::info_span!("audit.append").entered();
        let prepared = self.prepare(e)?;
        let mut seq = 0;
        self.backend.write(&mut |tx| {
            seq = self.insert(tx, &prepared)?;
            Ok(())
        })?;
        Ok(seq)
    }

    /// Appends an entry inside `tx`, a write transaction on this log's database (an API-key
    /// backend's at the same [`AuditLog::location`]), so that the entry commits (or rolls back)
    /// together with whatever else `tx` does. Returns its sequence number.
    pub(crate) fn append_in(&self, tx: &dyn AuditWrite, e: &NewAuditEntry) -> Result<i64> {
        let prepared = self.prepare(e)?;
        self.insert(tx, &prepared)
    }

    /// Appends an entry if the database's write lock can be had within `wait`: `Ok(None)` when
    /// another connection held it longer (nothing was written), instead of the retries of
    /// [`AuditLog::append`] (up to the store's `busy_deadline`). For best-effort records that
    /// must not hold up their caller, such as refused API-key verifications.
    pub fn try_append(&self, e: &NewAuditEntry, wait: Duration) -> Result<Option<i64>> {
        metrics::start(metrics::Op::AuditAppend).finish(self.try_append_measured(e, wait))
    }

    fn try_append_measured(&self, e: &NewAuditEntry, wait: Duration) -> Result<Option<i64>> {
        let _span = tracing::info_span!("audit.append").entered();
        let prepared = self.prepare(e)?;
        let mut seq = 0;
        let written = self.backend.try_write(wait, &mut |tx| {
            seq = self.insert(tx, &prepared)?;
            Ok(())
        })?;
        Ok(written.then_some(seq))
    }

    /// Checks and encrypts an entry (outside any transaction).
    fn prepare(&self, e: &NewAuditEntry) -> Result<Prepared> {
        for (what, v) in [
            ("actor", &e.actor),
            ("action", &e.action),
            ("target", &e.target),
            ("outcome", &e.outcome),
        ] {
            check_field(what, v)?;
        }
        if let Some(r) = &e.request_id {
            check_field("request_id", r)?;
        }
        let key_id = self.keyring.primary_id();
        let kdf = Kdf::CURRENT;
        Ok(Prepared {
            key_id,
            kdf,
            chain: self.keyring.derive(key_id, LINK_LABEL)?.hmac(),
            tag: self.actor_tag(kdf, key_id, &e.actor)?,
            plaintext: encode(e),
            at: self.clock.now_ms(),
        })
    }

    fn insert(&self, tx: &dyn AuditWrite, p: &Prepared) -> Result<i64> {
        let last = tx.last_link()?;
        let (prev_seq, prev_link) = last.unwrap_or((0, vec![0u8; 32]));
        let seq = prev_seq + 1;
        let ad = Ad {
            table: TABLE,
            column: "entry",
            tenant: "",
            row: &[seq],
        };
        let ct = field::encrypt(&self.keyring, &p.plaintext, &ad)?;
        let l = link(&p.chain, &prev_link, seq, p.at, p.key_id, &p.tag, &ct);
        tx.insert_entry(&AuditRow {
            seq,
            at: p.at,
            key_id: p.key_id,
            actor_tag: &p.tag,
            entry: &ct,
            link: &l,
            kdf: p.kdf.stored(),
        })?;
        tx.set_head(seq, p.key_id, &head_mac(&p.chain, seq, &l), p.kdf.stored())?;
        Ok(seq)
    }

    /// Entries matching `q`, oldest first, decrypted.
    pub fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let _span = tracing::info_span!("audit.query").entered();
        let limit = if q.limit == 0 {
            DEFAULT_QUERY_LIMIT
        } else {
            q.limit
        };
        let tags = match &q.actor {
            None => None,
            // The actor's tag under every key and derivation version a row may use.
            Some(a) => Some(
                self.keyring
                    .key_ids()
                    .into_iter()
                    .flat_map(|id| Kdf::ALL.map(|kdf| (kdf, id)))
                    .map(|(kdf, id)| self.actor_tag(kdf, id, a))
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let filter = AuditFilter {
            from_ms: q.from_ms.unwrap_or(i64::MIN),
            until_ms: q.until_ms.unwrap_or(i64::MAX),
            actor_tags: tags.as_deref(),
            limit,
        };
        let mut rows = Vec::new();
        self.backend.read(&mut |r| {
            rows = r.entries(&filter)?;
            Ok(())
        })?;
        rows.into_iter()
            .map(|(seq, at, ct)| {
                let ad = Ad {
                    table: TABLE,
                    column: "entry",
                    tenant: "",
                    row: &[seq],
                };
                let pt = field::decrypt(&self.keyring, &ct, &ad)?;
                Ok(AuditEntry {
                    seq,
                    at_ms: at,
                    entry: decode(&pt)?,
                })
            })
            .collect()
    }

    /// Recomputes the whole chain and the head. Errors with [`CryptoError::AuditTampered`]
    /// naming the first entry that does not verify.
    pub fn verify(&self) -> Result<AuditVerification> {
        let _span = tracing::info_span!("audit.verify").entered();
        let (mut rows, mut head) = (Vec::new(), None);
        self.backend.read(&mut |r| {
            rows = r.chain()?;
            head = r.head()?;
            Ok(())
        })?;
        let tampered = |seq: i64| -> Error { CryptoError::AuditTampered { seq }.into() };
        let mut prev = [0u8; 32];
        let mut expected_seq = 1;
        for row in &rows {
            let seq = row.seq;
            if seq != expected_seq {
                return Err(tampered(expected_seq.min(seq)));
            }
            let kdf = Kdf::from_stored(row.kdf).map_err(|_| tampered(seq))?;
            let chain = derive(&self.keyring, kdf, row.key_id, LINK_LABEL)?;
            let l = link(
                &chain,
                &prev,
                seq,
                row.at,
                row.key_id,
                &row.actor_tag,
                &row.entry,
            );
            if l[..] != row.link[..] {
                return Err(tampered(seq));
            }
            prev = l;
            expected_seq += 1;
        }
        let last_seq = expected_seq - 1;
        match head {
            None if rows.is_empty() => {}
            None => return Err(tampered(last_seq)),
            Some(backend::AuditHead {
                seq,
                key_id,
                mac,
                kdf,
            }) => {
                let kdf = Kdf::from_stored(kdf).map_err(|_| tampered(last_seq + 1))?;
                let chain = derive(&self.keyring, kdf, key_id, LINK_LABEL)?;
                if seq != last_seq || head_mac(&chain, seq, &prev)[..] != mac[..] {
                    return Err(tampered(last_seq + 1));
                }
            }
        }
        Ok(AuditVerification {
            entries: rows.len() as u64,
            head: prev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualWallClock;
    use crate::store::test_support::TempDir;
    use crate::store::{sqlite_err, StoreOptions};
    use std::time::Duration;

    fn log(name: &str) -> (TempDir, Store, AuditLog, Arc<ManualWallClock>) {
        let dir = TempDir::new(name);
        let store = Store::open(dir.path().join("keel.db"), StoreOptions::default()).unwrap();
        let clock = Arc::new(ManualWallClock::at_ms(1_700_000_000_000));
        let keyring = Arc::new(Keyring::generate().unwrap());
        let audit = AuditLog::with_clock(store.clone(), keyring, clock.clone());
        (dir, store, audit, clock)
    }

    fn entry(actor: &str, action: &str) -> NewAuditEntry {
        NewAuditEntry {
            actor: actor.into(),
            action: action.into(),
            target: "key:7".into(),
            outcome: "success".into(),
            request_id: Some("req-canary-5521".into()),
        }
    }

    fn filled(name: &str) -> (TempDir, Store, AuditLog, Arc<ManualWallClock>) {
        let f = log(name);
        for i in 0..5 {
            f.2.append(&entry(
                if i % 2 == 0 { "alice" } else { "bob" },
                "api_key.create",
            ))
            .unwrap();
            f.3.advance(Duration::from_secs(10));
        }
        f
    }

    fn tampered_at(audit: &AuditLog) -> i64 {
        match audit.verify() {
            Err(Error::Crypto(CryptoError::AuditTampered { seq })) => seq,
            other => panic!("expected tampering to be detected, got {other:?}"),
        }
    }

    #[test]
    fn append_query_by_actor_and_time_and_verify() {
        let (_d, _s, audit, clock) = filled("audit-query");
        let v = audit.verify().unwrap();
        assert_eq!(v.entries, 5);
        let all = audit.query(&AuditQuery::default()).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(all[0].entry, entry("alice", "api_key.create"));
        let bob = audit
            .query(&AuditQuery {
                actor: Some("bob".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(bob.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4]);
        let start = all[1].at_ms;
        let window = audit
            .query(&AuditQuery {
                from_ms: Some(start),
                until_ms: Some(start + 20_000),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(window.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        clock.advance(Duration::from_secs(1));
        assert!(audit.verify().is_ok());
    }

    #[test]
    fn an_empty_log_verifies() {
        let (_d, _s, audit, _) = log("audit-empty");
        assert_eq!(audit.verify().unwrap().entries, 0);
    }

    fn exec(store: &Store, sql: &str) {
        store
            .write(|tx| tx.execute_batch(sql).map_err(sqlite_err))
            .unwrap();
    }

    #[test]
    fn edited_entries_are_detected() {
        let (_d, store, audit, _) = filled("audit-edit");
        exec(&store, "UPDATE audit_log SET at = at + 1 WHERE seq = 3");
        assert_eq!(tampered_at(&audit), 3);
    }

    #[test]
    fn swapped_ciphertexts_are_detected() {
        let (_d, store, audit, _) = filled("audit-swap");
        exec(
            &store,
            "UPDATE audit_log SET entry = (SELECT entry FROM audit_log WHERE seq = 2) WHERE seq = 4",
        );
        assert_eq!(tampered_at(&audit), 4);
    }

    #[test]
    fn deleted_entries_are_detected() {
        let (_d, store, audit, _) = filled("audit-delete");
        exec(&store, "DELETE FROM audit_log WHERE seq = 2");
        assert_eq!(tampered_at(&audit), 2);
        let (_d, store, audit, _) = filled("audit-delete-first");
        exec(&store, "DELETE FROM audit_log WHERE seq = 1");
        assert_eq!(tampered_at(&audit), 1);
    }

    #[test]
    fn an_entry_moved_to_another_derivation_version_is_detected() {
        let (_d, store, audit, _) = filled("audit-kdf");
        exec(&store, "UPDATE audit_log SET kdf = 1 WHERE seq = 2");
        assert_eq!(tampered_at(&audit), 2);
        let (_d, store, audit, _) = filled("audit-kdf-unknown");
        exec(&store, "UPDATE audit_log SET kdf = 7 WHERE seq = 3");
        assert_eq!(tampered_at(&audit), 3);
        let (_d, store, audit, _) = filled("audit-kdf-head");
        exec(&store, "UPDATE audit_head SET kdf = 1");
        assert_eq!(tampered_at(&audit), 6);
    }

    #[test]
    fn reordered_entries_are_detected() {
        let (_d, store, audit, _) = filled("audit-reorder");
        exec(
            &store,
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1;",
        );
        assert_eq!(tampered_at(&audit), 2);
    }

    #[test]
    fn inserted_entries_are_detected() {
        // In the middle: make room after seq 2 and copy a genuine entry (with its genuine link)
        // into the gap.
        let (_d, store, audit, _) = filled("audit-insert-middle");
        exec(
            &store,
            "UPDATE audit_log SET seq = seq + 100 WHERE seq > 2;
             UPDATE audit_log SET seq = seq - 99 WHERE seq > 100;
             INSERT INTO audit_log (seq, at, key_id, actor_tag, entry, link, kdf)
                 SELECT 3, at, key_id, actor_tag, entry, link, kdf FROM audit_log WHERE seq = 2;",
        );
        assert_eq!(tampered_at(&audit), 3);
        // At the end, with the head row moved along: the forged link does not chain.
        let (_d, store, audit, _) = filled("audit-insert-end");
        exec(
            &store,
            "INSERT INTO audit_log (seq, at, key_id, actor_tag, entry, link, kdf)
                 SELECT 6, at + 1, key_id, actor_tag, entry, link, kdf FROM audit_log WHERE seq = 5;
             UPDATE audit_head SET seq = 6;",
        );
        assert_eq!(tampered_at(&audit), 6);
        // At the end with the head left alone: the head no longer matches the last entry.
        let (_d, store, audit, _) = filled("audit-insert-headless");
        exec(
            &store,
            "INSERT INTO audit_log (seq, at, key_id, actor_tag, entry, link, kdf)
                 SELECT 6, at, key_id, actor_tag, entry, link, kdf FROM audit_log WHERE seq = 5;",
        );
        assert_eq!(tampered_at(&audit), 6);
    }

    #[test]
    fn try_append_gives_up_quickly_on_a_held_write_lock() {
        let (dir, _store, audit, _) = filled("audit-try-append");
        let holder = rusqlite::Connection::open(dir.path().join("keel.db")).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let got = audit
            .try_append(&entry("alice", "x"), Duration::from_millis(50))
            .unwrap();
        assert_eq!(got, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        holder.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            audit
                .try_append(&entry("alice", "x"), Duration::from_millis(50))
                .unwrap(),
            Some(6)
        );
        assert_eq!(audit.verify().unwrap().entries, 6);
    }

    #[test]
    fn truncation_after_the_head_is_detected() {
        let (_d, store, audit, _) = filled("audit-truncate");
        exec(&store, "DELETE FROM audit_log WHERE seq = 5");
        assert_eq!(tampered_at(&audit), 5);
        let (_d, store, audit, _) = filled("audit-truncate-all");
        exec(&store, "DELETE FROM audit_log");
        assert!(audit.verify().is_err());
    }

    #[test]
    fn entries_are_encrypted_and_bad_fields_refused() {
        let (dir, store, audit, _) = filled("audit-canary");
        store.checkpoint_truncate().unwrap();
        for name in ["keel.db", "keel.db-wal"] {
            let Ok(bytes) = std::fs::read(dir.path().join(name)) else {
                continue;
            };
            for needle in [b"req-canary-5521".as_slice(), b"alice", b"api_key.create"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{name}");
            }
        }
        let bad = NewAuditEntry {
            actor: "a\nb".into(),
            ..entry("x", "y")
        };
        assert!(audit.append(&bad).is_err());
        assert!(audit
            .append(&NewAuditEntry {
                target: "x".repeat(2000),
                ..entry("x", "y")
            })
            .is_err());
        assert_eq!(audit.verify().unwrap().entries, 5);
    }

    #[test]
    fn the_chain_survives_a_keyring_rotation() {
        let dir = TempDir::new("audit-rotation");
        let store = Store::open(dir.path().join("keel.db"), StoreOptions::default()).unwrap();
        let k1 = Arc::new(Keyring::generate().unwrap());
        AuditLog::new(store.clone(), k1.clone())
            .append(&entry("alice", "a"))
            .unwrap();
        let k2 = Arc::new(
            k1.with_key(k1.primary_id() + 1, &crate::crypto::test_key(9))
                .unwrap(),
        );
        let audit = AuditLog::new(store, k2);
        audit.append(&entry("alice", "b")).unwrap();
        assert_eq!(audit.verify().unwrap().entries, 2);
        let alice = audit
            .query(&AuditQuery {
                actor: Some("alice".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(alice.len(), 2, "actor tags under both keys are found");
    }
}
