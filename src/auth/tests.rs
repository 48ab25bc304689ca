use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::clock::{ManualClock, ManualWallClock, WallClock};
use crate::crypto::Keyring;
use crate::error::{AuthError, Error};
use crate::store::test_support::TempDir;
use crate::store::{Store, StoreOptions};

/// The backends of one database: an API-key backend and an audit backend at the same location.
struct Backends {
    keys: Arc<dyn backend::ApiKeyBackend>,
    audit: Arc<dyn crate::crypto::audit::AuditBackend>,
}

/// Opens the backends of the database kept in `dir` (a second call reaches the same data).
type Make = fn(&std::path::Path) -> Backends;

fn sqlite(dir: &std::path::Path) -> Backends {
    let store = Store::open(dir.join("keel.db"), StoreOptions::default()).unwrap();
    Backends {
        keys: Arc::new(backend::SqliteApiKeys::new(store.clone())),
        audit: Arc::new(crate::crypto::audit::SqliteAudit::new(store)),
    }
}

/// Instantiates every behavioural test below for one backend factory: a new backend adds one
/// `auth_suite!` line.
macro_rules! auth_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            auth_suite!(@tests $make;
                create_then_verify_returns_identity_and_scopes,
                malformed_mistyped_and_unknown_keys_are_refused,
                revocation_is_immediate_here_and_bounded_by_the_cache_ttl_elsewhere,
                expiry_is_checked_even_for_cached_keys,
                rotation_keeps_the_old_key_for_the_grace_period,
                tenants_never_see_each_others_keys,
                keys_made_under_an_older_keyring_primary_still_verify,
                bad_input_is_a_typed_error_and_nothing_is_stored,
                admin_operations_and_refused_keys_are_audited,
                refused_verifications_cannot_flood_the_audit_log,
                keys_of_environments_the_registry_does_not_accept_are_refused,
            );
        }
    };
    (@tests $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test($make)
            }
        )*
    };
}

auth_suite!(sqlite_backend, super::sqlite);

/// PostgreSQL: one test server per run, a database per test directory.
#[cfg(feature = "postgres")]
fn postgres(dir: &std::path::Path) -> Backends {
    let url = crate::store::postgres::test_server::server().database_for(dir);
    let store = crate::store::PgStore::open(&url, crate::store::PgOptions::default()).unwrap();
    Backends {
        keys: Arc::new(backend::PgApiKeys::new(store.clone())),
        audit: Arc::new(crate::crypto::audit::PgAudit::new(store)),
    }
}

#[cfg(feature = "postgres")]
auth_suite!(postgres_backend, super::postgres);

#[cfg(feature = "postgres")]
#[test]
fn postgres_policy_edits_are_refused_and_audit_commits_with_the_key() {
    use crate::crypto::AuditLog;
    let f = fixture_on(postgres, "pg-auth-tamper", Duration::from_secs(3600));
    let b = f.backends();
    assert_eq!(b.keys.location(), b.audit.location());
    let audit = Arc::new(AuditLog::with_backend(
        b.audit,
        f.keyring.clone(),
        f.clock.wall.clone(),
    ));
    let keys = ApiKeys::with_backend(b.keys, f.keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .try_with_audit(audit.clone())
        .unwrap();
    let (plaintext, info) = keys.create("alice", &new_key("acme")).unwrap();
    let url = crate::store::postgres::test_server::server().database_for(f.dir.path());
    let server = crate::store::postgres::test_server::server();
    // The key's audit entry commits in the key's transaction: a failing audit insert rolls
    // the key back.
    server.exec(
        &url,
        "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'audit down'; END $$;
         CREATE TRIGGER fail_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION fail();",
    );
    assert!(keys.create("alice", &new_key("acme")).is_err());
    assert_eq!(
        keys.list("acme").unwrap().len(),
        1,
        "no key without its entry"
    );
    server.exec(&url, "DROP TRIGGER fail_audit ON audit_log;");
    assert_eq!(audit.verify().unwrap().entries, 1);
    // A policy column edited without the keyring: refused by a registry that reads the row.
    server.exec(
        &url,
        &format!(
            "UPDATE api_keys SET scopes = 'admin' WHERE id = {}",
            info.id
        ),
    );
    let fresh = f.open(&f.keyring, Duration::from_secs(1));
    assert!(fresh.verify(&plaintext).is_err());
    // The audit log is tamper-evident on PostgreSQL too.
    server.exec(&url, "UPDATE audit_log SET at = at + 1 WHERE seq = 1;");
    assert!(matches!(
        audit.verify(),
        Err(Error::Crypto(crate::CryptoError::AuditTampered { seq: 1 }))
    ));
}

struct Fixture {
    dir: TempDir,
    path: std::path::PathBuf,
    keyring: Arc<Keyring>,
    clock: Arc<TestClock>,
    keys: ApiKeys,
    make: Make,
}

/// The wall clock (timestamps, expiry) and the monotonic clock (cache TTL), moved together.
#[derive(Debug)]
struct TestClock {
    wall: Arc<ManualWallClock>,
    mono: Arc<ManualClock>,
}

impl TestClock {
    fn advance(&self, by: Duration) {
        self.wall.advance(by);
        self.mono.advance(by);
    }

    /// Wall time since the Unix epoch.
    fn now(&self) -> Duration {
        Duration::from_millis(self.wall.now_ms() as u64)
    }
}

impl Fixture {
    /// Another registry (as in another process) on the same database.
    fn open(&self, keyring: &Arc<Keyring>, ttl: Duration) -> ApiKeys {
        let options = ApiKeysOptions {
            cache_ttl: ttl,
            ..ApiKeysOptions::default()
        };
        ApiKeys::with_backend_and_clocks(
            (self.make)(self.dir.path()).keys,
            keyring.clone(),
            options,
            self.clock.wall.clone(),
            self.clock.mono.clone(),
        )
        .unwrap()
    }

    /// Fresh backends on the same database.
    fn backends(&self) -> Backends {
        (self.make)(self.dir.path())
    }
}

fn fixture_on(make: Make, name: &str, cache_ttl: Duration) -> Fixture {
    let dir = TempDir::new(name);
    let path = dir.path().join("keel.db");
    let keyring = Arc::new(Keyring::generate().unwrap());
    let clock = Arc::new(TestClock {
        wall: Arc::new(ManualWallClock::at_ms(1_700_000_000_000)),
        mono: Arc::new(ManualClock::new()),
    });
    let keys = ApiKeys::with_backend_and_clocks(
        make(dir.path()).keys,
        keyring.clone(),
        ApiKeysOptions {
            cache_ttl,
            ..ApiKeysOptions::default()
        },
        clock.wall.clone(),
        clock.mono.clone(),
    )
    .unwrap();
    Fixture {
        dir,
        path,
        keyring,
        clock,
        keys,
        make,
    }
}

fn fixture(name: &str, cache_ttl: Duration) -> Fixture {
    fixture_on(sqlite, name, cache_ttl)
}

fn open(
    path: &std::path::Path,
    keyring: &Arc<Keyring>,
    clock: &Arc<TestClock>,
    ttl: Duration,
) -> ApiKeys {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    let options = ApiKeysOptions {
        cache_ttl: ttl,
        ..ApiKeysOptions::default()
    };
    ApiKeys::with_clocks(
        store,
        keyring.clone(),
        options,
        clock.wall.clone(),
        clock.mono.clone(),
    )
    .unwrap()
}

fn new_key(tenant: &str) -> NewKey {
    NewKey {
        tenant: tenant.into(),
        name: "mobile app".into(),
        env: "live".into(),
        scopes: vec!["chat:write".into(), "memory:read".into()],
        metadata: Some(r#"{"owner":"canary-owner-7731"}"#.into()),
        rate_limit: Some((60, Duration::from_secs(60))),
        ..NewKey::default()
    }
}

fn auth_err(e: Error) -> AuthError {
    match e {
        Error::Auth(a) => a,
        other => panic!("expected an auth error, got {other}"),
    }
}

fn create_then_verify_returns_identity_and_scopes(make: Make) {
    let f = fixture_on(make, "auth-verify", Duration::from_secs(1));
    let (plaintext, info) = f.keys.create("admin", &new_key("acme")).unwrap();
    assert!(plaintext.starts_with("keel_live_"));
    assert_eq!(info.display, plaintext[..16]);
    assert_eq!(
        info.metadata.as_deref(),
        Some(r#"{"owner":"canary-owner-7731"}"#)
    );
    let id = f.keys.verify(&plaintext).unwrap();
    assert_eq!((id.tenant.as_str(), id.key_id), ("acme", info.id));
    assert!(id.has_scope("chat:write") && !id.has_scope("admin"));
    assert!(id.require("memory:read").is_ok());
    assert_eq!(
        auth_err(id.require("admin").unwrap_err()),
        AuthError::MissingScope {
            scope: "admin".into()
        }
    );
    assert_eq!(id.rate_limit, Some((60, Duration::from_secs(60))));
    // Cached and uncached verification agree.
    assert_eq!(f.keys.verify(&plaintext).unwrap(), id);
    assert!(f
        .keys
        .get("acme", info.id)
        .unwrap()
        .last_used_at_ms
        .is_some());
}

fn malformed_mistyped_and_unknown_keys_are_refused(make: Make) {
    let f = fixture_on(make, "auth-refuse", Duration::from_secs(1));
    let (plaintext, _) = f.keys.create("admin", &new_key("acme")).unwrap();
    assert_eq!(
        auth_err(f.keys.verify("Bearer nonsense").unwrap_err()),
        AuthError::Malformed
    );
    let mut typo = plaintext.to_string().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(
        auth_err(f.keys.verify(&typo).unwrap_err()),
        AuthError::BadChecksum
    );
    let stranger = crate::auth::generate("live").unwrap();
    assert_eq!(
        auth_err(f.keys.verify(&stranger).unwrap_err()),
        AuthError::UnknownKey
    );
}

fn revocation_is_immediate_here_and_bounded_by_the_cache_ttl_elsewhere(make: Make) {
    // The revoking instance caches for an hour: only the cache invalidation can make it refuse.
    let f = fixture_on(make, "auth-revoke", Duration::from_secs(3600));
    let (plaintext, info) = f.keys.create("admin", &new_key("acme")).unwrap();
    let other = f.open(&f.keyring, Duration::from_millis(200));
    other.verify(&plaintext).unwrap(); // now cached in `other`
    f.keys.verify(&plaintext).unwrap(); // and in `f.keys`
    f.keys.revoke("admin", "acme", info.id).unwrap();
    assert_eq!(
        auth_err(f.keys.verify(&plaintext).unwrap_err()),
        AuthError::Revoked
    );
    // Another process notices within its cache TTL, not before (the documented bound)...
    f.clock.advance(Duration::from_millis(199));
    assert!(other.verify(&plaintext).is_ok(), "still cached elsewhere");
    // ...and at the latest when it has passed.
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        auth_err(other.verify(&plaintext).unwrap_err()),
        AuthError::Revoked
    );
    f.keys.revoke("admin", "acme", info.id).unwrap();
    assert!(f.keys.get("acme", info.id).unwrap().revoked_at_ms.is_some());
}

fn expiry_is_checked_even_for_cached_keys(make: Make) {
    let f = fixture_on(make, "auth-expiry", Duration::from_secs(3600));
    let expires_at = UNIX_EPOCH + f.clock.now() + Duration::from_secs(10);
    let (plaintext, _) = f
        .keys
        .create(
            "admin",
            &NewKey {
                expires_at: Some(expires_at),
                ..new_key("acme")
            },
        )
        .unwrap();
    f.keys.verify(&plaintext).unwrap();
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(
        auth_err(f.keys.verify(&plaintext).unwrap_err()),
        AuthError::Expired
    );
}

fn rotation_keeps_the_old_key_for_the_grace_period(make: Make) {
    let f = fixture_on(make, "auth-rotate", Duration::from_secs(3600));
    let (old, info) = f.keys.create("admin", &new_key("acme")).unwrap();
    f.keys.verify(&old).unwrap();
    let (new, new_info) = f
        .keys
        .rotate("admin", "acme", info.id, Duration::from_secs(60))
        .unwrap();
    assert_ne!(old, new);
    assert_eq!(new_info.scopes, info.scopes);
    assert_eq!(new_info.metadata, info.metadata);
    assert_eq!(
        f.keys.get("acme", info.id).unwrap().replaced_by,
        Some(new_info.id)
    );
    f.clock.advance(Duration::from_secs(59));
    assert!(f.keys.verify(&old).is_ok(), "within the grace period");
    assert!(f.keys.verify(&new).is_ok());
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        auth_err(f.keys.verify(&old).unwrap_err()),
        AuthError::Expired
    );
    assert!(f.keys.verify(&new).is_ok());
}

fn tenants_never_see_each_others_keys(make: Make) {
    let f = fixture_on(make, "auth-tenants", Duration::from_secs(1));
    let (_, a) = f.keys.create("admin", &new_key("tenant-a")).unwrap();
    f.keys.create("admin", &new_key("tenant-b")).unwrap();
    assert_eq!(f.keys.list("tenant-a").unwrap().len(), 1);
    assert_eq!(
        auth_err(f.keys.get("tenant-b", a.id).unwrap_err()),
        AuthError::UnknownKey
    );
    assert_eq!(
        auth_err(f.keys.revoke("admin", "tenant-b", a.id).unwrap_err()),
        AuthError::UnknownKey
    );
    assert!(f
        .keys
        .get("tenant-a", a.id)
        .unwrap()
        .revoked_at_ms
        .is_none());
}

fn keys_made_under_an_older_keyring_primary_still_verify(make: Make) {
    let f = fixture_on(make, "auth-keyring-rotation", Duration::from_secs(1));
    let (plaintext, _) = f.keys.create("admin", &new_key("acme")).unwrap();
    let next_id = f.keyring.primary_id() + 1;
    let rotated = Arc::new(
        f.keyring
            .with_key(next_id, &crate::crypto::test_key(7))
            .unwrap(),
    );
    assert_eq!(rotated.primary_id(), next_id);
    let keys = f.open(&rotated, Duration::from_secs(1));
    assert!(keys.verify(&plaintext).is_ok());
    let (fresh, _) = keys.create("admin", &new_key("acme")).unwrap();
    assert!(keys.verify(&fresh).is_ok());
}

fn bad_input_is_a_typed_error_and_nothing_is_stored(make: Make) {
    let f = fixture_on(make, "auth-bad-input", Duration::from_secs(1));
    let cases = [
        NewKey {
            tenant: String::new(),
            ..new_key("acme")
        },
        NewKey {
            env: "Live".into(),
            ..new_key("acme")
        },
        NewKey {
            scopes: vec!["has space".into()],
            ..new_key("acme")
        },
        NewKey {
            metadata: Some("{not json".into()),
            ..new_key("acme")
        },
        NewKey {
            rate_limit: Some((0, Duration::from_secs(1))),
            ..new_key("acme")
        },
        NewKey {
            name: "line\nbreak".into(),
            ..new_key("acme")
        },
    ];
    for case in cases {
        assert!(f.keys.create("admin", &case).is_err(), "{case:?}");
    }
    assert!(f.keys.list("acme").unwrap().is_empty());
}

#[test]
fn no_plaintext_key_or_metadata_in_the_database_files() {
    let f = fixture("auth-canary", Duration::from_secs(1));
    let (plaintext, info) = f.keys.create("admin", &new_key("acme")).unwrap();
    let mut probe_found = false;
    let secret_part = &plaintext["keel_live_".len()..];
    let mut files = vec![f.path.clone()];
    for suffix in ["-wal", "-shm"] {
        files.push(std::path::PathBuf::from(format!(
            "{}{suffix}",
            f.path.display()
        )));
    }
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for needle in [secret_part.as_bytes(), b"canary-owner-7731".as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext found in {}",
                file.display()
            );
        }
        if bytes
            .windows(info.display.len())
            .any(|w| w == info.display.as_bytes())
        {
            probe_found = true;
        }
    }
    // The probe: the display prefix is stored in clear, so a scan that reads the files where
    // the rows are must find it; otherwise the scan above proves nothing.
    assert!(probe_found, "the scan did not see the key's row at all");
}

fn admin_operations_and_refused_keys_are_audited(make: Make) {
    use crate::crypto::{AuditLog, AuditQuery};
    let f = fixture_on(make, "auth-audit", Duration::from_secs(1));
    let b = f.backends();
    let audit = Arc::new(AuditLog::with_backend(
        b.audit,
        f.keyring.clone(),
        Arc::new(crate::clock::SystemWallClock),
    ));
    let keys = ApiKeys::with_backend(b.keys, f.keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .with_audit(audit.clone());
    let (plaintext, info) = keys.create("alice", &new_key("acme")).unwrap();
    keys.rotate("alice", "acme", info.id, Duration::from_secs(60))
        .unwrap();
    keys.revoke("bob", "acme", info.id).unwrap();
    assert!(keys.verify(&plaintext).is_err());
    assert!(
        keys.verify("garbage").is_err(),
        "malformed: refused offline, not audited"
    );
    let entries = audit.query(&AuditQuery::default()).unwrap();
    let actions: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.entry.actor.as_str(),
                e.entry.action.as_str(),
                e.entry.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("alice", "api_key.create", "success"),
            ("alice", "api_key.rotate", "success"),
            ("bob", "api_key.revoke", "success"),
            (&plaintext[..16], "api_key.verify", "refused: revoked"),
        ]
    );
    assert!(!entries
        .iter()
        .any(|e| format!("{:?}", e.entry).contains(&plaintext[16..])));
    assert_eq!(audit.verify().unwrap().entries, 4);
}

fn refused_verifications_cannot_flood_the_audit_log(make: Make) {
    use crate::crypto::{AuditLog, AuditQuery};
    let f = fixture_on(make, "auth-audit-flood", Duration::from_secs(1));
    let b = f.backends();
    let audit = Arc::new(AuditLog::with_backend(
        b.audit,
        f.keyring.clone(),
        Arc::new(crate::clock::SystemWallClock),
    ));
    // On the fixture's (manual) clocks: the budget does not refill however slow the database.
    let keys = ApiKeys::with_backend_and_clocks(
        b.keys,
        f.keyring.clone(),
        ApiKeysOptions::default(),
        f.clock.wall.clone(),
        f.clock.mono.clone(),
    )
    .unwrap()
    .with_audit(audit.clone());
    for _ in 0..300 {
        let stranger = crate::auth::generate("live").unwrap();
        assert_eq!(
            auth_err(keys.verify(&stranger).unwrap_err()),
            AuthError::UnknownKey
        );
    }
    let recorded = audit
        .query(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap()
        .len();
    assert_eq!(recorded as u64, super::keys::FAILURE_AUDITS_PER_MINUTE);
}

fn exec(path: &std::path::Path, sql: &str) {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    store
        .write(|tx| tx.execute_batch(sql).map_err(crate::store::sqlite_err))
        .unwrap();
}

#[test]
fn every_policy_column_edited_without_the_keyring_is_refused() {
    let f = fixture("auth-tamper", Duration::from_secs(3600));
    let future = 1_700_000_000_000i64 + 86_400_000;
    // Each edit turns a weaker key into a stronger one (or a dead key into a live one).
    let edits = [
        ("scopes", "UPDATE api_keys SET scopes = 'admin chat:write' WHERE id = ?"),
        ("tenant", "UPDATE api_keys SET tenant_id = 'globex' WHERE id = ?"),
        ("env", "UPDATE api_keys SET env = 'test' WHERE id = ?"),
        ("name", "UPDATE api_keys SET name = 'root' WHERE id = ?"),
        ("expires_at", "UPDATE api_keys SET expires_at = NULL WHERE id = ?"),
        ("revoked_at", "UPDATE api_keys SET revoked_at = NULL WHERE id = ?"),
        ("rate_limit", "UPDATE api_keys SET rate_limit = NULL, rate_window_ms = NULL WHERE id = ?"),
        ("rate_window", "UPDATE api_keys SET rate_window_ms = 1 WHERE id = ?"),
        ("replaced_by", "UPDATE api_keys SET replaced_by = NULL WHERE id = ?"),
        ("created_at", "UPDATE api_keys SET created_at = created_at - 1 WHERE id = ?"),
        ("mac removed", "UPDATE api_keys SET policy_mac = NULL WHERE id = ?"),
        ("mac of another row", "UPDATE api_keys SET policy_mac = (SELECT policy_mac FROM api_keys WHERE id = 1) WHERE id = ?"),
    ];
    f.keys.create("admin", &new_key("acme")).unwrap(); // row 1, never edited
    for (column, sql) in edits {
        let (plaintext, info) = f
            .keys
            .create(
                "admin",
                &NewKey {
                    scopes: vec!["chat:read".into()],
                    expires_at: Some(UNIX_EPOCH + Duration::from_millis(future as u64)),
                    ..new_key("acme")
                },
            )
            .unwrap();
        let rotated = f
            .keys
            .rotate("admin", "acme", info.id, Duration::from_secs(3600))
            .unwrap();
        if column == "revoked_at" {
            f.keys.revoke("admin", "acme", info.id).unwrap();
        }
        // Untouched, it verifies from the database (a fresh registry has no cache)...
        let fresh = open(&f.path, &f.keyring, &f.clock, Duration::from_secs(3600));
        let before = fresh.verify(&plaintext);
        if column == "revoked_at" {
            assert_eq!(auth_err(before.unwrap_err()), AuthError::Revoked);
        } else {
            before.unwrap();
        }
        exec(&f.path, &sql.replace('?', &info.id.to_string()));
        // ...edited, it is refused.
        let fresh = open(&f.path, &f.keyring, &f.clock, Duration::from_secs(3600));
        assert_eq!(
            auth_err(fresh.verify(&plaintext).unwrap_err()),
            AuthError::Tampered,
            "{column}"
        );
        // Its replacement (another row) is unaffected.
        assert!(fresh.verify(&rotated.0).is_ok(), "{column}");
    }
    assert!(f
        .keys
        .verify(&f.keys.create("admin", &new_key("acme")).unwrap().0)
        .is_ok());
}

#[test]
fn a_tampered_key_is_audited_and_cannot_be_rotated_into_a_clean_one() {
    use crate::crypto::{AuditLog, AuditQuery};
    let f = fixture("auth-tamper-rotate", Duration::from_secs(3600));
    let store = Store::open(&f.path, StoreOptions::default()).unwrap();
    let audit = Arc::new(AuditLog::new(store.clone(), f.keyring.clone()));
    let keys = ApiKeys::new(store, f.keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .try_with_audit(audit.clone())
        .unwrap();
    let (plaintext, info) = keys
        .create(
            "alice",
            &NewKey {
                scopes: vec!["chat:read".into()],
                ..new_key("acme")
            },
        )
        .unwrap();
    exec(
        &f.path,
        &format!(
            "UPDATE api_keys SET scopes = 'admin' WHERE id = {}",
            info.id
        ),
    );
    assert_eq!(
        auth_err(keys.verify(&plaintext).unwrap_err()),
        AuthError::Tampered
    );
    assert_eq!(
        auth_err(
            keys.rotate("alice", "acme", info.id, Duration::from_secs(60))
                .unwrap_err()
        ),
        AuthError::Tampered
    );
    assert_eq!(keys.list("acme").unwrap().len(), 1, "no replacement made");
    // Revoking it still works, and does not bless the edit.
    keys.revoke("bob", "acme", info.id).unwrap();
    assert_eq!(
        auth_err(keys.verify(&plaintext).unwrap_err()),
        AuthError::Tampered
    );
    let outcomes: Vec<_> = audit
        .query(&AuditQuery::default())
        .unwrap()
        .into_iter()
        .map(|e| (e.entry.action, e.entry.outcome))
        .collect();
    assert!(outcomes.contains(&("api_key.verify".into(), "refused: tampered".into())));
}

fn keys_of_environments_the_registry_does_not_accept_are_refused(make: Make) {
    let f = fixture_on(make, "auth-env", Duration::from_secs(1));
    let (test_key, _) = f
        .keys
        .create(
            "admin",
            &NewKey {
                env: "test".into(),
                ..new_key("acme")
            },
        )
        .unwrap();
    let (live_key, _) = f.keys.create("admin", &new_key("acme")).unwrap();
    // The default registry is a live one.
    let err = f.keys.verify(&test_key).unwrap_err();
    let message = err.to_string();
    assert_eq!(
        auth_err(err),
        AuthError::WrongEnvironment {
            env: "test".into(),
            accepted: vec!["live".into()],
        }
    );
    assert!(
        message.contains("\"test\"") && message.contains("live"),
        "{message}"
    );
    assert!(!message.contains(&test_key[10..]), "never the key");
    assert!(f.keys.verify(&live_key).is_ok());
    // A test deployment declares its own.
    let store = f.backends().keys;
    let staging = ApiKeys::with_backend(
        store.clone(),
        f.keyring.clone(),
        ApiKeysOptions {
            accepted_envs: vec!["test".into(), "staging".into()],
            ..ApiKeysOptions::default()
        },
    )
    .unwrap();
    assert!(staging.verify(&test_key).is_ok());
    assert!(matches!(
        auth_err(staging.verify(&live_key).unwrap_err()),
        AuthError::WrongEnvironment { .. }
    ));
    for bad in [vec![], vec!["Live".to_owned()], vec!["a b".to_owned()]] {
        let err = ApiKeys::with_backend(
            store.clone(),
            f.keyring.clone(),
            ApiKeysOptions {
                accepted_envs: bad.clone(),
                ..ApiKeysOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("accepted_envs")),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn an_admin_operation_and_its_audit_entry_commit_together() {
    use crate::crypto::AuditLog;
    let f = fixture("auth-audit-atomic", Duration::from_secs(3600));
    let store = Store::open(&f.path, StoreOptions::default()).unwrap();
    let audit = Arc::new(AuditLog::new(store.clone(), f.keyring.clone()));
    let keys = ApiKeys::with_clock(
        store,
        f.keyring.clone(),
        ApiKeysOptions::default(),
        f.clock.wall.clone(),
    )
    .unwrap()
    .with_audit(audit.clone());
    let (kept, kept_info) = keys.create("alice", &new_key("acme")).unwrap();
    // Any failure of the audit write (here injected by a trigger) must undo the operation.
    exec(
        &f.path,
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END;",
    );
    assert!(keys.create("alice", &new_key("acme")).is_err());
    assert_eq!(
        keys.list("acme").unwrap().len(),
        1,
        "no key without its entry"
    );
    assert!(keys
        .rotate("alice", "acme", kept_info.id, Duration::from_secs(60))
        .is_err());
    let after = keys.get("acme", kept_info.id).unwrap();
    assert_eq!((after.replaced_by, after.expires_at_ms), (None, None));
    assert_eq!(
        keys.list("acme").unwrap().len(),
        1,
        "no replacement without its entry"
    );
    assert!(keys.revoke("bob", "acme", kept_info.id).is_err());
    assert!(keys
        .get("acme", kept_info.id)
        .unwrap()
        .revoked_at_ms
        .is_none());
    let fresh = open(&f.path, &f.keyring, &f.clock, Duration::from_secs(1));
    assert!(
        fresh.verify(&kept).is_ok(),
        "not revoked, and its MAC intact"
    );
    exec(&f.path, "DROP TRIGGER fail_audit;");
    keys.revoke("bob", "acme", kept_info.id).unwrap();
    assert_eq!(audit.verify().unwrap().entries, 2);
}

#[test]
fn verify_never_waits_for_another_connections_write_lock() {
    use crate::crypto::AuditLog;
    let f = fixture("auth-busy", Duration::from_secs(3600));
    let store = Store::open(&f.path, StoreOptions::default()).unwrap();
    let audit = Arc::new(AuditLog::new(store.clone(), f.keyring.clone()));
    let keys = ApiKeys::new(store, f.keyring.clone(), ApiKeysOptions::default())
        .unwrap()
        .try_with_audit(audit.clone())
        .unwrap();
    let (plaintext, info) = keys.create("alice", &new_key("acme")).unwrap();
    let holder = rusqlite::Connection::open(&f.path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A generous correctness bound (the store would wait 5 s per try, 30 s in all).
    let bound = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let identity = keys.verify(&plaintext).unwrap();
    assert_eq!(identity.key_id, info.id);
    assert!(
        started.elapsed() < bound,
        "valid key: {:?}",
        started.elapsed()
    );
    assert_eq!(keys.last_used_skipped(), 1);
    let started = std::time::Instant::now();
    let stranger = crate::auth::generate("live").unwrap();
    assert_eq!(
        auth_err(keys.verify(&stranger).unwrap_err()),
        AuthError::UnknownKey
    );
    assert!(
        started.elapsed() < bound,
        "refused key: {:?}",
        started.elapsed()
    );
    assert_eq!(keys.refusal_audits_skipped(), 1);
    holder.execute_batch("ROLLBACK").unwrap();
    // Once the lock is free, both are written again.
    keys.verify(&stranger).unwrap_err();
    assert_eq!(keys.refusal_audits_skipped(), 1);
    assert_eq!(audit.verify().unwrap().entries, 2, "create + one refusal");
}

#[test]
fn options_fill_core_defaults_and_refuse_zero_and_bad_envs() {
    let o = ApiKeysOptions::new(None, None, None).unwrap();
    assert_eq!(o.cache_ttl, DEFAULT_CACHE_TTL);
    assert_eq!(o.cache_entries, DEFAULT_CACHE_ENTRIES);
    assert_eq!(o.accepted_envs, vec![DEFAULT_ENV.to_owned()]);
    for (ttl, entries, envs, word) in [
        (Some(Duration::ZERO), None, None, "cache_ttl"),
        (None, Some(0), None, "cache_entries"),
        (None, None, Some(vec![]), "accepted_envs"),
        (None, None, Some(vec!["Live!".to_owned()]), "Live!"),
    ] {
        let e = ApiKeysOptions::new(ttl, entries, envs).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains(word), "{e}");
    }
    assert_eq!(
        parse_list(" read\twrite  admin "),
        ["read", "write", "admin"]
    );
    assert!(parse_list("").is_empty());
}

/// With a Redis broadcast, a key revoked in one process is refused by the others as soon as the
/// message arrives — long before their cache TTL (an hour here, on a clock that never moves).
#[cfg(feature = "redis")]
#[test]
fn a_broadcast_revocation_reaches_every_process_before_the_cache_ttl() {
    use crate::redis::{test_server::RedisServer, Redis, RedisOptions};
    let mut server = RedisServer::start();
    let hour = Duration::from_secs(3600);
    let f = fixture("redis-broadcast", hour);
    let host = |keys: ApiKeys| {
        let keys = Arc::new(keys);
        let r = Redis::open(&server.url(), RedisOptions::default()).unwrap();
        keys.broadcast_invalidations(r.clone()).unwrap();
        assert!(r.wait_subscribed(Duration::from_secs(10)));
        (keys, r)
    };
    let (a, _ra) = host(f.open(&f.keyring, hour));
    let (b, rb) = host(f.open(&f.keyring, hour));
    let (c, _rc) = host(f.open(&f.keyring, hour));
    let (key, info) = a.create("admin", &new_key("t1")).unwrap();
    let key2 = a.create("admin", &new_key("t1")).unwrap().0;
    for k in [&b, &c] {
        k.verify(&key).unwrap();
        k.verify(&key2).unwrap();
    }
    let start = std::time::Instant::now();
    a.revoke("admin", "t1", info.id).unwrap();
    let deadline = start + Duration::from_secs(2);
    for k in [&b, &c] {
        loop {
            match k.verify(&key) {
                Err(Error::Auth(AuthError::Revoked)) => break,
                Ok(_) => assert!(std::time::Instant::now() < deadline, "not propagated"),
                Err(e) => panic!("{e}"),
            }
            std::thread::yield_now();
        }
    }
    // Losing the subscription clears the cache on resubscribing (messages may have been lost).
    let resyncs = rb.subscriber_stats().resyncs;
    server.kill();
    server.restart();
    assert!(rb.wait_subscribed(Duration::from_secs(10)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rb.subscriber_stats().resyncs == resyncs {
        assert!(std::time::Instant::now() < deadline, "no resync");
        assert!(rb.wait_subscribed(Duration::from_secs(10)));
        std::thread::yield_now();
    }
    b.verify(&key2).unwrap();
}
