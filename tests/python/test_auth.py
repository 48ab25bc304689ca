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
    return keel.ApiKeys(tmp_path / "keel.db", keel.Keyring.generate(), cache_ttl=0.2)


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
    assert (ident.tenant, ident.key_id, ident.scopes) == ("acme", info.id, ["chat:write"])
    assert ident.rate_limit == (60, 60.0)
    ident.require("chat:write")
    with pytest.raises(keel.MissingScope) as err:
        ident.require("admin")
    assert err.value.reason == "missing_scope" and err.value.scope == "admin"
    [listed] = keys.list("acme")
    assert listed.metadata == '{"owner": "ops"}' and listed.last_used_at is not None
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
    keys.revoke("acme", info.id)
    with pytest.raises(keel.AuthError) as err:
        keys.verify(plaintext)
    assert err.value.reason == "revoked"
    with pytest.raises(keel.AuthError) as err:
        keys.revoke("other-tenant", info.id)
    assert err.value.reason == "unknown_key"

    old, old_info = keys.create("acme", "rotating")
    new, new_info = keys.rotate("acme", old_info.id, grace=0.3)
    assert keys.verify(old).key_id == old_info.id  # within the grace period
    assert keys.verify(new).key_id == new_info.id
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
    keys.revoke("acme", info.id, actor="bob")
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
    assert audit.query(since=entries[-1].at + 3600) == []
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
