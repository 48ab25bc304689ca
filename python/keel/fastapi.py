"""FastAPI / Starlette glue: API-key authentication, a pure ASGI rate-limit middleware, and
client-IP resolution.

``RateLimitMiddleware`` wraps any ASGI app (``app.add_middleware(RateLimitMiddleware, ...)``). For
every HTTP request it checks all its rules at once (all-or-nothing, see ``keel.check_all``), adds
the ``RateLimit`` / ``RateLimit-Policy`` / ``X-RateLimit-*`` headers to the response, and answers
``429 Too Many Requests`` with ``Retry-After`` when a limit is exceeded, without touching route
signatures. The rate-limit keys of API keys are hashed, so no secret is kept in the limiter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Union

from fastapi import HTTPException
from starlette.requests import Request

from ._exceptions import AuthError
from ._native import ApiKeys, Identity, RateLimiter, check_all

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: A key function gets the ASGI scope and the resolved client IP and returns the rate-limit key,
#: or None to exempt the request from that rule.
KeyFunc = Callable[[Scope, str], Union[str, None]]

__all__ = [
    "APIKeyAuth",
    "RateLimitMiddleware",
    "by_api_key",
    "by_ip",
    "by_route",
    "client_ip",
    "parse_networks",
]


def parse_networks(networks: Iterable[str]) -> list[IPNetwork]:
    """Parses CIDR strings such as ``"10.0.0.0/8"`` or ``"127.0.0.1"``; raises ValueError."""
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _trusted(ip: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def client_ip(scope: Scope, trusted_proxies: Sequence[IPNetwork] = ()) -> str:
    """The client's IP address.

    The TCP peer is the client unless it is a trusted proxy; then ``X-Forwarded-For`` is read from
    the right, skipping trusted proxies, and the first untrusted address is the client. Addresses
    a client writes into the header itself are never trusted, because they sit to the left of
    the ones its proxies appended.
    """
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    forwarded = _header(scope, b"x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: do not let it choose the key
    return hops[0] if hops else peer


def by_ip(scope: Scope, ip: str) -> str:
    """Rate-limit per client IP."""
    return "ip:" + ip


def by_route(scope: Scope, ip: str) -> str:
    """Rate-limit per HTTP method and path (shared by all clients)."""
    return f"route:{scope.get('method', '')} {scope.get('path', '')}"


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return _header(scope, b"x-api-key")


def by_api_key(scope: Scope, ip: str) -> str | None:
    """Rate-limit per presented API key (Bearer token or ``X-API-Key``), hashed; requests
    without a key are exempt from this rule (combine it with ``by_ip``)."""
    key = _presented_key(scope)
    if key is None:
        return None
    return "key:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class RateLimitMiddleware:
    """Pure ASGI rate limiting.

    ``rules`` is a list of ``(RateLimiter, key_func)``; a request must pass all of them. ``cost``
    may be a function of the scope (e.g. weight uploads by size). Paths in ``exempt_paths`` (e.g.
    ``/health``, ``/metrics``) are not limited.

    With ``api_keys``, a valid key that carries its own rate limit (``ApiKeys.create(...,
    rate_limit=(limit, window))``) gets that limit instead of the policy's default in every
    ``by_api_key`` rule (applied as a per-key override of that rule's limiter, policy name
    ``key-<limit>-per-<window>s``). Invalid keys are not judged here: the authentication
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
    ) -> None:
        if not rules:
            raise ValueError("RateLimitMiddleware needs at least one (limiter, key_func) rule")
        self.app = app
        self.rules = list(rules)
        self.trusted = parse_networks(trusted_proxies)
        self.exempt = frozenset(exempt_paths)
        self.cost = cost
        self.api_keys = api_keys
        # (limiter id, limiter key) -> the override applied, so each is set once.
        self._plans: dict[tuple[int, str], tuple[int, float]] = {}

    def _apply_key_plan(self, scope: Scope, limiter: RateLimiter, key: str) -> None:
        presented = _presented_key(scope)
        if self.api_keys is None or presented is None:
            return
        try:
            plan = self.api_keys.verify(presented).rate_limit
        except AuthError:
            return
        slot = (id(limiter), key)
        if plan is None:
            if self._plans.pop(slot, None) is not None:
                limiter.remove_override(key)
        elif self._plans.get(slot) != plan:
            limit, window = plan
            limiter.set_override(key, limit, window, name=f"key-{limit}-per-{window:g}s")
            self._plans[slot] = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope, self.trusted)
        checks = []
        for limiter, key_func in self.rules:
            key = key_func(scope, ip)
            if key is not None:
                if key_func is by_api_key:
                    self._apply_key_plan(scope, limiter, key)
                checks.append((limiter, key))
        if not checks:
            await self.app(scope, receive, send)
            return
        decision = check_all(checks, self.cost(scope) if self.cost else 1)
        headers = decision.raw_headers()
        if not decision.allowed:
            body = json.dumps(
                {"detail": "rate limit exceeded", "retry_after": decision.retry_after}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class APIKeyAuth:
    """A FastAPI dependency that authenticates the request's API key.

    The key is read from ``Authorization: Bearer <key>`` or ``X-API-Key``. Missing or refused
    keys get ``401`` with ``WWW-Authenticate: Bearer``; a valid key without one of ``scopes``
    gets ``403``. On success the dependency returns the ``keel.Identity`` and also stores it
    on ``request.state.api_key``::

        auth = APIKeyAuth(keys, scopes=["chat:write"])

        @app.post("/chat")
        async def chat(identity: keel.Identity = Depends(auth)): ...

    The response never says why a key was refused beyond the standard ``error`` code, and never
    echoes the key.
    """

    def __init__(self, keys: ApiKeys, *, scopes: Iterable[str] = (), realm: str = "keel") -> None:
        self.keys = keys
        self.scopes = tuple(scopes)
        self.realm = realm

    def _challenge(self, error: str | None = None, scope: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{self.realm}"'
        if error:
            value += f', error="{error}"'
        if scope:
            value += f', scope="{scope}"'
        return {"WWW-Authenticate": value}

    async def __call__(self, request: Request) -> Identity:
        presented = _presented_key(request.scope)
        if presented is None:
            raise HTTPException(401, "missing API key", headers=self._challenge())
        try:
            identity = self.keys.verify(presented)
        except AuthError:
            raise HTTPException(
                401, "invalid API key", headers=self._challenge("invalid_token")
            ) from None
        for scope in self.scopes:
            if not identity.has_scope(scope):
                raise HTTPException(
                    403,
                    f"the API key lacks the scope {scope!r}",
                    headers=self._challenge("insufficient_scope", scope),
                )
        request.state.api_key = identity
        return identity
