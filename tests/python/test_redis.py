"""Scale-out on Redis: several app processes sharing one real redis-server (started here on a free
loopback port in a temporary directory, always stopped): a global limit holds exactly, Redis
down honours fail-open / fail-closed and recovers without restarting the app, and a revocation
on one host is refused by the others within a measured bound."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import keel

REDIS = shutil.which("redis-server")
# make test-python installs it (Makefile target `redis-server`); a missing binary is a failure.
assert REDIS, "redis-server is not installed (make redis-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill9()


def run_hosts(script: str, n: int, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for i in range(n)
    ]


def test_three_hosts_of_eight_threads_allow_exactly_the_global_limit(redis_server):
    script = """
        import sys, threading, keel
        for algorithm in ("gcra", "sliding_window"):
            lim = keel.RateLimiter(500, 3600, algorithm=algorithm, name="global-" + algorithm,
                                   redis_url=sys.argv[2])
            sys.stdout.write("ready\\n"); sys.stdout.flush()
            sys.stdin.readline()  # the go signal: every host starts at once
            allowed = []
            def worker():
                allowed.append(sum(lim.check("tenant-1").allowed for _ in range(40)))
            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(sum(allowed), flush=True)
    """
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(i), redis_server.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        for _ in ("gcra", "sliding_window"):
            for h in hosts:
                assert h.stdout.readline().strip() == "ready"
            for h in hosts:
                h.stdin.write("go\n")
                h.stdin.flush()
            total = sum(int(h.stdout.readline()) for h in hosts)
            assert total == 500  # 3 x 8 x 40 = 960 attempts
    finally:
        for h in hosts:
            h.kill()
            h.wait()


def engine_config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "keel.toml"
    cfg.write_text(
        textwrap.dedent(f"""
            [database]
            url = "sqlite://{tmp_path / "keel.db"}"
            [api_keys]
            cache_ttl = 3600
            [redis]
            url = "{url}"
            timeout = 0.2
            [ratelimit.lenient]
            limit = 2
            window = 3600
            backend = "redis"
            on_redis_error = "open"
            [ratelimit.strict]
            limit = 2
            window = 3600
            backend = "redis"
            on_redis_error = "closed"
        """)
    )
    return cfg


def test_redis_down_fails_open_or_closed_and_recovers_without_restart(
    tmp_path, redis_server, monkeypatch
):
    monkeypatch.setenv("KEEL_KEYRING", f"1:{keel.Keyring.generate_key()}")
    engine = keel.Engine(engine_config(tmp_path, redis_server.url))
    lenient, strict = engine.rate_limiter("lenient"), engine.rate_limiter("strict")
    assert strict.check("k").allowed and lenient.check("k").allowed
    redis_server.kill9()
    with pytest.raises(keel.RedisUnavailable) as e:
        strict.check("k")
    assert e.value.endpoint == f"127.0.0.1:{redis_server.port}"
    d = lenient.check("k")
    assert d.allowed and d.degraded
    redis_server.start()  # empty: no persistence
    d = strict.check("k", 2)
    assert d.allowed and not d.degraded
    assert not strict.check("k").allowed


def test_revocation_on_one_host_is_refused_by_the_others_within_the_bound(
    tmp_path, redis_server, monkeypatch
):
    keyring = f"1:{keel.Keyring.generate_key()}"
    cfg = engine_config(tmp_path, redis_server.url)
    monkeypatch.setenv("KEEL_KEYRING", keyring)
    script = f"""
        import json, sys, time, keel
        engine = keel.Engine({str(cfg)!r})
        assert engine.wait_redis_subscribed(10.0)
        keys = engine.api_keys
        print("ready", flush=True)
        key = sys.stdin.readline().strip()
        keys.verify(key)  # now cached for an hour (cache_ttl = 3600)
        print("cached", flush=True)
        sys.stdin.readline()  # the revocation was committed on host A
        start = time.monotonic()
        while True:
            try:
                keys.verify(key)
            except keel.AuthError as e:
                ms = (time.monotonic() - start) * 1000
                print(json.dumps({{"reason": e.reason, "ms": ms}}), flush=True)
                break
            if time.monotonic() - start > 5:
                print(json.dumps({{"reason": "still valid", "ms": 5000}}), flush=True)
                break
    """
    engine_a = keel.Engine(cfg)
    assert engine_a.wait_redis_subscribed(10.0)
    key, info = engine_a.api_keys.create("t1", "app", scopes=["chat"])
    hosts = run_hosts(script, 2, {"KEEL_KEYRING": keyring})  # B and C
    try:
        for h in hosts:
            assert h.stdout.readline().strip() == "ready"
            h.stdin.write(key + "\n")
            h.stdin.flush()
            assert h.stdout.readline().strip() == "cached"
        engine_a.api_keys.revoke("t1", info.key_id)
        for h in hosts:
            h.stdin.write("revoked\n")
            h.stdin.flush()
        results = [json.loads(h.stdout.readline()) for h in hosts]
    finally:
        for h in hosts:
            h.kill()
            h.wait()
    for r in results:
        assert r["reason"] == "revoked", r
        assert r["ms"] < 1000, r  # measured: a pub/sub delivery, milliseconds


def test_a_cache_delete_on_one_host_is_seen_by_another_within_the_bound(tmp_path, redis_server):
    script = """
        import json, sys, time, keel
        cache = keel.SharedCache("answers", 100, redis_url=sys.argv[2])
        assert cache.wait_subscribed(10.0)
        print("ready", flush=True)
        sys.stdin.readline()  # host A stored the value
        # The set's own invalidation may reach this host after its first get and empty its L1:
        # get again until the value sits in L1.
        deadline = time.monotonic() + 5
        while True:
            assert cache.get("q") == b"42"
            if cache.l1_len() == 1:  # now served from this host's L1
                break
            assert time.monotonic() < deadline, "the value never stayed in L1"
            time.sleep(0.01)
        print("cached", flush=True)
        sys.stdin.readline()  # host A deleted it
        start = time.monotonic()
        while cache.get("q") is not None:
            if time.monotonic() - start > 5:
                break
        print(json.dumps({"gone": cache.get("q") is None,
                          "ms": (time.monotonic() - start) * 1000}), flush=True)
    """
    a = keel.SharedCache("answers", 100, redis_url=redis_server.url)
    assert a.wait_subscribed(10.0)
    b = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), "b", redis_server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert b.stdout.readline().strip() == "ready"
        a.set("q", b"42")
        b.stdin.write("set\n")
        b.stdin.flush()
        assert b.stdout.readline().strip() == "cached"
        assert a.delete("q")
        b.stdin.write("deleted\n")
        b.stdin.flush()
        result = json.loads(b.stdout.readline())
    finally:
        b.kill()
        b.wait()
    assert result["gone"], result
    assert result["ms"] < 1000, result  # one pub/sub delivery: milliseconds
    with pytest.raises(TypeError):
        a.set("q", 42)
