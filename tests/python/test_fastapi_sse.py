"""keel.fastapi.EventSourceResponse: items on the wire, headers, Last-Event-ID resume, heartbeats
and client disconnect (driven through TestClient and directly through ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

import keel
from keel.fastapi import EventSourceResponse, last_event_id


def events_of(body: str) -> list[keel.SseEvent]:
    return keel.SseParser().feed(body)


def test_every_item_kind_goes_on_the_wire() -> None:
    async def gen() -> AsyncIterator[Any]:
        yield "plain"
        yield {"data": "d", "event": "e", "id": 1, "retry": 500}
        yield {"data": {"json": [1, 2]}}
        yield {"comment": "just a comment"}
        yield keel.SseEvent("native", event="n")
        yield SimpleNamespace(data="obj", event=None, id="x", retry=None, comment=None)
        yield b"data: raw\n\n"

    app = FastAPI()

    @app.get("/sse")
    async def sse() -> EventSourceResponse:
        return EventSourceResponse(gen())

    r = TestClient(app).get("/sse")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-accel-buffering"] == "no"
    assert r.text.startswith("data: plain\n\nevent: e\nid: 1\nretry: 500\ndata: d\n\n")
    assert ": just a comment\n\n" in r.text
    got = [(e.event, e.data, e.id, e.retry_ms) for e in events_of(r.text)]
    assert got == [
        (None, "plain", None, None),
        ("e", "d", "1", 500),
        (None, '{"json":[1,2]}', "1", None),
        ("n", "native", "1", None),
        (None, "obj", "x", None),
        (None, "raw", "x", None),
    ]


def test_a_sync_generator_works_too() -> None:
    def gen() -> Iterator[str]:
        yield "a"
        yield "b\nc"

    app = FastAPI()
    app.get("/sse")(lambda: EventSourceResponse(gen()))
    r = TestClient(app).get("/sse")
    assert [e.data for e in events_of(r.text)] == ["a", "b\nc"]


def test_last_event_id_reaches_the_generator_to_resume() -> None:
    seen: list[str | None] = []

    def replay(last: str | None) -> AsyncIterator[dict[str, Any]]:
        seen.append(last)
        start = int(last) + 1 if last is not None else 0

        async def gen() -> AsyncIterator[dict[str, Any]]:
            for i in range(start, 5):
                yield {"id": i, "data": f"token {i}"}

        return gen()

    app = FastAPI()

    @app.get("/sse")
    async def sse(request: Request) -> EventSourceResponse:
        assert last_event_id(request) == request.headers.get("last-event-id")
        return EventSourceResponse(replay)

    client = TestClient(app)
    first = events_of(client.get("/sse").text)
    assert [e.id for e in first] == ["0", "1", "2", "3", "4"]
    resumed = events_of(client.get("/sse", headers={"Last-Event-ID": "2"}).text)
    assert [e.data for e in resumed] == ["token 3", "token 4"]
    assert seen == [None, "2"]


class Client:
    """A scripted ASGI client: records what the response sends, disconnects on demand."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.disconnect = anyio.Event()
        self.on_body: list[tuple[bytes, anyio.Event]] = []

    async def receive(self) -> dict[str, Any]:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.bodies.append(message["body"])
            for needle, event in self.on_body:
                if needle in message["body"]:
                    event.set()

    def wait_for(self, needle: bytes) -> anyio.Event:
        event = anyio.Event()
        self.on_body.append((needle, event))
        return event


SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}


def test_client_disconnect_stops_a_waiting_generator() -> None:
    anyio.run(_client_disconnect_stops_a_waiting_generator)


async def _client_disconnect_stops_a_waiting_generator() -> None:
    stopped = anyio.Event()
    never = anyio.Event()

    async def gen() -> AsyncIterator[str]:
        try:
            yield "first"
            await never.wait()  # an LLM that has not answered yet
            yield "unreachable"
        finally:
            stopped.set()

    client = Client()
    first_sent = client.wait_for(b"first")
    response = EventSourceResponse(gen(), ping=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(response, SCOPE, client.receive, client.send)
        await first_sent.wait()
        assert not stopped.is_set()
        client.disconnect.set()
        with anyio.fail_after(5):
            await stopped.wait()
    assert client.bodies == [b"data: first\n\n"]


def test_client_disconnect_stops_a_busy_generator() -> None:
    anyio.run(_client_disconnect_stops_a_busy_generator)


async def _client_disconnect_stops_a_busy_generator() -> None:
    produced = 0
    stopped = anyio.Event()

    async def gen() -> AsyncIterator[str]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield str(produced)
        finally:
            stopped.set()

    client = Client()
    third = client.wait_for(b"data: 3\n")
    response = EventSourceResponse(gen(), ping=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(response, SCOPE, client.receive, client.send)
        await third.wait()
        client.disconnect.set()
    assert stopped.is_set()
    count = len(client.bodies)
    assert count >= 3 and client.bodies[-1] != b""  # never finished normally


def test_heartbeats_flow_while_the_generator_waits() -> None:
    anyio.run(_heartbeats_flow_while_the_generator_waits)


async def _heartbeats_flow_while_the_generator_waits() -> None:
    client = Client()
    pinged = client.wait_for(b": ping\n\n")

    async def gen() -> AsyncIterator[str]:
        yield "a"
        await pinged.wait()  # released by the heartbeat itself
        yield "b"

    response = EventSourceResponse(gen(), ping=0.001)
    with anyio.fail_after(10):
        await response(SCOPE, client.receive, client.send)
    wire = b"".join(client.bodies).decode()
    assert wire.index("data: a") < wire.index(": ping") < wire.index("data: b")
    assert client.bodies[-1] == b""  # the stream ended normally
    assert [e.data for e in events_of(wire)] == ["a", "b"]


def test_a_client_that_stops_reading_is_dropped_after_send_timeout() -> None:
    anyio.run(_client_that_stops_reading_is_dropped_after_send_timeout)


async def _client_that_stops_reading_is_dropped_after_send_timeout() -> None:
    stopped = anyio.Event()
    sent: list[bytes] = []
    never = anyio.Event()

    async def gen() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
        finally:
            stopped.set()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            if len(sent) == 2:
                await never.wait()  # the socket buffer is full and stays full

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    response = EventSourceResponse(gen(), ping=None, send_timeout=0.05)
    with anyio.fail_after(10):
        await response(SCOPE, receive, send)
    assert stopped.is_set()
    assert len(sent) == 2


def test_bad_items_and_settings_raise_typed_errors() -> None:
    from keel._sse import encode_item

    with pytest.raises(keel.SseFieldError):
        encode_item({"data": "x", "event": "a\nb"})
    with pytest.raises(ValueError, match="ping"):
        EventSourceResponse(iter(()), ping=-1)
    with pytest.raises(ValueError, match="send_timeout"):
        EventSourceResponse(iter(()), send_timeout=0)
    assert encode_item({"comment": "c", "data": "d"}) == b": c\n\ndata: d\n\n"
