//! The PostgreSQL audit backend: the `audit_log` and `audit_head` tables of a [`PgStore`].
//!
//! The chain never forks: [`AuditWrite::last_link`] inside a write first takes the
//! transaction-scoped advisory lock [`AUDIT_LOCK`], so appends (from any host) run one after
//! the other, each reading the link the previous one committed (READ COMMITTED: every statement
//! after the lock sees the previous holder's commit). An API-key transaction on the same
//! database ([`crate::auth::backend::PgApiKeys`]) appends through the same statements, so a key
//! and its audit entry commit together. [`AuditBackend::try_write`] gives up when the lock
//! cannot be had within its wait (`lock_timeout`).

use std::time::Duration;

use super::backend::StoredAuditRow;
use super::backend::{AuditBackend, AuditFilter, AuditHead, AuditRead, AuditRow, AuditWrite};
use crate::error::{Error, Result, StoreError};
use crate::store::postgres::{Mode, Tx};
use crate::store::PgStore;

/// Advisory-lock key of the audit chain.
const AUDIT_LOCK: &str = "SELECT pg_advisory_xact_lock(7738703049236938755)";

/// The audit log in a PostgreSQL database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgAudit {
    store: PgStore,
}

impl PgAudit {
    /// The audit log of an open store.
    pub fn new(store: PgStore) -> Self {
        Self { store }
    }
}

impl AuditBackend for PgAudit {
    fn read(&self, f: &mut dyn FnMut(&dyn AuditRead) -> Result<()>) -> Result<()> {
        self.store
            .transaction(Mode::Read, Some(super::backend::TABLE), |tx| f(tx))
    }

    fn write(&self, f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>) -> Result<()> {
        self.store
            .transaction(Mode::Write(""), Some(super::backend::TABLE), |tx| f(tx))
    }

    fn try_write(
        &self,
        wait: Duration,
        f: &mut dyn FnMut(&dyn AuditWrite) -> Result<()>,
    ) -> Result<bool> {
        let ms = wait.as_millis().clamp(1, i32::MAX as u128);
        let result = self
            .store
            .transaction(Mode::Write(""), Some(super::backend::TABLE), |tx| {
                tx.batch(&format!("SET LOCAL lock_timeout = {ms}"))?;
                f(tx)
            });
        match result {
            Ok(()) => Ok(true),
            // lock_not_available: the chain's lock stayed held longer than `wait`.
            Err(Error::Store(StoreError::Postgres { code, .. })) if code == "55P03" => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn location(&self) -> String {
        self.store.location().to_owned()
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

impl AuditWrite for Tx<'_> {
    fn last_link(&self) -> Result<Option<(i64, Vec<u8>)>> {
        self.batch(AUDIT_LOCK)?;
        Ok(self
            .query_opt(
                "SELECT seq, link FROM audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn insert_entry(&self, row: &AuditRow<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO audit_log (seq, at, key_id, actor_tag, entry, link, kdf)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &row.seq,
                &row.at,
                &i64::from(row.key_id),
                &row.actor_tag,
                &row.entry,
                &row.link,
                &row.kdf,
            ],
        )?;
        Ok(())
    }

    fn set_head(&self, seq: i64, key_id: u32, mac: &[u8], kdf: i64) -> Result<()> {
        self.execute(
            "INSERT INTO audit_head (id, seq, key_id, mac, kdf) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, key_id = excluded.key_id,
             mac = excluded.mac, kdf = excluded.kdf",
            &[&seq, &i64::from(key_id), &mac, &kdf],
        )?;
        Ok(())
    }
}

impl AuditRead for Tx<'_> {
    fn entries(&self, filter: &AuditFilter<'_>) -> Result<Vec<(i64, i64, Vec<u8>)>> {
        let limit = i64::from(filter.limit);
        let rows = match filter.actor_tags {
            None => self.query(
                "SELECT seq, at, entry FROM audit_log WHERE at >= $1 AND at < $2
                 ORDER BY seq LIMIT $3",
                &[&filter.from_ms, &filter.until_ms, &limit],
            )?,
            Some(tags) => self.query(
                "SELECT seq, at, entry FROM audit_log WHERE at >= $1 AND at < $2
                 AND actor_tag = ANY($3) ORDER BY seq LIMIT $4",
                &[&filter.from_ms, &filter.until_ms, &tags, &limit],
            )?,
        };
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn chain(&self) -> Result<Vec<StoredAuditRow>> {
        let rows = self.query(
            "SELECT seq, at, key_id, actor_tag, entry, link, kdf FROM audit_log ORDER BY seq",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| StoredAuditRow {
                seq: r.get(0),
                at: r.get(1),
                key_id: r.get::<_, i64>(2) as u32,
                actor_tag: r.get(3),
                entry: r.get(4),
                link: r.get(5),
                kdf: r.get(6),
            })
            .collect())
    }

    fn head(&self) -> Result<Option<AuditHead>> {
        Ok(self
            .query_opt(
                "SELECT seq, key_id, mac, kdf FROM audit_head WHERE id = 1",
                &[],
            )?
            .map(|r| AuditHead {
                seq: r.get(0),
                key_id: r.get::<_, i64>(1) as u32,
                mac: r.get(2),
                kdf: r.get(3),
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::audit::{AuditLog, AuditQuery, NewAuditEntry};
    use crate::crypto::Keyring;
    use crate::error::CryptoError;
    use crate::store::postgres::test_server::server;
    use crate::store::test_support::TempDir;
    use crate::store::PgOptions;

    fn entry(actor: &str, i: usize) -> NewAuditEntry {
        NewAuditEntry {
            actor: actor.into(),
            action: "api_key.create".into(),
            target: format!("key:{i}"),
            outcome: "success".into(),
            request_id: Some("req-pg-canary-8812".into()),
        }
    }

    fn log(url: &str, keyring: &Arc<Keyring>) -> AuditLog {
        let store = PgStore::open(url, PgOptions::default()).unwrap();
        AuditLog::with_backend(
            Arc::new(PgAudit::new(store)),
            keyring.clone(),
            Arc::new(crate::clock::SystemWallClock),
        )
    }

    #[test]
    fn concurrent_writers_on_several_stores_keep_one_strictly_ordered_chain() {
        let dir = TempDir::new("pg-audit-order");
        let url = server().database_for(dir.path());
        let keyring = Arc::new(Keyring::generate().unwrap());
        let logs: Vec<_> = (0..3).map(|_| Arc::new(log(&url, &keyring))).collect();
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let (audit, barrier) = (Arc::clone(&logs[t % 3]), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..25)
                        .map(|i| audit.append(&entry(&format!("w{t}"), i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<i64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=150).collect::<Vec<_>>(),
            "no seq twice, none lost"
        );
        assert_eq!(logs[1].verify().unwrap().entries, 150);
        let w4 = logs[0]
            .query(&AuditQuery {
                actor: Some("w4".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(w4.len(), 25);
    }

    #[test]
    fn edits_deletions_reorders_and_truncation_are_detected() {
        let keyring = Arc::new(Keyring::generate().unwrap());
        let cases = [
            ("UPDATE audit_log SET at = at + 1 WHERE seq = 3", 3),
            (
                "UPDATE audit_log SET entry = (SELECT entry FROM audit_log WHERE seq = 2) \
                 WHERE seq = 4",
                4,
            ),
            ("DELETE FROM audit_log WHERE seq = 2", 2),
            (
                "UPDATE audit_log SET seq = -1 WHERE seq = 2; \
                 UPDATE audit_log SET seq = 2 WHERE seq = 3; \
                 UPDATE audit_log SET seq = 3 WHERE seq = -1;",
                2,
            ),
            ("DELETE FROM audit_log WHERE seq = 5", 5),
            ("UPDATE audit_head SET kdf = 1", 6),
        ];
        for (i, (sql, seq)) in cases.into_iter().enumerate() {
            let dir = TempDir::new(&format!("pg-audit-tamper-{i}"));
            let url = server().database_for(dir.path());
            let audit = log(&url, &keyring);
            for n in 0..5 {
                audit.append(&entry("alice", n)).unwrap();
            }
            assert_eq!(audit.verify().unwrap().entries, 5);
            server().exec(&url, sql);
            match audit.verify() {
                Err(crate::Error::Crypto(CryptoError::AuditTampered { seq: got })) => {
                    assert_eq!(got, seq, "{sql}")
                }
                other => panic!("{sql}: expected tampering, got {other:?}"),
            }
        }
    }

    #[test]
    fn try_append_gives_up_while_another_host_holds_the_chain() {
        let dir = TempDir::new("pg-audit-try");
        let url = server().database_for(dir.path());
        let keyring = Arc::new(Keyring::generate().unwrap());
        let audit = log(&url, &keyring);
        audit.append(&entry("alice", 0)).unwrap();
        let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        holder
            .batch_execute(&format!("BEGIN; {AUDIT_LOCK}"))
            .unwrap();
        let started = std::time::Instant::now();
        let got = audit
            .try_append(&entry("alice", 1), Duration::from_millis(50))
            .unwrap();
        assert_eq!(got, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        holder.batch_execute("ROLLBACK").unwrap();
        assert_eq!(
            audit
                .try_append(&entry("alice", 1), Duration::from_millis(50))
                .unwrap(),
            Some(2)
        );
        assert_eq!(audit.verify().unwrap().entries, 2);
    }
}
