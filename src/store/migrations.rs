//! Versioned schemas, one sequence per component.
//!
//! Each SQLite backend owns its tables and their migrations: the memory backend
//! (`memory/backend/sqlite.rs`), the API-key backend (`auth/backend/sqlite.rs`) and the audit
//! backend (`crypto/audit/backend.rs`) each declare a [`Schema`], an append-only list of steps (a
//! released step is never edited; a change is a new step). The table
//! `keel_schema (component, version)` records how many steps of each component a database has
//! run, so that the components of one file migrate independently and a database holding only
//! some of them (a memory-only file) never gets the others' tables.
//!
//! [`ensure`] runs inside the caller's `BEGIN IMMEDIATE` transaction ([`super::Store::ensure_schemas`]):
//! it reads the version under the write lock, so processes opening a fresh file together
//! serialise and the later ones find the steps done.
//!
//! Databases written before per-component schemas (keel up to issue 9) ran one shared sequence
//! recorded in `PRAGMA user_version` (1 to 6). A component with no `keel_schema` row adopts the
//! version its [`Schema::legacy`] mapping gives for that `user_version` (0 for a fresh file), and
//! runs the steps after it: existing databases open and keep all their data
//! (tests/schema_components.rs, on fixtures of each earlier version). `user_version` is left as
//! it was.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Result, StoreError};

/// One component's schema: its name in `keel_schema` and its migration steps, in order.
#[derive(Debug)]
pub struct Schema {
    /// The component's name (`memory`, `api_keys`, `audit`).
    pub component: &'static str,
    /// SQL batches; after step `n` the component is at version `n` (1-based).
    pub steps: &'static [&'static str],
    /// The component's version in a database migrated by the shared sequence of earlier keel
    /// (`PRAGMA user_version` 0..=6), read when the component has no `keel_schema` row yet.
    pub legacy: fn(i64) -> i64,
}

impl Schema {
    /// The version after every step.
    pub fn latest(&self) -> i64 {
        self.steps.len() as i64
    }
}

const REGISTRY: &str = "CREATE TABLE IF NOT EXISTS keel_schema (
    component TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL
)";

fn failed(component: &str, what: &str, e: &rusqlite::Error) -> crate::error::Error {
    StoreError::Migration(format!("{component} schema: {what}: {e}")).into()
}

/// The version `schema`'s component is at in this database (adopting the legacy mapping when it
/// has no row); `None` before [`ensure`] ever ran on the file.
pub(crate) fn version(conn: &Connection, schema: &Schema) -> Result<i64> {
    let has_registry: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keel_schema')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| failed(schema.component, "read keel_schema", &e))?;
    let recorded: Option<i64> = if has_registry {
        conn.query_row(
            "SELECT version FROM keel_schema WHERE component = ?1",
            [schema.component],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| failed(schema.component, "read keel_schema", &e))?
    } else {
        None
    };
    match recorded {
        Some(v) => Ok(v),
        None => {
            let legacy: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| failed(schema.component, "read user_version", &e))?;
            Ok((schema.legacy)(legacy))
        }
    }
}

/// Brings `schema`'s component to its latest version, inside the caller's write transaction
/// `tx`. A database at a version this code does not know (written by a newer keel) is a
/// [`StoreError::Migration`] naming the component and both versions.
pub(crate) fn ensure(tx: &Connection, schema: &Schema) -> Result<()> {
    let at = version(tx, schema)?;
    let latest = schema.latest();
    if at > latest {
        return Err(StoreError::Migration(format!(
            "{} schema is at version {at}, newer than this keel knows ({latest}): upgrade keel",
            schema.component
        ))
        .into());
    }
    tx.execute_batch(REGISTRY)
        .map_err(|e| failed(schema.component, "create keel_schema", &e))?;
    for (n, step) in schema.steps.iter().enumerate().skip(at as usize) {
        tx.execute_batch(step)
            .map_err(|e| failed(schema.component, &format!("step {}", n + 1), &e))?;
    }
    tx.execute(
        "INSERT INTO keel_schema (component, version) VALUES (?1, ?2)
         ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        params![schema.component, latest],
    )
    .map_err(|e| failed(schema.component, "record version", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static TWO: Schema = Schema {
        component: "test",
        steps: &[
            "CREATE TABLE t (a INTEGER)",
            "ALTER TABLE t ADD COLUMN b INTEGER",
        ],
        legacy: |v| v.min(2),
    };

    #[test]
    fn steps_run_once_and_the_version_is_recorded() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn, &TWO).unwrap(), 0);
        ensure(&conn, &TWO).unwrap();
        ensure(&conn, &TWO).unwrap();
        assert_eq!(version(&conn, &TWO).unwrap(), 2);
        conn.execute("INSERT INTO t (a, b) VALUES (1, 2)", [])
            .unwrap();
    }

    #[test]
    fn a_legacy_user_version_is_adopted_and_the_rest_runs() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER); PRAGMA user_version = 1;")
            .unwrap();
        ensure(&conn, &TWO).unwrap();
        assert_eq!(version(&conn, &TWO).unwrap(), 2);
        conn.execute("INSERT INTO t (a, b) VALUES (1, 2)", [])
            .unwrap();
    }

    #[test]
    fn a_newer_database_is_refused_naming_the_component() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(REGISTRY).unwrap();
        conn.execute("INSERT INTO keel_schema VALUES ('test', 9)", [])
            .unwrap();
        let e = ensure(&conn, &TWO).unwrap_err().to_string();
        assert!(e.contains("test") && e.contains('9'), "{e}");
    }
}
