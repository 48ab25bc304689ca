//! Moves a SQLite deployment (memory, API keys, audit log) into an empty PostgreSQL database.
//!
//! ```text
//! KEEL_KEYRING_FILE=/etc/keel/keyring \
//!   cargo run --example migrate_to_postgres -- sqlite:///var/lib/app/keel.db postgres://app@db/keel
//! ```
//!
//! The keyring (`KEEL_KEYRING`, or a key file named by `KEEL_KEYRING_FILE`) must be the one the
//! SQLite data was written with: ciphertexts are copied as they are, then every session, the
//! audit chain and the API-key rows are checked on PostgreSQL with it. The password of the
//! PostgreSQL URL is never printed.

use std::process::ExitCode;
use std::sync::Arc;

use keel::config::{parse_url, Backend};
use keel::store::postgres::migrate::copy_from_sqlite;
use keel::Keyring;

fn run() -> keel::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to] = args.as_slice() else {
        return Err(keel::Error::InvalidArgument(
            "usage: migrate_to_postgres sqlite:///path/keel.db postgres://user@host:port/db".into(),
        ));
    };
    let Backend::Sqlite(path) = parse_url("source", from)? else {
        return Err(keel::Error::InvalidArgument(
            "source: use a sqlite:/// URL".into(),
        ));
    };
    let Backend::Postgres(url) = parse_url("target", to)? else {
        return Err(keel::Error::InvalidArgument(
            "target: use a postgres:// URL".into(),
        ));
    };
    let keyring = match std::env::var_os("KEEL_KEYRING_FILE") {
        Some(file) => Keyring::from_file(file)?,
        None => Keyring::from_env(keel::crypto::KEYRING_ENV)?,
    };
    let report = copy_from_sqlite(&path, url.expose(), Arc::new(keyring))?;
    println!(
        "moved {} sessions, {} messages, {} API keys, {} audit entries to {url} (checked)",
        report.sessions, report.messages, report.api_keys, report.audit_entries
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate_to_postgres: {e}");
            ExitCode::FAILURE
        }
    }
}
