"""keel.fastapi: the ASGI rate-limit middleware in a real FastAPI app, through TestClient."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Response, WebSocket
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

import keel
from keel.fastapi import (
    RateLimitMiddleware,
    by_api_key,
    by_ip,
    by_ip_prefix,
    by_route,
)


@pytest.fixture(scope="module")
def well_formed(tmp_path_factory):
    """Real, well-formed keys (made by a registry the apps under test do not use)."""
    keys = keel.ApiKeys(tmp_path_factory.mktemp("keys") / "k.db", keel.Keyring.generate())
    return [keys.create("other", f"k{i}", env="test")[0] for i in range(3)]


def make_app(**kwargs) -> tuple[FastAPI, keel.RateLimiter, keel.RateLimiter]:
    per_ip = keel.RateLimiter(3, 60, name="per-ip")
    per_key = keel.RateLimiter(2, 60, name="per-key")
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(
        RateLimitMiddleware,
        rules=[(per_ip, by_ip), (per_key, by_api_key)],
        exempt_paths=["/health"],
        **kwargs,
    )
    return app, per_ip, per_key


def test_headers_on_every_response_and_429_with_retry_after():
    app, _, _ = make_app()
    client = TestClient(app)
    for remaining in (2, 1, 0):
        r = client.get("/hello")
        assert r.status_code == 200 and r.json() == {"hello": "world"}
        assert r.headers["x-ratelimit-remaining"] == str(remaining)
        assert r.headers["ratelimit-policy"] == '"per-ip";q=3;w=60'
        assert r.headers["ratelimit"].startswith('"per-ip";r=')
    r = client.get("/hello")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["detail"] == "rate limit exceeded"
    assert r.json()["retry_after"] > 0


def test_exempt_paths_are_not_limited():
    app, per_ip, _ = make_app()
    client = TestClient(app)
    for _ in range(10):
        r = client.get("/health")
        assert r.status_code == 200
        assert "x-ratelimit-limit" not in r.headers
    assert per_ip.stats()["allowed"] == 0


def test_api_key_rule_combines_with_ip_rule(well_formed):
    app, per_ip, per_key = make_app()
    client = TestClient(app)
    # A lowercase "bearer" is the same scheme.
    for scheme in ("Bearer", "bearer"):
        r = client.get("/hello", headers={"Authorization": f"{scheme} {well_formed[0]}"})
        assert r.status_code == 200 and r.headers["ratelimit-policy"].startswith('"per-key"')
    r = client.get("/hello", headers={"X-API-Key": well_formed[0]})
    assert r.status_code == 429 and '"per-key"' in r.headers["ratelimit-policy"]
    # The per-IP budget was refunded for the denied request: 2 of 3 used.
    assert per_ip.stats()["allowed"] == 2
    # Another key has its own bucket.
    assert client.get("/hello", headers={"X-API-Key": well_formed[1]}).status_code == 200


def test_api_keys_name_buckets_only_by_their_hash(well_formed):
    key = well_formed[0]
    hashed = "key:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
        s = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        assert by_api_key(s, "1.2.3.4") == hashed
    app, _, per_key = make_app()
    client = TestClient(app)
    assert client.get("/hello", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/hello", headers={"X-API-Key": key}).status_code == 200
    # The middleware used exactly the hashed name: that bucket is now empty.
    assert not per_key.check(hashed).allowed


def test_garbage_keys_share_their_ips_bucket(well_formed):
    app, _, per_key = make_app()
    client = TestClient(app)
    bad_checksum = well_formed[0][:-1] + ("A" if well_formed[0][-1] != "A" else "B")
    garbage = ["nonsense", "keel_live_short", bad_checksum]
    statuses = [client.get("/hello", headers={"X-API-Key": g}).status_code for g in garbage]
    # Three different invalid values from one IP fill one bucket of 2, not three buckets.
    assert statuses == [200, 200, 429]
    assert not per_key.check("ip:testclient").allowed
    # A real key from the same IP is still counted on its own.
    assert client.get("/hello", headers={"X-API-Key": well_formed[2]}).status_code == 200


def test_by_ip_groups_ipv6_by_prefix():
    s: dict = {"type": "http"}
    assert by_ip(s, "2001:db8:1:2::1") == by_ip(s, "2001:db8:1:2:ffff::9") == "ip:2001:db8:1:2::/64"
    assert by_ip(s, "2001:db8:1:2::1") != by_ip(s, "2001:db8:1:3::1")
    assert by_ip(s, "192.0.2.1") == "ip:192.0.2.1" != by_ip(s, "192.0.2.2")
    assert by_ip(s, "::ffff:192.0.2.1") == "ip:192.0.2.1"
    assert by_ip(s, "testclient") == "ip:testclient"
    by_48 = by_ip_prefix(48)
    assert by_48(s, "2001:db8:1:2::1") == by_48(s, "2001:db8:1:ff::1") == "ip:2001:db8:1::/48"
    by_128 = by_ip_prefix(128)
    assert by_128(s, "2001:db8:1:2::1") == "ip:2001:db8:1:2::1" != by_128(s, "2001:db8:1:2::2")
    for bad in (-1, 129):
        with pytest.raises(ValueError, match="ipv6_prefix"):
            by_ip_prefix(bad)


def test_ipv6_clients_of_one_prefix_share_a_bucket():
    app, _, _ = make_app(trusted_proxies=["10.0.0.0/8"])
    client = TestClient(app, client=("10.0.0.1", 1))
    xff = [f"2001:db8:1:2::{i}" for i in range(1, 5)]
    statuses = [client.get("/hello", headers={"X-Forwarded-For": a}).status_code for a in xff]
    assert statuses == [200, 200, 200, 429]
    assert client.get("/hello", headers={"X-Forwarded-For": "2001:db8:1:3::1"}).status_code == 200


def test_the_apps_headers_are_kept():
    app = FastAPI()

    @app.get("/cookie")
    def cookie() -> Response:
        r = Response("<p>hi</p>", media_type="text/html")
        r.set_cookie("a", "1")
        r.set_cookie("b", "2")
        return r

    app.add_middleware(RateLimitMiddleware, rules=[(keel.RateLimiter(5, 60, name="p"), by_ip)])
    r = TestClient(app).get("/cookie")
    assert r.status_code == 200 and r.text == "<p>hi</p>"
    assert r.headers["content-type"].startswith("text/html")
    assert sorted(r.headers.get_list("set-cookie")) == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]
    assert r.headers["x-ratelimit-remaining"] == "4"


def test_cost_is_charged():
    app, per_ip, _ = make_app(cost=lambda scope: 2 if scope["path"] == "/hello" else 1)
    client = TestClient(app)
    r = client.get("/hello")
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "1"
    assert client.get("/hello").status_code == 429


def test_middleware_needs_rules_and_a_known_forwarded_header():
    with pytest.raises(ValueError):
        RateLimitMiddleware(FastAPI(), rules=[])
    with pytest.raises(ValueError, match="forwarded_header"):
        RateLimitMiddleware(
            FastAPI(), rules=[(keel.RateLimiter(1, 1), by_ip)], forwarded_header="x-real-ip"
        )


def test_the_forwarded_header_option_reaches_client_ip():
    app, _, _ = make_app(trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded")
    client = TestClient(app, client=("10.0.0.1", 1))
    for i in range(3):
        r = client.get(
            "/hello", headers={"Forwarded": "for=203.0.113.7", "X-Forwarded-For": f"6.6.6.{i}"}
        )
        assert r.status_code == 200
    # X-Forwarded-For is not read: the three requests shared one client, 203.0.113.7.
    assert client.get("/hello", headers={"Forwarded": "for=203.0.113.7"}).status_code == 429
    assert client.get("/hello", headers={"Forwarded": "for=203.0.113.8"}).status_code == 200


def test_per_key_rate_limit_plans_override_the_default(tmp_path):
    keys = keel.ApiKeys(tmp_path / "keel.db", keel.Keyring.generate())
    premium, _ = keys.create("acme", "premium", rate_limit=(5, 60.0))
    basic, _ = keys.create("acme", "basic")
    per_key = keel.RateLimiter(2, 60, name="per-key")
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.add_middleware(RateLimitMiddleware, rules=[(per_key, by_api_key)], api_keys=keys)
    client = TestClient(app)

    def statuses(key: str, n: int) -> list[int]:
        return [client.get("/hello", headers={"X-API-Key": key}).status_code for _ in range(n)]

    assert statuses(basic, 3) == [200, 200, 429]
    assert statuses(premium, 6) == [200] * 5 + [429]
    r = client.get("/hello", headers={"X-API-Key": premium})
    assert r.headers["ratelimit-policy"] == '"key-5-per-60s";q=5;w=60'


class FakeKeys:
    """A stand-in registry whose answer the test changes."""

    def __init__(self) -> None:
        self.answer: object = None

    def verify(self, key: str) -> object:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return SimpleNamespace(rate_limit=self.answer)


def test_a_per_key_override_is_removed_when_the_plan_goes(well_formed):
    fake = FakeKeys()
    per_key = keel.RateLimiter(2, 60, name="per-key")
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.add_middleware(RateLimitMiddleware, rules=[(per_key, by_api_key)], api_keys=fake)
    client = TestClient(app)

    def policy() -> str:
        return client.get("/hello", headers={"X-API-Key": well_formed[0]}).headers[
            "ratelimit-policy"
        ]

    default = '"per-key";q=2;w=60'
    fake.answer = (50, 60.0)
    assert policy() == '"key-50-per-60s";q=50;w=60'
    fake.answer = None
    assert policy() == default
    fake.answer = (50, 60.0)
    assert policy() == '"key-50-per-60s";q=50;w=60'
    # A key refused meanwhile (revoked, expired) loses its plan too.
    fake.answer = keel.AuthError("refused", "revoked")
    assert policy() == default


def test_a_busy_key_store_is_503_with_retry_after(well_formed):
    fake = FakeKeys()
    fake.answer = keel.StoreBusy("database is locked")
    app, _, _ = make_app(api_keys=fake, busy_retry_after=3)
    r = TestClient(app).get("/hello", headers={"X-API-Key": well_formed[0]})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    # Without a key there is nothing to look up.
    assert TestClient(app).get("/hello").status_code == 200


def ws_app(**kwargs) -> tuple[FastAPI, keel.RateLimiter, list[str]]:
    events: list[str] = []
    limiter = keel.RateLimiter(3, 60, name="per-ip")

    @asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    app.add_middleware(RateLimitMiddleware, rules=[(limiter, by_ip)], **kwargs)
    return app, limiter, events


def test_lifespan_passes_and_websocket_connects_are_limited():
    app, limiter, events = ws_app()
    with TestClient(app) as client:
        assert events == ["startup"] and limiter.stats()["allowed"] == 0
        for remaining in (2, 1, 0):
            with client.websocket_connect("/ws") as ws:
                assert dict(ws.extra_headers)[b"x-ratelimit-remaining"] == str(remaining).encode()
                ws.send_text("hi")
                assert ws.receive_text() == "hi"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/ws"):
                pass
        assert denied.value.status_code == 429
        assert int(denied.value.headers["retry-after"]) >= 1
    assert events == ["startup", "shutdown"]
    assert limiter.stats()["allowed"] == 3


def test_websocket_refusal_is_close_4429_without_the_denial_extension():
    app, _, _ = ws_app()

    async def no_extensions(scope, receive, send):
        scope = dict(scope)
        scope.pop("extensions", None)
        await app(scope, receive, send)

    client = TestClient(no_extensions)
    for _ in range(3):
        with client.websocket_connect("/ws"):
            pass
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws"):
            pass
    assert closed.value.code == 4429 and "retry after" in closed.value.reason


def test_websocket_messages_are_limited_when_asked():
    app, _, _ = ws_app(websocket_messages=True)
    with TestClient(app).websocket_connect("/ws") as ws:  # connect: 1 of 3
        for text in ("a", "b"):  # 2 and 3 of 3
            ws.send_text(text)
            assert ws.receive_text() == text
        ws.send_text("c")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4429


def test_by_route_names_websockets():
    assert by_route({"type": "websocket", "path": "/ws"}, "1.2.3.4") == "route:WS /ws"
    assert by_route({"type": "http", "method": "GET", "path": "/a"}, "1.2.3.4") == "route:GET /a"
