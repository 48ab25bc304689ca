"""keel.fastapi: the ASGI rate-limit middleware in a real FastAPI app, through TestClient."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import keel
from keel.fastapi import RateLimitMiddleware, by_api_key, by_ip, client_ip, parse_networks


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


def test_api_key_rule_combines_with_ip_rule():
    app, per_ip, per_key = make_app()
    client = TestClient(app)
    headers = {"Authorization": "Bearer keel_test_abc"}
    assert client.get("/hello", headers=headers).headers["ratelimit-policy"].startswith('"per-key"')
    assert client.get("/hello", headers=headers).status_code == 200
    r = client.get("/hello", headers=headers)
    assert r.status_code == 429 and '"per-key"' in r.headers["ratelimit-policy"]
    # The per-IP budget was refunded for the denied request: 2 of 3 used.
    assert per_ip.stats()["allowed"] == 2
    # No plaintext key is kept as a limiter key (it is hashed).
    assert client.get("/hello", headers={"X-API-Key": "other"}).status_code == 200


def test_trusted_proxy_resolution():
    trusted = parse_networks(["10.0.0.0/8"])
    scope = {
        "type": "http",
        "client": ("10.1.2.3", 1234),
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7, 10.0.0.5")],
    }
    assert client_ip(scope, trusted) == "203.0.113.7"
    # An untrusted peer cannot choose its IP through the header.
    scope["client"] = ("198.51.100.1", 1)
    assert client_ip(scope, trusted) == "198.51.100.1"
    assert client_ip(scope) == "198.51.100.1"
    # A malformed hop falls back to the peer.
    scope = {"client": ("10.1.1.1", 1), "headers": [(b"x-forwarded-for", b"nonsense")]}
    assert client_ip(scope, trusted) == "10.1.1.1"


def test_middleware_needs_rules_and_valid_networks():
    with pytest.raises(ValueError):
        RateLimitMiddleware(FastAPI(), rules=[])
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])


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
