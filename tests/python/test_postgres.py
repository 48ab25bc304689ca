"""keel.Engine on PostgreSQL through the Python door, against a real server started here
(tests/python/pg_server.py: Debian binaries, loopback, temporary directory, always stopped).

The Rust suites (tests/postgres_*.rs) cover the backends in depth; these tests prove that the
Python door reaches them as documented in docs/scale-out.md: the same calls as on SQLite,
ciphertexts only on the server, typed errors that never show the password, recovery after a
server crash without a new Engine, and several app processes sharing one conversation."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import PgServer

import keel


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    with PgServer() as pg:
        yield pg


@pytest.fixture
def db(server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh database per test, named after it."""
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    return server.create(name)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A clean KEEL_* environment with a fresh keyring; returned for subprocess hosts too."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and name != "KEEL_TEST_MODELS":
            monkeypatch.delenv(name)
    keyring = f"1:{keel.Keyring.generate_key()}"
    monkeypatch.setenv("KEEL_KEYRING", keyring)
    monkeypatch.chdir(tmp_path)
    return {"KEEL_KEYRING": keyring}


def engine_on(url: str, tmp_path: Path, extra: str = "") -> keel.Engine:
    conf = tmp_path / "keel.toml"
    conf.write_text(f'[database]\nurl = "{url}"\nconnect_timeout = 1.0\n{extra}')
    return keel.Engine(conf)


def test_memory_api_keys_and_audit_round_trip(env: dict[str, str], db: str, tmp_path: Path) -> None:
    engine = engine_on(db, tmp_path)
    mem = engine.memory
    ids = [
        mem.append("acme", "alice", "s1", "user", "hello", metadata={"lang": "en"}, tokens=3),
        mem.append("acme", "alice", "s1", "assistant", "hi there"),
    ]
    ids += mem.append_many(
        "acme", "alice", "s1", [{"role": "user", "content": f"m{i}"} for i in range(3)]
    )
    assert ids == sorted(ids) and len(set(ids)) == 5
    history = mem.history("acme", "alice", "s1")[::-1]  # newest first
    assert [m.content for m in history] == ["hello", "hi there", "m0", "m1", "m2"]
    assert history[0].metadata == {"lang": "en"} and history[0].tokens == 3
    # Tenant and user isolation: the same session key elsewhere is another conversation.
    for tenant, user in [("acme", "bob"), ("other", "alice")]:
        with pytest.raises(keel.SessionNotFound):
            mem.history(tenant, user, "s1")
    assert [s.session for s in mem.sessions("acme", "alice")] == ["s1"]
    mem.delete_session("acme", "alice", "s1")
    with pytest.raises(keel.SessionNotFound):
        mem.history("acme", "alice", "s1")
    assert mem.sessions("acme", "alice") == []

    key, info = engine.api_keys.create("acme", "voicebot", scopes=["chat"])
    assert engine.api_keys.verify(key).key_id == info.key_id
    engine.api_keys.revoke("acme", info.key_id)
    with pytest.raises(keel.AuthError):
        engine.api_keys.verify(key)
    assert engine.audit is not None
    count, _head = engine.audit.verify()
    actions = [(e.action, e.outcome) for e in engine.audit.query()]
    assert count == len(actions) == 3, actions
    assert sorted(actions) == sorted(
        [
            ("api_key.create", "success"),
            ("api_key.revoke", "success"),
            ("api_key.verify", "refused: revoked"),
        ]
    ), "create, revoke and the refused verify, audited in the same database"


def test_the_server_holds_ciphertexts_only(
    env: dict[str, str], server: PgServer, db: str, tmp_path: Path
) -> None:
    canary = "canary-7f3a9c-content"
    meta_canary = "canary-51d2e0-metadata"
    engine = engine_on(db, tmp_path)
    for i in range(20):
        engine.memory.append("acme", "alice", "s1", "user", f"{canary} {i}", {"m": meta_canary})
    assert engine.memory.history("acme", "alice", "s1", limit=1)[0].content.startswith(canary)
    # A probe written in plaintext the same way the server stores anything: the scan must find
    # it, or it could not find the canaries either.
    name = db.rsplit("/", 1)[1]
    probe = "probe-0b8e44-plaintext"
    server.sql(name, f"CREATE TABLE probe (v text); INSERT INTO probe VALUES ('{probe}')")
    server.sql(name, "CHECKPOINT")
    found: dict[str, list[str]] = {canary: [], meta_canary: [], probe: []}
    for path in server.data.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for needle in found:
                if needle.encode() in blob:
                    found[needle].append(str(path.relative_to(server.data)))
    assert found[probe], "the scan did not find the plaintext probe: it cannot find anything"
    assert found[canary] == [] and found[meta_canary] == [], found


def test_server_down_gives_store_unavailable_then_the_same_engine_recovers(
    env: dict[str, str], server: PgServer, tmp_path: Path
) -> None:
    url = server.create("t_crash")
    host = url.split("@", 1)[1]
    secret = "pw-5be2c1-secret"
    # trust authentication ignores the password: it is only there to check it is never shown.
    engine = engine_on(f"postgres://keel:{secret}@{host}", tmp_path)
    acked = [engine.memory.append("acme", "alice", "s1", "user", f"before {i}") for i in range(5)]
    server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(keel.StoreUnavailable) as err:
            engine.memory.append("acme", "alice", "s1", "user", "while down")
        assert time.monotonic() - started < 10, "a call while the server is down fails fast"
        assert isinstance(err.value, ConnectionError)
        assert secret not in str(err.value) and secret not in repr(err.value)
        assert err.value.location is not None and secret not in err.value.location
        assert "127.0.0.1" in str(err.value)
        with pytest.raises(keel.StoreUnavailable):
            engine.memory.history("acme", "alice", "s1")
    finally:
        server.start()
    acked.append(engine.memory.append("acme", "alice", "s1", "user", "after"))
    got = engine.memory.history("acme", "alice", "s1")[::-1]  # newest first
    assert [m.id for m in got] == acked, "every acknowledged message, in order, none other"
    assert [m.content for m in got][-1] == "after"


def test_async_memory_on_postgres_does_not_block_the_event_loop(
    env: dict[str, str], db: str, tmp_path: Path
) -> None:
    engine = engine_on(db, tmp_path)
    mem = keel.AsyncMemory(engine.memory)

    async def main() -> tuple[list[int], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        ids = await asyncio.gather(
            *(mem.append("acme", "alice", f"s{i % 4}", "user", f"m{i}") for i in range(40))
        )
        done.set()
        await t
        return list(ids), ticks

    ids, ticks = asyncio.run(main())
    assert len(set(ids)) == 40
    assert ticks > 40, "the loop ran while appends waited on the server"
    total = sum(len(engine.memory.history("acme", "alice", f"s{i}")) for i in range(4))
    assert total == 40


HOST = textwrap.dedent(
    """
    import json, sys, keel
    conf, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    engine = keel.Engine(conf)
    import os, time
    open(go + "." + name, "w").close()  # ready
    while not os.path.exists(go):  # a shared start: every host appends at the same time
        time.sleep(0.001)
    ids = [engine.memory.append("acme", "alice", "shared", "user", f"{name}:{i}")
           for i in range(n)]
    print(json.dumps(ids))
    """
)


def test_three_hosts_append_to_one_conversation_and_nothing_is_lost(
    env: dict[str, str], db: str, tmp_path: Path
) -> None:
    engine = engine_on(db, tmp_path)  # creates the schema before the hosts start
    conf = tmp_path / "keel.toml"
    go = tmp_path / "go"
    n = 60
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", HOST, str(conf), f"h{h}", str(n), str(go)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in range(3)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.h{h}").exists() for h in range(3)):
        assert time.monotonic() < deadline, "the hosts did not start"
        assert all(p.poll() is None for p in hosts), "a host died before starting"
        time.sleep(0.01)
    go.touch()
    acked: dict[str, list[int]] = {}
    for h, p in enumerate(hosts):
        out, errs = p.communicate(timeout=120)
        assert p.returncode == 0, errs
        acked[f"h{h}"] = json.loads(out)
    got = engine.memory.history("acme", "alice", "shared", limit=1000)[::-1]  # newest first
    assert sorted(m.id for m in got) == sorted(i for ids in acked.values() for i in ids)
    assert [m.id for m in got] == sorted(m.id for m in got), "history is in id order"
    for name, ids in acked.items():
        mine = [m for m in got if m.content.startswith(f"{name}:")]
        assert [m.id for m in mine] == ids
        assert [m.content for m in mine] == [f"{name}:{i}" for i in range(n)]
