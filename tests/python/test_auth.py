"""keel.ApiKeys and the FastAPI API-key dependency."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import keel
from keel.fastapi import APIKeyAuth


@pytest.fixture
def keys(tmp_path):
    # A long TTL: a revocation seen here can only come from the cache invalidation.
    return keel.ApiKeys(tmp_path / "keel.db", keel.Keyring.generate(), cache_ttl=3600.0)


def test_create_verify_list_and_scopes(keys):
    plaintext, info = keys.create(
        "acme",
        "mobile app",
        scopes=["chat:write"],
        metadata='{"owner": "ops"}',
        rate_limit=(60, 60.0),
    )
    assert plaintext.startswith("keel_live_") and info.display == plaintext[:16]
    ident = keys.verify(plaintext)
    assert (ident.tenant, ident.key_id, ident.scopes) == ("acme", info.key_id, ["chat:write"])
    assert ident.rate_limit == (60, 60.0)
    ident.require("chat:write")
    with pytest.raises(keel.MissingScope) as err:
        ident.require("admin")
    assert err.value.reason == "missing_scope" and err.value.scope == "admin"
    [listed] = keys.list("acme")
    assert listed.metadata == '{"owner": "ops"}' and listed.last_used_at_ms is not None
    assert keys.list("other-tenant") == []


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda k: "not a key", "malformed"),
        (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "bad_checksum"),
        (lambda k: keel.ApiKeys.__name__, "malformed"),
    ],
)
def test_refused_keys_carry_a_reason_and_never_echo_the_key(keys, mutate, reason):
    plaintext, _ = keys.create("acme", "k")
    presented = mutate(plaintext)
    with pytest.raises(keel.AuthError) as err:
        keys.verify(presented)
    assert err.value.reason == reason
    assert presented not in str(err.value)


def test_revoke_rotate_and_bad_input(keys):
    plaintext, info = keys.create("acme", "k")
    keys.verify(plaintext)
    keys.revoke("acme", info.key_id)
    with pytest.raises(keel.AuthError) as err:
        keys.verify(plaintext)
    assert err.value.reason == "revoked"
    with pytest.raises(keel.AuthError) as err:
        keys.revoke("other-tenant", info.key_id)
    assert err.value.reason == "unknown_key"

    old, old_info = keys.create("acme", "rotating")
    new, new_info = keys.rotate("acme", old_info.key_id, grace=0.3)
    assert keys.verify(old).key_id == old_info.key_id  # within the grace period
    assert keys.verify(new).key_id == new_info.key_id
    time.sleep(0.4)
    with pytest.raises(keel.AuthError) as err:
        keys.verify(old)
    assert err.value.reason == "expired"

    with pytest.raises(keel.InvalidArgument):
        keys.create("acme", "k", env="PROD")
    with pytest.raises(keel.InvalidArgument):
        keys.create("acme", "k", metadata="{not json")
    with pytest.raises(keel.InvalidArgument):
        keys.create("", "k")
    with pytest.raises(keel.InvalidArgument):
        keel.ApiKeys(":memory:", keel.Keyring.generate(), cache_ttl=0)


def make_app(keys: keel.ApiKeys) -> FastAPI:
    app = FastAPI()
    writer = Depends(APIKeyAuth(keys, scopes=["chat:write"]))

    @app.get("/chat")
    async def chat(identity: keel.Identity = writer):
        return {"tenant": identity.tenant}

    return app


def test_fastapi_dependency_401_403_and_success(keys):
    client = TestClient(make_app(keys))
    good, _ = keys.create("acme", "writer", scopes=["chat:write"])
    reader, _ = keys.create("acme", "reader", scopes=["chat:read"])

    r = client.get("/chat")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="keel"'

    r = client.get("/chat", headers={"Authorization": "Bearer keel_live_nope"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "keel_live_nope" not in r.text

    r = client.get("/chat", headers={"X-API-Key": reader})
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]

    for headers in ({"Authorization": f"Bearer {good}"}, {"X-API-Key": good}):
        r = client.get("/chat", headers=headers)
        assert r.status_code == 200 and r.json() == {"tenant": "acme"}


def test_audit_log_records_admin_operations_and_detects_tampering(tmp_path):
    keyring = keel.Keyring.generate()
    audit = keel.AuditLog(tmp_path / "keel.db", keyring)
    keys = keel.ApiKeys(tmp_path / "keel.db", keyring, audit=audit)
    plaintext, info = keys.create("acme", "k", actor="alice")
    keys.revoke("acme", info.key_id, actor="bob")
    with pytest.raises(keel.AuthError):
        keys.verify(plaintext)
    audit.append("deploy-bot", "config.change", "rate-limits", request_id="req-1")
    entries = audit.query()
    assert [(e.actor, e.action, e.outcome) for e in entries] == [
        ("alice", "api_key.create", "success"),
        ("bob", "api_key.revoke", "success"),
        (plaintext[:16], "api_key.verify", "refused: revoked"),
        ("deploy-bot", "config.change", "success"),
    ]
    assert [e.seq for e in audit.query(actor="bob")] == [2]
    assert audit.query(since_ms=entries[-1].at_ms + 3_600_000) == []
    count, head = audit.verify()
    assert count == 4 and len(head) == 64

    # Tamper from another process: keel links its own SQLite, and two SQLite libraries must
    # not share a database file inside one process (POSIX locks are per process).
    tamper = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "db.execute('DELETE FROM audit_log WHERE seq = 2'); db.commit()"
    )
    subprocess.run([sys.executable, "-c", tamper, str(tmp_path / "keel.db")], check=True)
    with pytest.raises(keel.AuditTampered, match="entry 2"):
        audit.verify()


def test_keys_of_another_environment_are_refused(tmp_path):
    keyring = keel.Keyring.generate()
    live = keel.ApiKeys(tmp_path / "keel.db", keyring)
    test_key, _ = live.create("acme", "ci", env="test")
    live_key, _ = live.create("acme", "prod")
    with pytest.raises(keel.AuthError) as err:
        live.verify(test_key)
    assert err.value.reason == "wrong_environment"
    assert '"test"' in str(err.value) and "live" in str(err.value)
    assert test_key[10:] not in str(err.value)
    assert live.verify(live_key).tenant == "acme"
    staging = keel.ApiKeys(tmp_path / "keel.db", keyring, accepted_envs=["test", "staging"])
    assert staging.verify(test_key).env == "test"
    with pytest.raises(keel.AuthError) as err:
        staging.verify(live_key)
    assert err.value.reason == "wrong_environment"


def _sql(db, statement: str) -> None:
    """Runs SQL in another process (two SQLite libraries must not share a file in one)."""
    script = "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.executescript(sys.argv[2])"
    subprocess.run([sys.executable, "-c", script, str(db), statement], check=True)


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE api_keys SET scopes = 'admin'",
        "UPDATE api_keys SET tenant_id = 'globex'",
        "UPDATE api_keys SET env = 'test'",
        "UPDATE api_keys SET expires_at = NULL",
        "UPDATE api_keys SET revoked_at = NULL",
        "UPDATE api_keys SET rate_limit = 1000000",
        "UPDATE api_keys SET policy_mac = NULL",
    ],
)
def test_a_key_row_edited_without_the_keyring_is_refused(tmp_path, edit):
    keyring = keel.Keyring.generate()
    db = tmp_path / "keel.db"
    keys = keel.ApiKeys(db, keyring)
    plaintext, info = keys.create(
        "acme",
        "k",
        scopes=["chat:read"],
        expires_at_ms=int(time.time() * 1000) + 3_600_000,
        rate_limit=(5, 60.0),
    )
    if "revoked_at" in edit:
        keys.revoke("acme", info.key_id)
    _sql(db, edit)
    with pytest.raises(keel.AuthError) as err:
        keel.ApiKeys(db, keyring).verify(plaintext)  # a fresh registry: no cache
    assert err.value.reason == "tampered"


def test_verify_does_not_wait_for_another_process_holding_the_write_lock(tmp_path):
    keyring = keel.Keyring.generate()
    db = tmp_path / "keel.db"
    audit = keel.AuditLog(db, keyring)
    keys = keel.ApiKeys(db, keyring, audit=audit)
    plaintext, _ = keys.create("acme", "k")
    stranger, _ = keel.ApiKeys(tmp_path / "other.db", keyring).create("acme", "k")
    fresh = keel.ApiKeys(db, keyring, audit=audit)  # nothing cached
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "db.execute('ROLLBACK')\n",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        assert fresh.verify(plaintext).tenant == "acme"
        with pytest.raises(keel.AuthError) as err:
            fresh.verify(plaintext[:-6] + "x" * 6)  # bad checksum: offline
        assert err.value.reason == "bad_checksum"
        with pytest.raises(keel.AuthError) as err:
            fresh.verify(stranger)  # unknown here: its audit entry is skipped, not awaited
        assert err.value.reason == "unknown_key"
        # Generous correctness bound: the store would otherwise wait up to 30 s.
        assert time.monotonic() - started < 2.0
        assert fresh.last_used_skipped == 1
        assert fresh.refusal_audits_skipped == 1
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0


def test_the_audit_log_must_share_the_keys_database(tmp_path):
    keyring = keel.Keyring.generate()
    other = keel.AuditLog(tmp_path / "audit.db", keyring)
    with pytest.raises(keel.InvalidArgument, match="audit log must be in the API keys' database"):
        keel.ApiKeys(tmp_path / "keel.db", keyring, audit=other)
