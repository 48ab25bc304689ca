//! `keel::Engine` and its configuration: file, environment, both; every mistake names its field
//! and value; one store shared by memory, API keys and the audit log.
//!
//! Environment variables are set inside `figment::Jail`, which serialises the tests that touch
//! the environment, starts each from a cleared environment and restores it afterwards.

// figment::Jail's closures must return figment::Result, whose error type is large.
#![allow(clippy::result_large_err)]

use std::path::Path;

use figment::Jail;
use keel::auth::NewKey;
use keel::config::Config;
use keel::memory::{NewMessage, SessionRef};
use keel::{ConfigError, CryptoError, Engine, Error, Keyring};

fn keyring_text() -> String {
    format!("1:{}", Keyring::generate_key().unwrap().as_str())
}

fn config_err(r: keel::Result<Engine>) -> ConfigError {
    match r {
        Err(Error::Config(e)) => e,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error, got an engine"),
    }
}

const FILE: &str = r#"
[database]
url = "sqlite://keel.db"
busy_timeout = 2.5

[memory]
max_content_bytes = 1000

[api_keys]
cache_ttl = 0.5
accepted_envs = ["live", "test"]

[ratelimit.per_ip]
limit = 10
window = 60

[ratelimit.per_key]
algorithm = "sliding_window"
limit = 100
window = 3600

[cache.answers]
max_entries = 100
ttl = 30
"#;

#[test]
fn a_file_alone_configures_everything() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("keel.toml", FILE)?;
        let config = Config::from_file(Path::new("keel.toml")).unwrap();
        jail.set_env("KEEL_KEYRING", keyring_text());
        let engine = Engine::from_config(&config).unwrap();
        assert_eq!(engine.store().unwrap().path(), Path::new("keel.db"));
        assert!(jail.directory().join("keel.db").exists());
        assert_eq!(
            engine.store().unwrap().options().busy_timeout.as_millis(),
            2500,
            "database.busy_timeout is in seconds"
        );
        let per_ip = engine.rate_limiter("per_ip").unwrap();
        assert_eq!(per_ip.policy().limit(), 10);
        assert_eq!(per_ip.policy().name(), "per_ip");
        let per_key = engine.rate_limiter("per_key").unwrap();
        assert_eq!(
            per_key.policy().algorithm(),
            keel::ratelimit::Algorithm::SlidingWindow
        );
        assert_eq!(engine.cache_config("answers").unwrap().max_entries, 100);
        assert_eq!(engine.rate_limiter_names(), ["per_ip", "per_key"]);
        // memory.max_content_bytes reached the memory store.
        let at = SessionRef::new("acme", "alice", "s1");
        let too_big = NewMessage::new("user", "x".repeat(1001));
        assert!(matches!(
            engine.memory().append(&at, &too_big),
            Err(Error::Memory(keel::MemoryError::ContentTooLarge {
                max: 1000,
                ..
            }))
        ));
        Ok(())
    });
}

#[test]
fn the_environment_alone_configures_an_engine() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://env.db");
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env("KEEL_RATELIMIT__PER_IP__LIMIT", "5");
        jail.set_env("KEEL_RATELIMIT__PER_IP__WINDOW", "1.5");
        jail.set_env("KEEL_CACHE__HOT__MAX_ENTRIES", "7");
        jail.set_env("KEEL_PYTHON", "/usr/bin/python3"); // not configuration: ignored
        let engine = Engine::from_env().unwrap();
        assert_eq!(engine.store().unwrap().path(), Path::new("env.db"));
        let l = engine.rate_limiter("per_ip").unwrap();
        assert_eq!(l.policy().limit(), 5);
        assert_eq!(l.policy().window().as_millis(), 1500);
        assert_eq!(engine.cache("hot").unwrap().config().max_entries, 7);
        Ok(())
    });
}

#[test]
fn the_environment_overrides_the_file_field_by_field() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("keel.toml", FILE)?;
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env("KEEL_RATELIMIT__PER_IP__LIMIT", "3");
        jail.set_env("KEEL_DATABASE_URL", "sqlite://other.db");
        let engine = Engine::open(Some(Path::new("keel.toml"))).unwrap();
        let l = engine.rate_limiter("per_ip").unwrap();
        assert_eq!(l.policy().limit(), 3, "the environment wins");
        assert_eq!(
            l.policy().window().as_secs(),
            60,
            "the file's other fields stay"
        );
        assert_eq!(engine.store().unwrap().path(), Path::new("other.db"));
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let e = config_err(Engine::open(Some(Path::new("nope.toml"))));
        assert!(
            matches!(&e, ConfigError::Parse(m) if m.contains("nope.toml")),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_field_is_named_with_its_source() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("keel.toml", "[database]\nulr = \"sqlite://x.db\"\n")?;
        let e = config_err(Engine::open(Some(Path::new("keel.toml"))));
        let msg = e.to_string();
        assert!(
            msg.contains("\"database.ulr\"") && msg.contains("keel.toml"),
            "{msg}"
        );

        jail.create_file("ok.toml", "[database]\nurl = \"sqlite://x.db\"\n")?;
        jail.set_env("KEEL_DATABSE__URL", "sqlite://y.db");
        let msg = config_err(Engine::open(Some(Path::new("ok.toml")))).to_string();
        assert!(msg.contains("databse") && msg.contains("KEEL_"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_values_name_field_and_value() {
    let cases: &[(&str, &str)] = &[
        (
            "[ratelimit.per_ip]\nlimit = 0\nwindow = 60",
            "ratelimit.per_ip.limit = 0",
        ),
        (
            "[ratelimit.per_ip]\nlimit = 5\nwindow = -1",
            "ratelimit.per_ip.window = -1",
        ),
        (
            "[ratelimit.per_ip]\nlimit = 5\nwindow = 1\nalgorithm = \"leaky\"",
            "ratelimit.per_ip.algorithm = leaky",
        ),
        (
            "[ratelimit.per_ip]\nwindow = 1",
            "ratelimit.per_ip.limit is not set",
        ),
        ("[cache.a]\nmax_entries = 0", "cache.a.max_entries = 0"),
        ("[cache.a]\nmax_entries = 5\nttl = 0", "cache.a.ttl = 0"),
        (
            "[database]\nsynchronous = \"sometimes\"",
            "database.synchronous = sometimes",
        ),
        ("[database]\npool_size = 0", "database.pool_size = 0"),
        (
            "[api_keys]\naccepted_envs = [\"Live!\"]",
            "api_keys.accepted_envs = \"Live!\"",
        ),
        (
            "[keyring]\nenv = \"A\"\nfile = \"/k\"",
            "keyring = env and file",
        ),
        (
            "[retrieval]\nembedder = \"/no/such/model\"",
            "retrieval.embedder = /no/such/model",
        ),
    ];
    for (toml, expected) in cases {
        let url = "url = \"sqlite:///tmp/never-opened.db\"\n";
        let text = match toml.strip_prefix("[database]\n") {
            Some(rest) => format!("[database]\n{url}{rest}"),
            None => format!("[database]\n{url}{toml}"),
        };
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{toml}: {e}"));
        let msg = config.validate().unwrap_err().to_string();
        assert!(
            msg.contains(expected),
            "{toml}\n  gave: {msg}\n  want: {expected}"
        );
    }
}

#[test]
fn a_wrong_type_is_a_parse_error_naming_the_field() {
    let e = Config::from_toml("[database]\npool_size = \"eight\"").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(ConfigError::Parse(_))), "{msg}");
    assert!(msg.contains("database.pool_size"), "{msg}");
}

#[test]
fn other_backends_are_refused_by_scheme_without_the_password() {
    // (postgres:// is a backend now: tests/postgres_*.rs and
    // a_postgres_url_is_chosen_and_its_errors_name_the_field_never_the_password.)
    for (url, scheme) in [
        ("redis://:hunter2@cache:6379/0", "redis"),
        ("rediss://:hunter2@cache:6380/0", "rediss"),
    ] {
        let config = Config::from_toml(&format!("[database]\nurl = \"{url}\"")).unwrap();
        let e = config.validate().unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, Error::Config(ConfigError::BackendUnavailable { scheme: s, .. }) if s == scheme),
            "{msg}"
        );
        assert!(
            msg.contains("no redis") && msg.contains("[redis]") && !msg.contains("hunter2"),
            "{msg}"
        );
    }
    let config = Config::from_toml("[database]\nurl = \"mysql://u:hunter2@h/db\"").unwrap();
    let msg = config.validate().unwrap_err().to_string();
    assert!(
        msg.contains("database.url") && msg.contains("mysql"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = Config::default().validate().unwrap_err().to_string();
    assert!(msg.contains("database.url is not set"), "{msg}");
}

#[test]
fn a_missing_keyring_names_its_variable() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://k.db");
        match Engine::from_env() {
            Err(Error::Crypto(CryptoError::KeyringSource(m))) => {
                assert!(m.contains("KEEL_KEYRING"), "{m}")
            }
            other => panic!("expected a keyring source error, got {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn the_keyring_may_come_from_a_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("keys", &keyring_text())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions("keys", std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        jail.set_env("KEEL_DATABASE_URL", "sqlite://f.db");
        jail.set_env("KEEL_KEYRING_FILE", "keys");
        let engine = Engine::from_env().unwrap();
        assert_eq!(engine.keyring().primary_id(), 1);
        Ok(())
    });
}

#[test]
fn memory_api_keys_and_audit_share_one_store() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://shared.db");
        jail.set_env("KEEL_KEYRING", keyring_text());
        let engine = Engine::from_env().unwrap();
        let id = engine.store_id();
        assert_eq!(engine.memory().backend().store_id(), Some(id));
        assert_eq!(engine.api_keys().store_id(), Some(id));
        let audit = engine.audit().expect("audited by default");
        assert_eq!(audit.store_id(), Some(id));

        let at = SessionRef::new("acme", "alice", "s1");
        engine
            .memory()
            .append(&at, &NewMessage::new("user", "hello"))
            .unwrap();
        let new = NewKey {
            tenant: "acme".into(),
            name: "app".into(),
            env: "live".into(),
            ..NewKey::default()
        };
        let (key, _) = engine.api_keys().create("admin", &new).unwrap();
        assert_eq!(engine.api_keys().verify(&key).unwrap().tenant, "acme");
        assert_eq!(audit.verify().unwrap().entries, 1, "the create was audited");
        Ok(())
    });
}

#[test]
fn accessors_return_shared_objects_and_name_unknown_names() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://acc.db");
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env("KEEL_CACHE__HOT__MAX_ENTRIES", "8");
        jail.set_env("KEEL_RATELIMIT__PER_IP__LIMIT", "2");
        jail.set_env("KEEL_RATELIMIT__PER_IP__WINDOW", "60");
        let engine = Engine::from_env().unwrap();
        let a = engine.cache("hot").unwrap();
        a.insert(b"k".to_vec().into(), b"v".to_vec().into())
            .unwrap();
        let b = engine.cache("hot").unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert_eq!(b.get(&b"k"[..]).as_deref(), Some(&b"v"[..]));
        let l = engine.rate_limiter("per_ip").unwrap();
        assert!(l.check("ip", 2).unwrap().allowed);
        assert!(
            !engine
                .rate_limiter("per_ip")
                .unwrap()
                .check("ip", 1)
                .unwrap()
                .allowed,
            "the second accessor call sees the first one's count"
        );
        match engine.rate_limiter("per_user") {
            Err(Error::Config(ConfigError::UnknownName {
                name, configured, ..
            })) => {
                assert_eq!(name, "per_user");
                assert_eq!(configured, ["per_ip"]);
            }
            other => panic!("{other:?}"),
        }
        let msg = engine.cache("cold").unwrap_err().to_string();
        assert!(msg.contains("\"cold\"") && msg.contains("hot"), "{msg}");
        let msg = engine.embedder().unwrap_err().to_string();
        assert!(msg.contains("retrieval.embedder is not set"), "{msg}");
        let bm25 = engine.bm25().unwrap();
        assert!(std::sync::Arc::ptr_eq(&bm25, &engine.bm25().unwrap()));
        Ok(())
    });
}

#[test]
fn lists_and_booleans_come_from_the_environment_as_toml_values() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://lists.db");
        jail.set_env("KEEL_API_KEYS__ACCEPTED_ENVS", "[live, test]");
        jail.set_env("KEEL_DATABASE__SYNCHRONOUS", "full");
        let settings = Config::from_env().unwrap().validate().unwrap();
        assert_eq!(settings.api_keys.accepted_envs, ["live", "test"]);
        assert_eq!(settings.store.synchronous, keel::Synchronous::Full);
        Ok(())
    });
}

#[test]
fn audit_can_be_turned_off() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://na.db");
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env("KEEL_API_KEYS__AUDIT", "false");
        let engine = Engine::from_env().unwrap();
        assert!(engine.audit().is_none());
        Ok(())
    });
}

/// The test models of `make models` (tests/neural.rs uses the same), never skipped.
fn models() -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("KEEL_TEST_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join(".cache").join("models"));
    assert!(
        dir.join("minilm").join("model.onnx").is_file(),
        "test models missing in {}: run `make models`",
        dir.display()
    );
    dir
}

#[test]
fn retrieval_is_built_on_first_access_from_the_configured_paths() {
    use keel::rag::{runtime, Document, Passage};
    let models = models();
    Jail::expect_with(|jail| {
        // retrieval.onnxruntime names the library: ORT_DYLIB_PATH as `make test-rust` sets it
        // (the project venv's onnxruntime wheel), read inside the jail, whose lock keeps the
        // other tests from clearing the environment meanwhile.
        let lib = std::path::PathBuf::from(std::env::var_os("ORT_DYLIB_PATH").expect(
            "ORT_DYLIB_PATH unset: run through `make test-rust`, which points it at .venv's \
             onnxruntime wheel",
        ));
        jail.clear_env();
        jail.set_env("KEEL_KEYRING", keyring_text());
        let toml = format!(
            "[database]\nurl = \"sqlite://r.db\"\n[retrieval]\nbm25_index = \"docs.bm25\"\n\
             dense_index = \"docs.dense\"\nembedder = {:?}\ncross_encoder = {:?}\n\
             onnxruntime = {:?}\n",
            models.join("minilm"),
            models.join("test-cross-encoder"),
            lib
        );
        jail.create_file("keel.toml", &toml)?;
        let engine = Engine::open(Some(Path::new("keel.toml"))).unwrap();

        let embedder = engine.embedder().unwrap();
        assert!(std::sync::Arc::ptr_eq(
            &embedder,
            &engine.embedder().unwrap()
        ));
        assert_eq!(
            runtime::library().unwrap(),
            lib,
            "the configured library was loaded"
        );
        assert_eq!(embedder.embed_one("hello").unwrap().len(), embedder.dim());

        let docs = [
            Document::new("cats", "Cats purr and sleep in the sun."),
            Document::new("rust", "Rust has ownership and borrowing."),
        ];
        let dense = engine.dense().unwrap();
        dense
            .upsert(docs.iter().cloned().map(Passage::whole).collect())
            .unwrap();
        let best = dense.search("a kitten napping", 1, None).unwrap();
        assert_eq!(best[0].passage.doc_id, "cats");
        let scores = engine
            .cross_encoder()
            .unwrap()
            .score("memory safety", &["Rust has ownership.", "Cats purr."])
            .unwrap();
        assert_eq!(scores.len(), 2);

        let bm25 = engine.bm25().unwrap();
        bm25.add(docs[1].clone()).unwrap();
        bm25.save(Path::new("docs.bm25")).unwrap();
        drop(engine);
        let reopened = Engine::open(Some(Path::new("keel.toml"))).unwrap();
        let hits = reopened.bm25().unwrap().search("borrowing", 1, None);
        assert_eq!(
            hits[0].doc_id(),
            "rust",
            "bm25_index was opened from its file"
        );
        Ok(())
    });
}

#[test]
fn a_postgres_url_is_chosen_and_its_errors_name_the_field_never_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env(
            "KEEL_DATABASE_URL",
            format!("postgres://app:hunter2-secret@127.0.0.1:{port}/keel"),
        );
        jail.set_env("KEEL_DATABASE__CONNECT_TIMEOUT", "0.3");
        let config = Config::load(None).unwrap();
        let settings = config.validate().unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        let err = Engine::from_env().unwrap_err();
        assert!(
            matches!(err, Error::Store(keel::StoreError::Unavailable { .. })),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("postgres://app:***@127.0.0.1"), "{text}");
        // SQLite-only options are refused with a postgres URL, naming the field.
        jail.set_env("KEEL_DATABASE__SYNCHRONOUS", "full");
        let e = config_err(Engine::from_env());
        assert!(e.to_string().contains("database.synchronous"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // A malformed postgres URL: an open error, still without the password.
        jail.clear_env();
        jail.set_env("KEEL_KEYRING", keyring_text());
        jail.set_env(
            "KEEL_DATABASE_URL",
            "postgres://app:hunter2-secret@127.0.0.1:notaport/keel",
        );
        let err = Engine::from_env().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        Ok(())
    });
}

#[test]
fn telemetry_metrics_section_is_parsed_and_checked() {
    let base = "[database]\nurl = \"sqlite://x.db\"\n";
    let on = Config::from_toml(base).unwrap().validate().unwrap();
    assert_eq!(
        on.metrics_enabled,
        keel::telemetry::metrics::DEFAULT_ENABLED
    );
    let off = Config::from_toml(&format!("{base}[telemetry.metrics]\nenabled = false\n"))
        .unwrap()
        .validate()
        .unwrap();
    assert!(!off.metrics_enabled);
    let e = Config::from_toml(&format!("{base}[telemetry.metrics]\nenable = false\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("enable"), "{e}");
    let e = Config::from_toml(&format!("{base}[telemetry.metrics]\nenabled = \"yes\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("telemetry.metrics.enabled"), "{e}");
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("KEEL_DATABASE_URL", "sqlite://x.db");
        jail.set_env("KEEL_TELEMETRY__METRICS__ENABLED", "false");
        assert!(
            !Config::from_env()
                .unwrap()
                .validate()
                .unwrap()
                .metrics_enabled
        );
        Ok(())
    });
}
