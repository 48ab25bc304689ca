"""keel.fastapi.APIKeyAuth: scopes, WebSockets, a busy or locked key store."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import keel
from keel.fastapi import APIKeyAuth, RateLimitMiddleware, by_api_key


@pytest.fixture
def keys(tmp_path):
    return keel.ApiKeys(tmp_path / "keel.db", keel.Keyring.generate())


def scoped_app(keys, scopes: list[str]) -> FastAPI:
    app = FastAPI()
    auth = APIKeyAuth(keys, scopes=scopes)
    authenticated = Depends(auth)

    @app.get("/who", dependencies=[authenticated])
    async def who(request: Request) -> dict[str, str]:
        return {"tenant": request.state.api_key.tenant}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, identity: keel.Identity = authenticated) -> None:
        await websocket.accept()
        await websocket.send_json(
            {"tenant": identity.tenant, "state": websocket.state.api_key.tenant}
        )
        await websocket.close()

    return app


def test_every_required_scope_is_checked_and_state_is_set(keys):
    both, _ = keys.create("acme", "both", scopes=["chat:read", "chat:write"])
    one, _ = keys.create("acme", "one", scopes=["chat:read"])
    client = TestClient(scoped_app(keys, ["chat:read", "chat:write"]))
    r = client.get("/who", headers={"X-API-Key": one})
    assert r.status_code == 403 and "chat:write" in r.json()["detail"]
    assert 'scope="chat:write"' in r.headers["www-authenticate"]
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = client.get("/who", headers={"Authorization": f"{scheme} {both}"})
        assert r.status_code == 200 and r.json() == {"tenant": "acme"}


def test_malformed_and_unknown_keys_are_401(keys, tmp_path):
    other = keel.ApiKeys(tmp_path / "other.db", keel.Keyring.generate())
    unknown, _ = other.create("acme", "elsewhere")
    client = TestClient(scoped_app(keys, []))
    bad_checksum = unknown[:-1] + ("A" if unknown[-1] != "A" else "B")
    for presented in ("nonsense", bad_checksum, unknown):
        r = client.get("/who", headers={"X-API-Key": presented})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert presented not in r.text
    assert client.get("/who", headers={"X-API-Key": ""}).status_code == 401


def test_websocket_routes_are_authenticated(keys):
    reader, _ = keys.create("acme", "reader", scopes=["chat:read"])
    writer, _ = keys.create("acme", "writer", scopes=["chat:read", "chat:write"])
    client = TestClient(scoped_app(keys, ["chat:write"]))
    refusals = [({}, 4401), ({"X-API-Key": "nonsense"}, 4401), ({"X-API-Key": reader}, 4403)]
    for headers, code in refusals:
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("/ws", headers=headers):
                pass
        assert closed.value.code == code
    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {writer}"}) as ws:
        assert ws.receive_json() == {"tenant": "acme", "state": "acme"}


class BusyKeys:
    def verify(self, key: str) -> keel.Identity:
        raise keel.StoreBusy("database is locked")


def test_a_busy_key_store_is_503_or_1013(keys):
    key, _ = keys.create("acme", "k")
    app = FastAPI()
    auth = APIKeyAuth(BusyKeys(), busy_retry_after=2)  # type: ignore[arg-type]

    @app.get("/who", dependencies=[Depends(auth)])
    async def who() -> str:
        return "never"

    @app.websocket("/ws", dependencies=[Depends(auth)])
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()

    client = TestClient(app)
    r = client.get("/who", headers={"X-API-Key": key})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers={"X-API-Key": key}):
            pass
    assert closed.value.code == 1013


LOCK_HOLDER = """
import sqlite3, sys
lock = sqlite3.connect(sys.argv[1], isolation_level=None)
lock.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
lock.execute("ROLLBACK")
"""


class Signalling:
    """Wraps a registry, says when a verification starts and holds it until the gate opens: a
    verification that blocks (a database wait) for as long as the test decides. Run on the event
    loop, it would freeze every other route until then."""

    def __init__(self, keys: keel.ApiKeys) -> None:
        self.keys = keys
        self.entered = threading.Event()
        self.gate = threading.Event()

    def verify(self, key: str) -> keel.Identity:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.keys.verify(key)


@pytest.mark.parametrize("door", ["dependency", "middleware"])
def test_a_locked_database_does_not_stall_other_routes(tmp_path, door):
    db = tmp_path / "keel.db"
    keyring = keel.Keyring.generate()
    keys = keel.ApiKeys(db, keyring, audit=keel.AuditLog(db, keyring))
    other = keel.ApiKeys(tmp_path / "other.db", keel.Keyring.generate())
    unknown, _ = other.create("acme", "elsewhere")  # well formed, unknown here: refusal is audited
    signalling = Signalling(keys)

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    if door == "dependency":
        auth = Depends(APIKeyAuth(signalling))  # type: ignore[arg-type]

        @app.get("/secure", dependencies=[auth])
        async def secure() -> str:
            return "secret"

        expected = 401
    else:

        @app.get("/secure")
        async def secure() -> str:
            return "secret"

        limiter = keel.RateLimiter(10, 60, name="per-key")
        app.add_middleware(RateLimitMiddleware, rules=[(limiter, by_api_key)], api_keys=signalling)
        expected = 200

    # Another process holds SQLite's write lock (fcntl locks taken in this process would not
    # exclude this process's own connections).
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    results: dict[str, int] = {}
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with TestClient(app) as client:

            def call(path: str, **kwargs) -> None:
                results[path] = client.get(path, **kwargs).status_code

            secure_call = threading.Thread(
                target=call, args=("/secure",), kwargs={"headers": {"X-API-Key": unknown}}
            )
            secure_call.start()
            assert signalling.entered.wait(10)
            ping_call = threading.Thread(target=call, args=("/ping",))
            ping_call.start()
            ping_call.join(timeout=10)
            answered_while_blocked = dict(results)
            signalling.gate.set()
            # The real verification now runs while the other process still holds the write
            # lock: it must not wait for it (the refusal's audit entry is best-effort).
            secure_call.join(timeout=10)
            answered_while_locked = dict(results)
            holder.communicate("", timeout=30)  # releases the lock
            secure_call.join(timeout=60)
            ping_call.join(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert answered_while_blocked == {"/ping": 200}
    assert answered_while_locked == {"/ping": 200, "/secure": expected}
    assert results == {"/ping": 200, "/secure": expected}
