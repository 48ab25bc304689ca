"""FastAPI / Starlette glue: API-key authentication, a pure ASGI rate-limit middleware,
client-IP resolution, and Server-Sent Events responses (``EventSourceResponse``, with heartbeats,
disconnect handling and ``Last-Event-ID`` resume; documented in ``keel._sse`` and docs/stream.md).

``RateLimitMiddleware`` wraps any ASGI app (``app.add_middleware(RateLimitMiddleware, ...)``). For
every HTTP request and every WebSocket connect it checks all its rules at once (all-or-nothing,
see ``keel.check_all``), appends the ``RateLimit`` / ``RateLimit-Policy`` / ``X-RateLimit-*``
headers to the response (or to the WebSocket accept), and answers ``429 Too Many Requests`` with
``Retry-After`` when a limit is exceeded, without touching route signatures. Lifespan and other
scope types pass through unlimited. The rate-limit keys of API keys are hashed, so no secret is
kept in the limiter.

Client IP behind proxies (``client_ip``)
    The TCP peer is the client unless it is in ``trusted_proxies``. Then the header the proxy
    writes is read: ``forwarded_header="x-forwarded-for"`` (default) or ``"forwarded"`` (RFC 7239
    ``for=``); the other header is ignored, so a client cannot pick the one it forged. All lines
    of the header are joined in order (RFC 9110 §5.3: a proxy may append its own line), then the
    chain is walked from the right: every address was appended by the hop to its right, so it is
    believed while that hop is trusted. The client is the first untrusted address; when every
    address is trusted, the leftmost one (the originator of an all-trusted chain); when the walk
    meets a malformed, ``unknown`` or obfuscated node, the last trusted address before it (never a
    value the client could have written). Nodes may be ``ip``, ``ip:port``, ``[ipv6]``,
    ``[ipv6]:port`` or quoted; IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are treated, matched
    and returned as IPv4.

Rate-limit keys
    ``by_ip`` groups IPv6 clients by their /64 (one customer's allocation; ``by_ip_prefix(n)``
    picks another prefix), IPv4 clients by their address. ``by_api_key`` hashes the presented key
    (BLAKE2b-128); a presented value that fails the offline format and checksum check
    (``ApiKeys.is_well_formed``) is limited by client IP instead (key ``ip:<group>``), so garbage
    keys cannot create buckets at will.

Off-loop verification
    ``ApiKeys.verify`` can write to SQLite (an uncached verification, the audit entry of a refused
    key) and wait for another writer's lock. ``APIKeyAuth`` and the middleware's per-key plans
    therefore run it in a worker thread (``anyio.to_thread``), after the offline format check
    (which needs no thread: a malformed key never reaches the database). ``keel.StoreBusy`` becomes
    ``503 Service Unavailable`` with ``Retry-After``.

WebSockets
    A WebSocket connect is rate-limited like a request (``websocket_messages=True`` also charges
    every received message). ``APIKeyAuth`` works as a dependency of WebSocket routes. Refusals
    close the connection with these codes (the 4xxx ones mirror the HTTP status):

    ====  =============================================================
    4401  missing or invalid API key (HTTP 401)
    4403  the key lacks a required scope (HTTP 403)
    4429  rate limit exceeded (HTTP 429); the reason says when to retry
    1013  "try again later": the key store was busy (HTTP 503)
    ====  =============================================================

    A *connect* refused by the middleware is answered with a real HTTP response (429, or 503 when
    the key store is busy, with ``Retry-After``) when the server offers the ASGI WebSocket
    denial-response extension; otherwise with close code 4429 (1013), which servers turn into an
    HTTP 403 before the handshake completes. ``APIKeyAuth`` always closes with the codes above.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Union

import anyio.to_thread
from fastapi import HTTPException, WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ._exceptions import AuthError, StoreBusy
from ._native import (
    ApiKeys,
    Identity,
    RateLimiter,
    check_all,
    metrics_content_type,
    metrics_text,
)
from ._sse import EventSourceResponse, last_event_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: A key function gets the ASGI scope and the resolved client IP and returns the rate-limit key,
#: or None to exempt the request from that rule.
KeyFunc = Callable[[Scope, str], Union[str, None]]

#: WebSocket close codes (see the module documentation).
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403
WS_RATE_LIMITED = 4429
WS_TRY_AGAIN_LATER = 1013

#: The headers a trusted proxy may write the client chain into.
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")

__all__ = [
    "APIKeyAuth",
    "EventSourceResponse",
    "FORWARDED_HEADERS",
    "RateLimitMiddleware",
    "WS_FORBIDDEN",
    "WS_RATE_LIMITED",
    "WS_TRY_AGAIN_LATER",
    "WS_UNAUTHORIZED",
    "by_api_key",
    "by_ip",
    "by_ip_prefix",
    "by_route",
    "client_ip",
    "last_event_id",
    "metrics_route",
    "parse_networks",
]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_networks(networks: Iterable[str]) -> list[IPNetwork]:
    """Parses CIDR strings such as ``"10.0.0.0/8"`` or ``"127.0.0.1"``; raises ValueError.

    IPv4-mapped IPv6 ranges (``::ffff:10.0.0.0/104``) become the IPv4 range they map."""
    out: list[IPNetwork] = []
    for n in networks:
        net = ipaddress.ip_network(n, strict=False)
        if (
            isinstance(net, ipaddress.IPv6Network)
            and net.prefixlen >= 96
            and net.subnet_of(_MAPPED)
        ):
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        out.append(net)
    return out


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _header_joined(scope: Scope, name: bytes) -> str:
    """Every line of a header, joined in order with commas (RFC 9110 §5.3)."""
    return ",".join(
        bytes(value).decode("latin-1") for key, value in scope.get("headers") or () if key == name
    )


def _split(text: str, sep: str) -> list[str]:
    """Splits at ``sep`` outside double-quoted strings (with backslash escapes)."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        out: list[str] = []
        escaped = False
        for ch in text[1:-1]:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        text = "".join(out).strip()
    return text


def _is_port(text: str) -> bool:
    # RFC 7239 node-port: a number or an obfuscated "_token".
    return bool(text) and (
        (text.isdigit() and len(text) <= 5)
        or (text[0] == "_" and all(c.isalnum() or c in "._-" for c in text))
    )


def _parse_node(text: str) -> IPAddress | None:
    """An address from ``ip``, ``ip:port``, ``[ipv6]``, ``[ipv6]:port`` (quoted or not); None
    for anything else (``unknown``, obfuscated identifiers, garbage)."""
    node = _unquote(text)
    want: type | None = None
    if node.startswith("["):
        end = node.find("]")
        rest = node[end + 1 :] if end > 0 else "?"
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        node, want = node[1:end], ipaddress.IPv6Address
    elif node.count(":") == 1:
        node, port = node.split(":")
        if not _is_port(port):
            return None
        want = ipaddress.IPv4Address
    try:
        addr = ipaddress.ip_address(node)
    except ValueError:
        return None
    if want is not None and not isinstance(addr, want):
        return None
    return _unmap(addr)


def _forwarded_for(value: str) -> list[IPAddress | None]:
    """The ``for=`` node of each RFC 7239 element; None where it is missing or unusable."""
    hops: list[IPAddress | None] = []
    for element in _split(value, ","):
        if not element.strip():
            continue
        nodes = []
        for pair in _split(element, ";"):
            name, eq, val = pair.partition("=")
            if eq and name.strip().lower() == "for":
                nodes.append(val)
        hops.append(_parse_node(nodes[0]) if len(nodes) == 1 else None)
    return hops


def _forwarded_chain(scope: Scope, header: str) -> list[IPAddress | None]:
    value = _header_joined(scope, header.encode())
    if header == "forwarded":
        return _forwarded_for(value)
    return [_parse_node(hop) for hop in value.split(",") if hop.strip()]


def _check_forwarded_header(header: str) -> str:
    name = header.lower()
    if name not in FORWARDED_HEADERS:
        raise ValueError(f"forwarded_header must be one of {FORWARDED_HEADERS}, not {header!r}")
    return name


def _trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr in net for net in trusted)


def client_ip(
    scope: Scope,
    trusted_proxies: Sequence[IPNetwork] = (),
    *,
    forwarded_header: str = "x-forwarded-for",
) -> str:
    """The client's IP address (see the module documentation for the proxy rule).

    The TCP peer is the client unless it is a trusted proxy; then ``forwarded_header``
    (``"x-forwarded-for"`` or ``"forwarded"``, whichever the proxy writes) is read from the right,
    all its lines joined, skipping trusted proxies; the first untrusted address is the client. If
    every address is trusted, the leftmost one is; a malformed or ``unknown`` node stops the walk
    at the last trusted address. Addresses a client writes into the header itself are never
    believed, because they sit to the left of the ones its proxies appended.
    """
    header = _check_forwarded_header(forwarded_header)
    raw = (scope.get("client") or ("unknown", 0))[0]
    try:
        peer = _unmap(ipaddress.ip_address(raw))
    except ValueError:
        return str(raw)  # e.g. a Unix socket or a test client: nothing to resolve
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return str(peer)
    current = peer
    for hop in reversed(_forwarded_chain(scope, header)):
        if hop is None:
            break  # do not let an unusable hop choose the key
        if not _trusted(hop, trusted_proxies):
            return str(hop)
        current = hop
    return str(current)


def _ip_group(ip: str, ipv6_prefix: int) -> str:
    try:
        addr = _unmap(ipaddress.ip_address(ip))
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and ipv6_prefix < 128:
        shift = 128 - ipv6_prefix
        return str(ipaddress.IPv6Network(((int(addr) >> shift) << shift, ipv6_prefix)))
    return str(addr)


def by_ip_prefix(ipv6_prefix: int = 64) -> KeyFunc:
    """A ``by_ip`` that groups IPv6 clients by their ``/ipv6_prefix`` network (0 to 128); IPv4
    clients (and IPv4-mapped IPv6) are limited per address."""
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
        raise TypeError(f"ipv6_prefix must be an int, not {type(ipv6_prefix).__name__}")
    if not 0 <= ipv6_prefix <= 128:
        raise ValueError(f"ipv6_prefix must be between 0 and 128, not {ipv6_prefix}")

    def by_ip_group(scope: Scope, ip: str) -> str:
        return "ip:" + _ip_group(ip, ipv6_prefix)

    by_ip_group.__doc__ = f"Rate-limit per client IP (IPv6 per /{ipv6_prefix})."
    return by_ip_group


def by_ip(scope: Scope, ip: str) -> str:
    """Rate-limit per client IP: IPv4 per address, IPv6 per /64 (see ``by_ip_prefix``)."""
    return "ip:" + _ip_group(ip, 64)


def by_route(scope: Scope, ip: str) -> str:
    """Rate-limit per HTTP method and path (shared by all clients); WebSocket connects count as
    method ``WS``."""
    method = scope.get("method") or ("WS" if scope.get("type") == "websocket" else "")
    return f"route:{method} {scope.get('path', '')}"


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return _header(scope, b"x-api-key") or None


def _key_hash(key: str) -> str:
    return "key:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def by_api_key(scope: Scope, ip: str) -> str | None:
    """Rate-limit per presented API key (Bearer token or ``X-API-Key``), hashed; requests
    without a key are exempt from this rule (combine it with ``by_ip``). A value that is not a
    well-formed key is limited per client IP (``ip:<group>``, as ``by_ip``) instead."""
    key = _presented_key(scope)
    if key is None:
        return None
    if not ApiKeys.is_well_formed(key):
        return "ip:" + _ip_group(ip, 64)
    return _key_hash(key)


async def _verify(keys: ApiKeys, presented: str) -> Identity:
    """``keys.verify`` in a worker thread: it may wait on SQLite's write lock."""
    return await anyio.to_thread.run_sync(keys.verify, presented)


def _retry_after_seconds(value: float | None) -> int:
    return max(1, math.ceil(value or 1))


class RateLimitMiddleware:
    """Pure ASGI rate limiting.

    ``rules`` is a list of ``(RateLimiter, key_func)``; a request must pass all of them. ``cost``
    may be a function of the scope (e.g. weight uploads by size). Paths in ``exempt_paths`` (e.g.
    ``/health``, ``/metrics``) are not limited. ``trusted_proxies`` and ``forwarded_header`` are
    passed to ``client_ip``. WebSocket connects are limited like requests; with
    ``websocket_messages=True`` every received message is also charged (cost 1) and the
    connection is closed with code 4429 when one is denied.

    With ``api_keys``, a valid key that carries its own rate limit (``ApiKeys.create(...,
    rate_limit=(limit, window))``) gets that limit instead of the policy's default in every
    ``by_api_key`` rule (applied as a per-key override of that rule's limiter, policy name
    ``key-<limit>-per-<window>s``; removed when the key no longer has one or is refused). The
    key is verified in a worker thread; when the key store is busy the request gets ``503`` with
    ``Retry-After: busy_retry_after``. Invalid keys are not judged here: the authentication
    dependency refuses them.
    """

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[tuple[RateLimiter, KeyFunc]],
        *,
        trusted_proxies: Iterable[str] = (),
        exempt_paths: Iterable[str] = (),
        cost: Callable[[Scope], int] | None = None,
        api_keys: ApiKeys | None = None,
        forwarded_header: str = "x-forwarded-for",
        websocket_messages: bool = False,
        busy_retry_after: int = 1,
    ) -> None:
        if not rules:
            raise ValueError("RateLimitMiddleware needs at least one (limiter, key_func) rule")
        self.app = app
        self.rules = list(rules)
        self.trusted = parse_networks(trusted_proxies)
        self.forwarded_header = _check_forwarded_header(forwarded_header)
        self.exempt = frozenset(exempt_paths)
        self.cost = cost
        self.api_keys = api_keys
        self.websocket_messages = websocket_messages
        self.busy_retry_after = busy_retry_after
        # (limiter id, limiter key) -> the override applied, so each is set once.
        self._plans: dict[tuple[int, str], tuple[int, float]] = {}

    async def _key_plan(self, scope: Scope) -> tuple[int, float] | None:
        """The presented key's own rate limit, or None (no key, invalid key, no plan)."""
        presented = _presented_key(scope)
        if self.api_keys is None or presented is None or not ApiKeys.is_well_formed(presented):
            return None
        try:
            return (await _verify(self.api_keys, presented)).rate_limit
        except AuthError:
            return None

    def _apply_key_plan(
        self, limiter: RateLimiter, key: str, plan: tuple[int, float] | None
    ) -> None:
        slot = (id(limiter), key)
        if plan is None:
            if self._plans.pop(slot, None) is not None:
                limiter.remove_override(key)
        elif self._plans.get(slot) != plan:
            limit, window = plan
            limiter.set_override(key, limit, window, name=f"key-{limit}-per-{window:g}s")
            self._plans[slot] = plan

    async def _checks(self, scope: Scope) -> list[tuple[RateLimiter, str]]:
        ip = client_ip(scope, self.trusted, forwarded_header=self.forwarded_header)
        checks = []
        plan: tuple[int, float] | None = None
        looked_up = False
        for limiter, key_func in self.rules:
            key = key_func(scope, ip)
            if key is None:
                continue
            if key_func is by_api_key and self.api_keys is not None and key.startswith("key:"):
                if not looked_up:
                    plan, looked_up = await self._key_plan(scope), True
                self._apply_key_plan(limiter, key, plan)
            checks.append((limiter, key))
        return checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        try:
            checks = await self._checks(scope)
        except StoreBusy:
            await self._refuse(scope, receive, send, busy=True)
            return
        if not checks:
            await self.app(scope, receive, send)
            return
        decision = check_all(checks, self.cost(scope) if self.cost else 1)
        headers = decision.raw_headers()
        if not decision.allowed:
            await self._refuse(scope, receive, send, headers=headers, retry=decision.retry_after)
            return

        start = "http.response.start" if kind == "http" else "websocket.accept"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == start:
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        if kind == "websocket" and self.websocket_messages:
            receive = self._limited_receive(checks, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def _limited_receive(
        self, checks: list[tuple[RateLimiter, str]], receive: Receive, send: Send
    ) -> Receive:
        async def limited() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                decision = check_all(checks, 1)
                if not decision.allowed:
                    wait = _retry_after_seconds(decision.retry_after)
                    reason = f"rate limit exceeded; retry after {wait} s"
                    await send(
                        {"type": "websocket.close", "code": WS_RATE_LIMITED, "reason": reason}
                    )
                    return {"type": "websocket.disconnect", "code": WS_RATE_LIMITED}
            return message

        return limited

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        retry: float | None = None,
        busy: bool = False,
    ) -> None:
        if busy:
            status, detail, retry_after = 503, "the key store is busy", self.busy_retry_after
            code = WS_TRY_AGAIN_LATER
        else:
            status, detail, retry_after = 429, "rate limit exceeded", _retry_after_seconds(retry)
            code = WS_RATE_LIMITED
        body_fields: dict[str, Any] = {
            "detail": detail,
            "retry_after": retry if retry else retry_after,
        }
        body = json.dumps(body_fields).encode()
        all_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]
        if busy:
            all_headers.append((b"retry-after", str(retry_after).encode()))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": all_headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # the websocket.connect message
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": all_headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            reason = f"{detail}; retry after {retry_after} s"
            await send({"type": "websocket.close", "code": code, "reason": reason})


class APIKeyAuth:
    """A FastAPI dependency that authenticates the request's (or WebSocket's) API key.

    The key is read from ``Authorization: Bearer <key>`` (any case of ``Bearer``) or
    ``X-API-Key``. Missing or refused keys get ``401`` with ``WWW-Authenticate: Bearer``; a valid
    key without one of ``scopes`` gets ``403``; a busy key store ``503`` with ``Retry-After:
    busy_retry_after``. On WebSocket routes the connection is closed with 4401, 4403 or 1013
    instead. On success the dependency returns the ``keel.Identity`` and also stores it on
    ``request.state.api_key`` (``websocket.state.api_key``)::

        auth = APIKeyAuth(keys, scopes=["chat:write"])

        @app.post("/chat")
        async def chat(identity: keel.Identity = Depends(auth)): ...

    The key is checked offline first; only a well-formed key is verified, in a worker thread, so
    a database write lock held elsewhere never stalls the event loop. The response never says why
    a key was refused beyond the standard ``error`` code, and never echoes the key.
    """

    def __init__(
        self,
        keys: ApiKeys,
        *,
        scopes: Iterable[str] = (),
        realm: str = "keel",
        busy_retry_after: int = 1,
    ) -> None:
        self.keys = keys
        self.scopes = tuple(scopes)
        self.realm = realm
        self.busy_retry_after = busy_retry_after

    def _challenge(self, error: str | None = None, scope: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{self.realm}"'
        if error:
            value += f', error="{error}"'
        if scope:
            value += f', scope="{scope}"'
        return {"WWW-Authenticate": value}

    def _refuse(
        self, websocket: bool, status: int, detail: str, headers: dict[str, str]
    ) -> Exception:
        if websocket:
            code = {401: WS_UNAUTHORIZED, 403: WS_FORBIDDEN}.get(status, WS_TRY_AGAIN_LATER)
            return WebSocketException(code, detail)
        return HTTPException(status, detail, headers=headers)

    async def __call__(self, conn: HTTPConnection) -> Identity:
        websocket = conn.scope["type"] == "websocket"
        presented = _presented_key(conn.scope)
        if presented is None:
            raise self._refuse(websocket, 401, "missing API key", self._challenge())
        invalid = self._refuse(websocket, 401, "invalid API key", self._challenge("invalid_token"))
        if not ApiKeys.is_well_formed(presented):
            raise invalid
        try:
            identity = await _verify(self.keys, presented)
        except AuthError:
            raise invalid from None
        except StoreBusy:
            retry = {"Retry-After": str(self.busy_retry_after)}
            raise self._refuse(websocket, 503, "the key store is busy", retry) from None
        for scope in self.scopes:
            if not identity.has_scope(scope):
                raise self._refuse(
                    websocket,
                    403,
                    f"the API key lacks the scope {scope!r}",
                    self._challenge("insufficient_scope", scope),
                )
        conn.state.api_key = identity
        return identity


async def metrics_route(request: Request) -> Response:
    """A ready ``/metrics`` endpoint for an app without one: keel's metrics and the process
    metrics, in OpenMetrics when the scraper asks for it (``Accept:
    application/openmetrics-text``), else in the Prometheus text format::

        app.add_route("/metrics", keel.fastapi.metrics_route, include_in_schema=False)

    An app that already serves ``prometheus_client`` metrics calls ``keel.prometheus.register()``
    instead."""
    openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
    # Rendering reads /proc for the process metrics and takes the registry's locks: in a worker
    # thread, never on the event loop.
    text = await anyio.to_thread.run_sync(metrics_text, openmetrics)
    return Response(text, media_type=metrics_content_type(openmetrics))
