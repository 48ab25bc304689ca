"""``keel.fastapi.EventSourceResponse``: a Server-Sent Events response for Starlette / FastAPI.

Shaped after sse-starlette, so code written for it keeps working:

- ``content`` is an async or sync iterable (a generator) whose items become events: a ``str``
  is the data of one event; a ``dict`` with the keys ``data``, ``event``, ``id``, ``retry``
  (milliseconds) and ``comment``; a ``keel.SseEvent``; or any object with those attributes
  (sse-starlette's ``ServerSentEvent``). Data that is not a string is sent as JSON. ``bytes``
  are sent as they are (already encoded). The wire format comes from the core
  (``keel.sse_event``, ``keel.sse_comment``): multi-line data, ids and event names that
  cannot be carried raise ``keel.SseFieldError``.
- **Heartbeats**: a ``: ping`` comment every ``ping`` seconds (``None`` or ``0``: none), sent
  only while the generator is between events, so proxies and load balancers keep an idle
  stream open.
- **Client disconnect stops the generator**: a task watches ``receive()`` for
  ``http.disconnect`` and cancels the generator where it waits (its ``finally`` blocks and
  ``async with`` exits run), then the response ends. A failed ``send`` does the same, and so
  does a ``send`` that takes longer than ``send_timeout`` seconds (a client that stopped
  reading; ``None``, the default, waits as long as the server does).
- **Resume with ``Last-Event-ID``**: when ``content`` is a callable instead of an iterable, it
  is called with the request's ``Last-Event-ID`` header (``None`` when absent) and must return
  the iterable: the application replays what the client missed. ``last_event_id(request)``
  reads the header for apps that build their generator in the route.
- The response carries ``Cache-Control: no-store``, ``Connection: keep-alive`` and
  ``X-Accel-Buffering: no`` (nginx would otherwise buffer the stream).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Any, Union

import anyio
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._native import SseEvent, sse_comment, sse_event

__all__ = ["EventSourceResponse", "last_event_id"]

Item = Union[str, bytes, Mapping[str, Any], SseEvent, Any]
Content = Union[AsyncIterable[Item], Iterable[Item]]
ContentFactory = Callable[[Union[str, None]], Content]

#: The default heartbeat period, in seconds (as sse-starlette).
DEFAULT_PING = 15.0


def last_event_id(request: HTTPConnection) -> str | None:
    """The ``Last-Event-ID`` header of a reconnecting EventSource (``None`` when absent)."""
    return request.headers.get("last-event-id")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def encode_item(item: Item) -> bytes:
    """One yielded item on the wire (see the module docs for what may be yielded)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return sse_event(item).encode()
    if isinstance(item, SseEvent):
        return item.encode().encode()
    if isinstance(item, Mapping):
        get = item.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(item, key, default)

    comment = get("comment")
    data = get("data")
    out = sse_comment(str(comment)) if comment is not None else ""
    if data is not None or comment is None:
        retry = get("retry")
        out += sse_event(
            _text("" if data is None else data),
            event=_opt_text(get("event")),
            id=_opt_text(get("id")),
            retry_ms=None if retry is None else int(retry),
        )
    return out.encode()


class EventSourceResponse(Response):
    """Streams ``content`` as Server-Sent Events; see the module docs."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: Content | ContentFactory,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        ping: float | None = DEFAULT_PING,
        ping_message: str = "ping",
        send_timeout: float | None = None,
        background: BackgroundTask | None = None,
        media_type: str | None = None,
    ) -> None:
        if ping is not None and (not math.isfinite(ping) or ping < 0):
            raise ValueError(f"ping must be a finite number of seconds >= 0, got ping={ping!r}")
        if send_timeout is not None and (not math.isfinite(send_timeout) or send_timeout <= 0):
            raise ValueError(
                f"send_timeout must be a finite number of seconds > 0, got {send_timeout!r}"
            )
        self.send_timeout = send_timeout
        self.content = content
        self.status_code = status_code
        self.background = background
        self.ping = ping or None
        self.ping_bytes = sse_comment(ping_message).encode()
        if media_type is not None:
            self.media_type = media_type
        merged = {
            "cache-control": "no-store",
            "connection": "keep-alive",
            "x-accel-buffering": "no",
        }
        merged.update({k.lower(): v for k, v in (headers or {}).items()})
        self.init_headers(merged)

    def _iterable(self, scope: Scope) -> AsyncIterable[Item]:
        content = self.content
        if callable(content) and not isinstance(content, (AsyncIterable, Iterable)):
            content = content(last_event_id(HTTPConnection(scope)))
        if isinstance(content, AsyncIterable):
            return content
        return iterate_in_threadpool(iter(content))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterable = self._iterable(scope)
        lock = anyio.Lock()
        # Set once the client has gone: nothing more may be sent.
        gone = False

        async def send_body(body: bytes, more: bool = True) -> None:
            nonlocal gone
            async with lock:
                if gone:
                    return
                message = {"type": "http.response.body", "body": body, "more_body": more}
                try:
                    with anyio.fail_after(self.send_timeout):
                        await send(message)
                except (OSError, TimeoutError):
                    gone = True
                    tg.cancel_scope.cancel()

        async def stream() -> None:
            async for item in iterable:
                await send_body(encode_item(item))
            await send_body(b"", more=False)
            tg.cancel_scope.cancel()

        async def heartbeat(period: float) -> None:
            while True:
                await anyio.sleep(period)
                await send_body(self.ping_bytes)

        async def watch_disconnect() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    tg.cancel_scope.cancel()
                    return

        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_disconnect)
                if self.ping:
                    tg.start_soon(heartbeat, self.ping)
                tg.start_soon(stream)
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(iterable, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        if self.background is not None:
            await self.background()
