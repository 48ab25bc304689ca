//! The PostgreSQL API-key backend: the `api_keys` and `api_keys_upgrade` tables of a
//! [`PgStore`], whose transactions also write the audit tables of the same database (the audit
//! statements are those of [`crate::crypto::audit::PgAudit`], on the same transaction type).
//!
//! Writes take no database-wide lock: a key's row is its own (ids from an identity column,
//! hashes unique); the audit chain's order is kept by its own advisory lock, taken when an
//! entry is appended. [`ApiKeyBackend::touch`] never waits: `FOR UPDATE NOWAIT` fails at once
//! on a row another transaction holds.

use super::{ApiKeyBackend, ApiKeyRead, ApiKeyWrite, KeyInfoRow, KeyPolicyRow, NewKeyRow};
use crate::error::Result;
use crate::store::postgres::{Mode, Tx};
use crate::store::PgStore;

/// API keys in a PostgreSQL database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgApiKeys {
    store: PgStore,
}

impl PgApiKeys {
    /// The registry's rows in an open store.
    pub fn new(store: PgStore) -> Self {
        Self { store }
    }
}

impl ApiKeyBackend for PgApiKeys {
    fn read(&self, f: &mut dyn FnMut(&dyn ApiKeyRead) -> Result<()>) -> Result<()> {
        self.store
            .transaction(Mode::Read, Some(super::TABLE), |tx| f(tx))
    }

    fn write(&self, f: &mut dyn FnMut(&dyn ApiKeyWrite) -> Result<()>) -> Result<()> {
        self.store
            .transaction(Mode::Write(""), Some(super::TABLE), |tx| f(tx))
    }

    fn touch(&self, id: i64, at: i64) -> Result<()> {
        self.store.autocommit(|conn| {
            let st = conn.statement(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE id = (SELECT id FROM api_keys WHERE id = $2 FOR UPDATE NOWAIT)",
            )?;
            conn.client.execute(&st, &[&at, &id]).map(drop)
        })
    }

    fn location(&self) -> String {
        self.store.location().to_owned()
    }

    fn store_id(&self) -> Option<u64> {
        Some(self.store.id())
    }
}

macro_rules! policy_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, name, env, display, hash, secret_key_id, scopes, rate_limit, \
             rate_window_ms, created_at, expires_at, revoked_at, replaced_by, policy_mac, kdf \
             FROM api_keys ",
            $tail
        )
    };
}

macro_rules! info_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, name, env, display, scopes, metadata, rate_limit, \
             rate_window_ms, created_at, expires_at, revoked_at, last_used_at, replaced_by \
             FROM api_keys ",
            $tail
        )
    };
}

fn policy_row(r: &postgres::Row) -> KeyPolicyRow {
    KeyPolicyRow {
        id: r.get(0),
        tenant: r.get(1),
        name: r.get(2),
        env: r.get(3),
        display: r.get(4),
        hash: r.get(5),
        secret_key_id: r.get::<_, i64>(6) as u32,
        scopes: r.get(7),
        rate_limit: r.get(8),
        rate_window_ms: r.get(9),
        created_at: r.get(10),
        expires_at: r.get(11),
        revoked_at: r.get(12),
        replaced_by: r.get(13),
        policy_mac: r.get(14),
        kdf: r.get(15),
    }
}

fn info_row(r: &postgres::Row) -> KeyInfoRow {
    KeyInfoRow {
        id: r.get(0),
        tenant: r.get(1),
        name: r.get(2),
        env: r.get(3),
        display: r.get(4),
        scopes: r.get(5),
        metadata: r.get(6),
        rate_limit: r.get(7),
        rate_window_ms: r.get(8),
        created_at: r.get(9),
        expires_at: r.get(10),
        revoked_at: r.get(11),
        last_used_at: r.get(12),
        replaced_by: r.get(13),
    }
}

impl ApiKeyRead for Tx<'_> {
    fn by_hash(&self, hash: &[u8]) -> Result<Option<KeyPolicyRow>> {
        Ok(self
            .query_opt(policy_select!("WHERE hash = $1"), &[&hash])?
            .map(|r| policy_row(&r)))
    }

    fn policy(&self, tenant: &str, id: i64) -> Result<Option<KeyPolicyRow>> {
        Ok(self
            .query_opt(
                policy_select!("WHERE tenant_id = $1 AND id = $2"),
                &[&tenant, &id],
            )?
            .map(|r| policy_row(&r)))
    }

    fn info(&self, tenant: &str, id: i64) -> Result<Option<KeyInfoRow>> {
        Ok(self
            .query_opt(
                info_select!("WHERE tenant_id = $1 AND id = $2"),
                &[&tenant, &id],
            )?
            .map(|r| info_row(&r)))
    }

    fn infos(&self, tenant: &str) -> Result<Vec<KeyInfoRow>> {
        Ok(self
            .query(info_select!("WHERE tenant_id = $1 ORDER BY id"), &[&tenant])?
            .iter()
            .map(info_row)
            .collect())
    }

    fn metadata(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt("SELECT metadata FROM api_keys WHERE id = $1", &[&id])?
            .and_then(|r| r.get(0)))
    }

    fn upgrade_marker(&self) -> Result<Option<i64>> {
        Ok(self
            .query_opt("SELECT max_id FROM api_keys_upgrade WHERE id = 1", &[])?
            .map(|r| r.get(0)))
    }

    fn unsealed(&self, max_id: i64) -> Result<Vec<KeyPolicyRow>> {
        Ok(self
            .query(
                policy_select!("WHERE policy_mac IS NULL AND id <= $1"),
                &[&max_id],
            )?
            .iter()
            .map(policy_row)
            .collect())
    }

    fn has_kdf(&self, kdf: i64) -> Result<bool> {
        Ok(self
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE kdf = $1)",
                &[&kdf],
            )?
            .get(0))
    }
}

impl ApiKeyWrite for Tx<'_> {
    fn insert_key(&self, k: &NewKeyRow<'_>) -> Result<i64> {
        Ok(self
            .query_one(
                "INSERT INTO api_keys (tenant_id, name, env, display, hash, secret_key_id,
                     scopes, rate_limit, rate_window_ms, created_at, expires_at, kdf)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                &[
                    &k.tenant,
                    &k.name,
                    &k.env,
                    &k.display,
                    &k.hash,
                    &i64::from(k.secret_key_id),
                    &k.scopes,
                    &k.rate_limit,
                    &k.rate_window_ms,
                    &k.created_at,
                    &k.expires_at,
                    &k.kdf,
                ],
            )?
            .get(0))
    }

    fn set_metadata(&self, id: i64, ciphertext: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET metadata = $1 WHERE id = $2",
            &[&ciphertext, &id],
        )
        .map(drop)
    }

    fn set_policy_mac(&self, id: i64, mac: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET policy_mac = $1 WHERE id = $2",
            &[&mac, &id],
        )
        .map(drop)
    }

    fn set_revoked(&self, id: i64, at: i64) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2",
            &[&at, &id],
        )
        .map(drop)
    }

    fn set_replaced(&self, id: i64, replaced_by: i64, expires_at: Option<i64>) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET replaced_by = $1, expires_at = $2 WHERE id = $3",
            &[&replaced_by, &expires_at, &id],
        )
        .map(drop)
    }

    fn drop_upgrade_marker(&self) -> Result<()> {
        self.execute("DELETE FROM api_keys_upgrade", &[]).map(drop)
    }
}
