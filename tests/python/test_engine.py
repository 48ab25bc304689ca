"""keel.Engine: one configuration (TOML file and/or KEEL_* variables), one pool shared by memory,
API keys and the audit log, the primitives as attributes, and typed configuration errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import keel

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean KEEL_* environment with a fresh keyring, inside tmp_path."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and name != "KEEL_TEST_MODELS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_KEYRING", f"1:{keel.Keyring.generate_key()}")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_from_env_with_only_a_database_url_and_a_keyring(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("KEEL_DATABASE_URL", f"sqlite://{tmp_path / 'app.db'}")
    engine = keel.Engine.from_env()
    assert isinstance(engine.memory, keel.Memory)
    assert isinstance(engine.api_keys, keel.ApiKeys)
    assert isinstance(engine.audit, keel.AuditLog)
    assert engine.rate_limiters == {}
    assert engine.caches == {}
    engine.memory.append("acme", "alice", "s1", "user", "hello")
    assert [m.content for m in engine.memory.history("acme", "alice", "s1")] == ["hello"]
    assert (tmp_path / "app.db").exists()


def test_memory_api_keys_and_audit_share_one_pool(env: pytest.MonkeyPatch) -> None:
    env.setenv("KEEL_DATABASE_URL", "sqlite://shared.db")
    engine = keel.Engine()
    # The same wrapper every time, around the engine's own objects, all on one pool.
    assert engine.memory is engine.memory
    assert engine.api_keys is engine.api_keys
    assert engine.audit is not None
    assert engine.memory.store_id == engine.api_keys.store_id == engine.store_id
    assert engine.audit.store_id == engine.store_id
    # Objects opened on their own each have their own pool.
    other = keel.Memory("shared.db", engine.keyring)
    assert other.store_id != engine.store_id

    engine.memory.append("acme", "alice", "s1", "user", "hi")
    key, _ = engine.api_keys.create("acme", "app")
    assert engine.api_keys.verify(key).tenant == "acme"
    count, _head = engine.audit.verify()
    assert count == 1, "the create was audited, in the same database"


def test_a_config_file_and_env_overrides(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "keel.toml"
    conf.write_text(
        """
[database]
url = "sqlite://file.db"

[api_keys]
accepted_envs = ["live", "test"]

[ratelimit.per_ip]
limit = 10
window = 60

[cache.answers]
max_entries = 3
ttl = 30
"""
    )
    env.setenv("KEEL_RATELIMIT__PER_IP__LIMIT", "2")
    engine = keel.Engine(conf)
    limiter = engine.rate_limiters["per_ip"]
    assert limiter is engine.rate_limiter("per_ip")
    assert limiter.limit == 2, "the environment overrides the file"
    assert limiter.window == 60
    assert limiter.check("ip").allowed and limiter.check("ip").allowed
    assert not engine.rate_limiters["per_ip"].check("ip").allowed, "one shared budget"

    cache = engine.caches["answers"]
    assert isinstance(cache, keel.Cache)
    assert cache is engine.cache("answers")
    assert cache.max_entries == 3 and cache.ttl == 30
    cache["k"] = {"any": "object"}
    assert engine.caches["answers"]["k"] == {"any": "object"}

    key, _ = engine.api_keys.create("acme", "ci", env="test")
    assert engine.api_keys.verify(key).env == "test", "accepted_envs reached the registry"


def test_unknown_names_are_typed_and_list_the_configured_ones(env: pytest.MonkeyPatch) -> None:
    env.setenv("KEEL_DATABASE_URL", "sqlite://names.db")
    env.setenv("KEEL_RATELIMIT__PER_IP__LIMIT", "5")
    env.setenv("KEEL_RATELIMIT__PER_IP__WINDOW", "1")
    engine = keel.Engine.from_env()
    with pytest.raises(keel.UnknownComponent, match=r'"per_user".*per_ip'):
        engine.rate_limiter("per_user")
    with pytest.raises(KeyError):
        engine.cache("nope")
    with pytest.raises(KeyError):
        engine.rate_limiters["per_user"]
    with pytest.raises(keel.ConfigError, match=r"retrieval\.embedder is not set"):
        engine.embedder()
    assert engine.bm25() is engine.bm25()


@pytest.mark.parametrize(
    ("toml", "error", "match"),
    [
        ("[database]\nulr = 'x'", keel.ConfigError, r"ulr"),
        (
            "[database]\nurl = 'sqlite://x.db'\n[ratelimit.per_ip]\nlimit = 0\nwindow = 60",
            keel.ConfigError,
            r"ratelimit\.per_ip\.limit = 0",
        ),
        (
            "[database]\nurl = 'sqlite://x.db'\n[cache.a]\nmax_entries = 0",
            keel.ConfigError,
            r"cache\.a\.max_entries = 0",
        ),
        (
            "[database]\nurl = 'redis://:hunter2@db/0'",
            keel.BackendUnavailable,
            r"no redis:// database backend in this build",
        ),
        (
            "[database]\nurl = 'postgres://app:hunter2@db/keel'\nbusy_timeout = 1",
            keel.ConfigError,
            r"database\.busy_timeout .*applies to sqlite",
        ),
        ("[memory]\nmax_content_bytes = 10", keel.ConfigError, r"database\.url is not set"),
    ],
)
def test_configuration_mistakes(
    env: pytest.MonkeyPatch, tmp_path: Path, toml: str, error: type, match: str
) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(toml)
    with pytest.raises(error, match=match) as info:
        keel.Engine(conf)
    assert isinstance(info.value, ValueError)
    assert "hunter2" not in str(info.value)


def test_a_missing_keyring_names_its_variable(env: pytest.MonkeyPatch) -> None:
    env.delenv("KEEL_KEYRING")
    env.setenv("KEEL_DATABASE_URL", "sqlite://k.db")
    with pytest.raises(keel.KeyringError, match="KEEL_KEYRING"):
        keel.Engine.from_env()


def test_audit_can_be_turned_off(env: pytest.MonkeyPatch) -> None:
    env.setenv("KEEL_DATABASE_URL", "sqlite://noaudit.db")
    env.setenv("KEEL_API_KEYS__AUDIT", "false")
    assert keel.Engine.from_env().audit is None


def test_retrieval_objects_are_built_on_first_call_and_shared(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    minilm, cross = MODELS / "minilm", MODELS / "test-cross-encoder"
    assert (minilm / "model.onnx").is_file(), "test models missing: run `make models`"
    conf = tmp_path / "keel.toml"
    conf.write_text(
        f"""
[database]
url = "sqlite://r.db"
[retrieval]
bm25_index = "docs.bm25"
dense_index = "docs.dense"
embedder = "{minilm}"
cross_encoder = "{cross}"
"""
    )
    engine = keel.Engine(conf)
    embedder = engine.embedder()
    assert embedder is engine.embedder()
    assert isinstance(embedder, keel.Embedder) and embedder.dim == 384
    dense = engine.dense()
    assert dense is engine.dense() and isinstance(dense, keel.DenseIndex)
    assert isinstance(engine.cross_encoder(), keel.CrossEncoder)
    bm25 = engine.bm25()
    bm25.add("rust", "Rust has ownership and borrowing.")
    bm25.save(tmp_path / "docs.bm25")
    again = keel.Engine(conf).bm25()
    assert again is not bm25
    assert [h.doc_id for h in again.search("borrowing", k=1)] == ["rust"]


def test_a_missing_model_directory_fails_at_open(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "keel.toml"
    conf.write_text("[database]\nurl = 'sqlite://m.db'\n[retrieval]\nembedder = '/no/such/model'\n")
    with pytest.raises(keel.ConfigError, match=r"retrieval\.embedder = /no/such/model"):
        keel.Engine(conf)


def test_configuration_errors_carry_the_field_value_and_scheme(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad_limit = tmp_path / "limit.toml"
    bad_limit.write_text(
        '[database]\nurl = "sqlite://k.db"\n[ratelimit.per_ip]\nlimit = 0\nwindow = 60\n'
    )
    with pytest.raises(keel.ConfigError) as info:
        keel.Engine(str(bad_limit))
    assert (info.value.field, info.value.value) == ("ratelimit.per_ip.limit", "0")

    env.setenv("KEEL_DATABASE_URL", "redis://:hunter2-canary@db/0")
    with pytest.raises(keel.BackendUnavailable) as unavailable:
        keel.Engine.from_env()
    assert (unavailable.value.field, unavailable.value.scheme) == ("database.url", "redis")
    assert "hunter2-canary" not in str(unavailable.value)


def test_a_postgres_url_that_cannot_be_reached_is_store_unavailable_without_the_password(
    env: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.setenv("KEEL_DATABASE_URL", f"postgres://app:hunter2-canary@127.0.0.1:{port}/keel")
    env.setenv("KEEL_DATABASE__CONNECT_TIMEOUT", "0.3")
    with pytest.raises(keel.StoreUnavailable) as info:
        keel.Engine.from_env()
    assert isinstance(info.value, ConnectionError)
    assert info.value.location == f"postgres://app:***@127.0.0.1:{port}/keel"
    assert "hunter2-canary" not in str(info.value)
    assert "hunter2-canary" not in repr(info.value)
