"""keel.fastapi's exact contract, pinned where mutation testing (make mutants-python) found
assertions missing: the parsing of proxy headers and networks, the key functions, the raw ASGI
messages of a refusal (status, body, lower-case header names, lengths), and the texts of the
authentication errors. Each test here killed surviving mutants of python/keel/fastapi.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import keel
from keel.fastapi import (
    APIKeyAuth,
    RateLimitMiddleware,
    by_api_key,
    by_ip,
    by_ip_prefix,
    by_route,
    client_ip,
    parse_networks,
)

# --- networks ----------------------------------------------------------------------------


def test_parse_networks_accepts_host_bits_and_unmaps_ipv4_mapped_ranges() -> None:
    assert parse_networks(["10.1.2.3/8"]) == [ipaddress.ip_network("10.0.0.0/8")]
    assert parse_networks(["::ffff:10.0.0.0/104"]) == [ipaddress.ip_network("10.0.0.0/8")]
    # Exactly /96 is the whole mapped space: every IPv4 address.
    assert parse_networks(["::ffff:0:0/96"]) == [ipaddress.ip_network("0.0.0.0/0")]
    # A /97 keeps one more bit.
    assert parse_networks(["::ffff:128.0.0.0/97"]) == [ipaddress.ip_network("128.0.0.0/1")]
    # Not in the mapped space, or wider than /96: stays IPv6.
    assert parse_networks(["2001:db8::/96"]) == [ipaddress.ip_network("2001:db8::/96")]
    assert parse_networks(["::/95"]) == [ipaddress.ip_network("::/95")]


# --- client_ip through proxies ----------------------------------------------------------------


def scope_with(peer: str, **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 1234),
        "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers.items()],
    }


PROXY = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


def fwd(value: str) -> str:
    return client_ip(scope_with("10.0.0.1", forwarded=value), PROXY, forwarded_header="forwarded")


def test_forwarded_quoted_values_may_hold_separators_and_escapes() -> None:
    # A quoted parameter holding ',' and ';' is one value; the client is the last untrusted node.
    assert fwd('for=192.0.2.60;by="a,b;c", for=10.0.0.2') == "192.0.2.60"
    assert fwd('for="[2001:db8:cafe::17]:4711"') == "2001:db8:cafe::17"
    # Backslash escapes inside quotes: an escaped quote does not end the string.
    assert fwd('for=192.0.2.61;ext="x\\"y,z", for=10.0.0.2') == "192.0.2.61"
    assert fwd('for="\\1\\9\\2.0.2.62"') == "192.0.2.62"
    # An escaped backslash then a quote ends the string: the comma after it separates elements.
    assert fwd('for=192.0.2.63;ext="a\\\\", for=10.0.0.2') == "192.0.2.63"
    # Empty elements (a stray comma) are skipped, and the walk goes on past them.
    assert fwd("for=192.0.2.64, , for=10.0.0.2") == "192.0.2.64"
    assert fwd("for=192.0.2.1, , for=192.0.2.64") == "192.0.2.64"
    # After an escaped character the string goes on: the comma after its end still separates.
    assert fwd('for=10.0.0.5;ext="x\\"y", for=192.0.2.61') == "192.0.2.61"
    # An escaped backslash stays in the value (here making the address invalid).
    assert fwd('for="192.0.2.1\\\\"') == "10.0.0.1"
    # A value containing '=' keeps everything after the first '='.
    assert fwd("for=192.0.2.65;ext=a=b") == "192.0.2.65"
    assert fwd('for="192.0.2.66"') == "192.0.2.66"
    # A lone quote is not a quoted string; it makes the node unusable (walk stops at the proxy).
    assert fwd('for="') == "10.0.0.1"


@pytest.mark.parametrize(
    ("node", "client"),
    [
        ("192.0.2.1:65535", "192.0.2.1"),  # five digits is a port
        ("192.0.2.1:123456", "10.0.0.1"),  # six is not
        ("192.0.2.1:_hidden-port.1", "192.0.2.1"),  # obfuscated port
        ("192.0.2.1:_bad port", "10.0.0.1"),
        ("192.0.2.1:x_y", "10.0.0.1"),  # an obfuscated port starts with '_'
        ("192.0.2.1:", "10.0.0.1"),
        ('"[2001:db8:cafe::1]"', "2001:db8:cafe::1"),  # brackets, no port
        ('"[2001:db8:cafe::1]:80"', "2001:db8:cafe::1"),
        ('"[2001:db8:cafe::1]:_p"', "2001:db8:cafe::1"),
        ('"[2001:db8:cafe::1]80"', "10.0.0.1"),  # junk after the bracket
        ('"[2001:db8:cafe::1]:8:0"', "10.0.0.1"),
        ('"[2001:db8:cafe::1"', "10.0.0.1"),  # unclosed
        ('"[]:80"', "10.0.0.1"),
        ('"[192.0.2.1]:80"', "10.0.0.1"),  # brackets are for IPv6 only
        ('"[2001:db8:cafe::1]]:80"', "10.0.0.1"),
        ("unknown", "10.0.0.1"),
        ("_obfuscated", "10.0.0.1"),
    ],
)
def test_forwarded_node_forms(node: str, client: str) -> None:
    assert fwd(f"for={node}") == client


def test_x_forwarded_for_lines_are_joined_in_order() -> None:
    s = {
        "type": "http",
        "client": ("10.0.0.1", 1),
        "headers": [(b"x-forwarded-for", b"192.0.2.9"), (b"x-forwarded-for", b"10.0.0.3")],
    }
    assert client_ip(s, PROXY) == "192.0.2.9"


# --- key functions ------------------------------------------------------------------------


def test_by_ip_prefix_default_validation_and_doc() -> None:
    group = by_ip_prefix()
    assert group({}, "2001:db8:1:2:3:4:5:6") == "ip:2001:db8:1:2::/64"
    assert group.__doc__ == "Rate-limit per client IP (IPv6 per /64)."
    assert by_ip_prefix(0)({}, "2001:db8::1") == "ip:::/0"
    assert by_ip_prefix(128)({}, "2001:db8::1") == "ip:2001:db8::1"
    assert by_ip_prefix(48)({}, "192.0.2.7") == "ip:192.0.2.7"
    with pytest.raises(TypeError, match="ipv6_prefix must be an int, not bool"):
        by_ip_prefix(True)
    with pytest.raises(TypeError, match="ipv6_prefix must be an int, not float"):
        by_ip_prefix(64.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0 and 128, not -1"):
        by_ip_prefix(-1)
    with pytest.raises(ValueError, match="not 129"):
        by_ip_prefix(129)


def test_by_route_names_method_and_path() -> None:
    assert by_route({"type": "http", "method": "GET", "path": "/a"}, "") == "route:GET /a"
    assert by_route({"type": "websocket", "path": "/ws"}, "") == "route:WS /ws"
    assert by_route({"type": "http"}, "") == "route: "


def test_by_api_key_limits_garbage_per_ipv6_64() -> None:
    s = {"type": "http", "headers": [(b"x-api-key", b"not-a-key")]}
    assert by_api_key(s, "2001:db8:1:2:3:4:5:6") == "ip:2001:db8:1:2::/64"
    assert by_api_key(s, "2001:db8:1:2:3:4:5:6") == by_ip(s, "2001:db8:1:2:3:4:5:6")


# --- raw ASGI refusals ----------------------------------------------------------------------


async def ok_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def call(mw: RateLimitMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw({"client": ("192.0.2.1", 1), "headers": [], **scope}, receive, send))
    return sent


def test_a_429_is_exact_json_with_lower_case_headers() -> None:
    limiter = keel.RateLimiter(1, 60, name="one")
    mw = RateLimitMiddleware(ok_app, [(limiter, by_ip)])
    first = call(mw, {"type": "http", "path": "/"})
    assert first[0]["status"] == 200
    names = [k for k, _ in first[0]["headers"]]
    assert names[0] == b"x-app" and b"x-ratelimit-remaining" in names  # appended, not replaced
    start, body = call(mw, {"type": "http", "path": "/"})
    assert start["type"] == "http.response.start" and start["status"] == 429
    headers = start["headers"]
    assert all(k == k.lower() for k, _ in headers)
    assert headers[0] == (b"content-type", b"application/json")
    assert headers[1] == (b"content-length", str(len(body["body"])).encode())
    data = json.loads(body["body"])
    assert data["detail"] == "rate limit exceeded"
    # The body carries the exact seconds; the header the whole seconds, rounded up.
    assert 59 < data["retry_after"] <= 60 and isinstance(data["retry_after"], float)
    assert dict(headers)[b"retry-after"] == b"60"


def test_retry_after_seconds_round_up_with_a_floor_of_one() -> None:
    from keel.fastapi import _retry_after_seconds

    assert [_retry_after_seconds(v) for v in (None, 0.0, 0.2, 1.0, 1.5)] == [1, 1, 1, 1, 2]


def test_the_middleware_needs_a_rule_and_defaults_busy_retry_after_to_one() -> None:
    with pytest.raises(ValueError, match=r"^RateLimitMiddleware needs at least one"):
        RateLimitMiddleware(ok_app, [])
    assert RateLimitMiddleware(ok_app, [(keel.RateLimiter(1, 1), by_ip)]).busy_retry_after == 1


def test_websocket_message_refusal_close_reason() -> None:
    limiter = keel.RateLimiter(2, 60, name="ws")
    got: list[dict[str, Any]] = []

    async def echo(scope, receive, send) -> None:
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            got.append(message)
            if message["type"] == "websocket.disconnect":
                return

    mw = RateLimitMiddleware(echo, [(limiter, by_ip)], websocket_messages=True)
    incoming = [{"type": "websocket.receive", "text": t} for t in "ab"]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "client": ("192.0.2.1", 1), "headers": []}
    asyncio.run(mw(scope, receive, send))  # the connect costs 1, "a" the 2nd, "b" is refused
    assert got == [
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.disconnect", "code": 4429},
    ]
    assert sent[0]["type"] == "websocket.accept"
    assert sent[-1] == {
        "type": "websocket.close",
        "code": 4429,
        "reason": "rate limit exceeded; retry after 30 s",  # GCRA: 2 per 60 s = one per 30 s
    }


# --- authentication texts ------------------------------------------------------------------


def test_auth_refusals_name_the_problem_without_the_key(tmp_path) -> None:
    keys = keel.ApiKeys(tmp_path / "k.db", keel.Keyring.generate())
    plain, _ = keys.create("acme", "k", scopes=["read"])
    app = FastAPI()
    authenticated = Depends(APIKeyAuth(keys, scopes=["read", "write"]))

    @app.get("/x")
    def x(identity: keel.Identity = authenticated) -> dict[str, str]:
        return {"tenant": identity.tenant}

    client = TestClient(app)
    r = client.get("/x")
    assert (r.status_code, r.json()) == (401, {"detail": "missing API key"})
    assert r.headers["www-authenticate"] == 'Bearer realm="keel"'
    r = client.get("/x", headers={"x-api-key": "keel_live_garbage"})
    assert (r.status_code, r.json()) == (401, {"detail": "invalid API key"})
    assert r.headers["www-authenticate"] == 'Bearer realm="keel", error="invalid_token"'
    r = client.get("/x", headers={"authorization": f"Bearer {plain}"})
    assert (r.status_code, r.json()) == (403, {"detail": "the API key lacks the scope 'write'"})
    assert r.headers["www-authenticate"] == (
        'Bearer realm="keel", error="insufficient_scope", scope="write"'
    )
    assert plain not in r.text


# --- the middleware's rules and the busy key store -------------------------------------------


class Keys:
    """Stands in for keel.ApiKeys in the middleware: `verify` answers or raises `answer`."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def verify(self, key: str) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return type("Identity", (), {"rate_limit": self.answer})()


@pytest.fixture(scope="module")
def a_key(tmp_path_factory) -> str:
    keys = keel.ApiKeys(tmp_path_factory.mktemp("k") / "k.db", keel.Keyring.generate())
    return keys.create("t", "k")[0]


def test_a_rule_without_a_key_does_not_stop_the_next_rule() -> None:
    per_key, per_ip = keel.RateLimiter(5, 60, name="k"), keel.RateLimiter(1, 60, name="ip")
    mw = RateLimitMiddleware(ok_app, [(per_key, by_api_key), (per_ip, by_ip)])
    assert call(mw, {"type": "http", "path": "/"})[0]["status"] == 200
    assert call(mw, {"type": "http", "path": "/"})[0]["status"] == 429  # by_ip still applied


def test_requests_no_rule_applies_to_reach_the_app_with_their_body() -> None:
    got: list[bytes] = []

    async def reader(scope, receive, send) -> None:
        got.append((await receive())["body"])
        await ok_app(scope, receive, send)

    mw = RateLimitMiddleware(reader, [(keel.RateLimiter(1, 60), by_api_key)])
    assert call(mw, {"type": "http", "path": "/"})[0]["status"] == 200 and got == [b""]


def test_a_key_plan_applies_to_every_by_api_key_limiter(a_key: str) -> None:
    first, second = keel.RateLimiter(2, 60, name="a"), keel.RateLimiter(3, 60, name="b")
    mw = RateLimitMiddleware(
        ok_app, [(first, by_api_key), (second, by_api_key)], api_keys=Keys((50, 60.0))
    )
    start = call(mw, {"type": "http", "path": "/", "headers": [(b"x-api-key", a_key.encode())]})
    policies = [v for k, v in start[0]["headers"] if k == b"ratelimit-policy"]
    assert policies == [b'"key-50-per-60s";q=50;w=60']
    # Both limiters carry the override: 50 more requests pass through each.
    assert first.check(by_api_key({"headers": [(b"x-api-key", a_key.encode())]}, "")).limit == 50
    assert second.check(by_api_key({"headers": [(b"x-api-key", a_key.encode())]}, "")).limit == 50


def test_a_busy_key_store_refuses_with_exact_body_and_headers(a_key: str) -> None:
    mw = RateLimitMiddleware(
        ok_app, [(keel.RateLimiter(5, 60), by_api_key)], api_keys=Keys(keel.StoreBusy("locked"))
    )
    start, body = call(
        mw, {"type": "http", "path": "/", "headers": [(b"x-api-key", a_key.encode())]}
    )
    assert start["status"] == 503
    assert json.loads(body["body"]) == {"detail": "the key store is busy", "retry_after": 1}
    assert start["headers"][-1] == (b"retry-after", b"1")


def test_a_busy_key_store_closes_a_websocket_with_1013(a_key: str) -> None:
    mw = RateLimitMiddleware(
        ok_app, [(keel.RateLimiter(5, 60), by_api_key)], api_keys=Keys(keel.StoreBusy("locked"))
    )
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "client": ("192.0.2.1", 1),
        "headers": [(b"x-api-key", a_key.encode())],
    }
    asyncio.run(mw(scope, receive, send))
    assert incoming == []  # the connect message was consumed before the close
    reason = "the key store is busy; retry after 1 s"
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": reason}]


def test_a_refused_websocket_connect_says_when_to_retry() -> None:
    limiter = keel.RateLimiter(1, 60, name="ws")
    mw = RateLimitMiddleware(ok_app, [(limiter, by_ip)])
    limiter.check("ip:192.0.2.1")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "client": ("192.0.2.1", 1), "headers": []}
    asyncio.run(mw(scope, receive, send))
    assert sent == [
        {"type": "websocket.close", "code": 4429, "reason": "rate limit exceeded; retry after 60 s"}
    ]
