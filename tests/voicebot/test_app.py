"""The voice bot in process (FastAPI TestClient): auth and scopes, rate-limit headers, the
/chat event stream, memory, the pluggable responder, admin routes, ingest, probes."""

from __future__ import annotations

import base64
import io
import json
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import settings_for
from fastapi.testclient import TestClient
from voicebot.answer import ExtractiveResponder, OpenAIResponder
from voicebot.app import create_app, search_query
from voicebot.speech import fix_wav_sizes, speakable

import keel


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(home))) as c:
        yield c


def chat(client: TestClient, key: str, question: str, session: str = "s1") -> list[Any]:
    resp = client.post(
        "/chat", json={"question": question, "session": session}, headers=bearer(key)
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = keel.SseParser().feed(resp.content)
    return [(e.event, json.loads(e.data)) for e in events if e.event]


def test_every_api_route_needs_a_key_with_the_right_scope(client: TestClient, admin_key: str):
    routes = [
        ("post", "/chat", {"json": {"question": "hi"}}),
        ("get", "/search?q=fare", {}),
        ("get", "/history", {}),
        ("post", "/ingest", {}),
        ("get", "/admin/keys", {}),
        ("get", "/admin/audit", {}),
        ("get", "/admin/audit/verify", {}),
    ]
    for method, path, kw in routes:
        resp = getattr(client, method)(path, **kw)
        assert resp.status_code == 401, (path, resp.status_code)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "ratelimit-policy" in resp.headers, path
        bad = getattr(client, method)(path, headers=bearer("keel_live_not-a-key"), **kw)
        assert bad.status_code == 401, path
    made = client.post(
        "/admin/keys", json={"name": "reader", "scopes": ["search"]}, headers=bearer(admin_key)
    )
    assert made.status_code == 201
    reader = made.json()["key"]
    assert client.get("/search?q=fare", headers=bearer(reader)).status_code == 200
    for method, path, kw in routes:
        if path.startswith("/search"):
            continue
        resp = getattr(client, method)(path, headers=bearer(reader), **kw)
        assert resp.status_code == 403, (path, resp.status_code)
    # The probes and the page need no key.
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_chat_streams_tokens_then_citations_with_audio_in_order_and_stores_the_turn(
    client: TestClient, admin_key: str
):
    events = chat(client, admin_key, "How much does a day pass cost?")
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done"
    assert kinds.count("citations") == 1
    cite_at = kinds.index("citations")
    tokens = [d["text"] for k, d in events if k == "token"]
    assert len(tokens) > 3 and all(k != "token" for k in kinds[cite_at:])
    answer = "".join(tokens)
    assert "6 dollars" in answer and "[1]" in answer
    cites = events[cite_at][1]["citations"]
    assert cites[0]["doc_id"].startswith("fares") and cites[0]["cited"]
    assert all({"n", "doc_id", "title", "text", "score"} <= set(c) for c in cites)
    audio = [d for k, d in events if k == "audio"]
    assert [a["seq"] for a in audio] == list(range(len(audio))) and len(audio) >= 2
    for a in audio:
        with wave.open(io.BytesIO(base64.b64decode(a["audio"]))) as w:
            assert w.getnframes() > 1000
    timings = events[-1][1]["timings"]
    assert timings["first_token_ms"] <= timings["full_answer_ms"] <= timings["done_ms"]
    assert "first_audio_ms" in timings

    stored = client.get("/history?session=s1", headers=bearer(admin_key)).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == "How much does a day pass cost?"
    assert stored[1]["content"] == answer


def test_a_follow_up_question_is_searched_with_the_previous_one():
    history = [
        {"role": "user", "content": "When do the Night Owl buses run?"},
        {"role": "assistant", "content": "From 12:30 a.m. [1]."},
    ]
    assert (
        search_query("and the ferry?", history) == "When do the Night Owl buses run? and the ferry?"
    )
    assert search_query("Can I bring my bicycle on a tram?", history) == (
        "Can I bring my bicycle on a tram?"
    )


def test_the_extractive_answer_cites_the_passages_it_uses(client: TestClient, admin_key: str):
    events = chat(client, admin_key, "Where is the lost and found office?")
    answer = "".join(d["text"] for k, d in events if k == "token")
    cites = next(d for k, d in events if k == "citations")["citations"]
    cited = {c["doc_id"].split("#")[0] for c in cites if c["cited"]}
    assert any(d.startswith("lost-and-found") for d in cited), cites
    assert "Central Station" in answer
    nothing = ExtractiveResponder().compose("zzz qqq", [])
    assert "could not find" in nothing


class FakeLLM(ThreadingHTTPServer):
    """A tiny OpenAI-compatible streaming endpoint: records each request body and streams the
    answer pieces as chat-completion chunks, each written (and flushed) in two halves so events
    arrive split across reads, then ``[DONE]``."""

    pieces = ["A day pass ", "costs 6 dollars [1]. ", "It is valid ", "until 4 a.m. [1]."]

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), FakeHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeHandler(BaseHTTPRequestHandler):
    server: FakeLLM

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["authorization"] = self.headers.get("Authorization")
        body["path"] = self.path
        self.server.requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in self.server.pieces:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            event = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
            for half in (event[:7], event[7:]):
                self.wfile.write(half)
                self.wfile.flush()
        self.wfile.write(b": keep-alive\n\ndata: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_openai_compatible_endpoint_streams_the_answer_and_gets_the_history(
    home: Path, admin_key: str, fake_llm: FakeLLM
):
    settings = settings_for(
        home, llm_base_url=fake_llm.base_url, llm_model="fake-1", llm_api_key="sk-test"
    )
    with TestClient(create_app(settings)) as client:
        first = chat(client, admin_key, "How much is a day pass?", session="llm")
        tokens = [d["text"] for k, d in first if k == "token"]
        assert tokens == FakeLLM.pieces
        assert next(d for k, d in first if k == "done")["responder"] == "openai"
        assert any(k == "audio" for k, _ in first)
        chat(client, admin_key, "And a monthly one?", session="llm")

    req1, req2 = fake_llm.requests
    assert req1["path"] == "/v1/chat/completions" and req1["stream"] is True
    assert req1["model"] == "fake-1" and req1["authorization"] == "Bearer sk-test"
    assert req1["messages"][0]["role"] == "system"
    assert req1["messages"][-1] == {"role": "user", "content": "How much is a day pass?"}
    assert any("6 dollars" in m["content"] for m in req1["messages"][:-1])  # the passages
    # The second turn carries the first one (from encrypted memory, within the token budget).
    contents = [m["content"] for m in req2["messages"]]
    assert "How much is a day pass?" in contents
    assert "".join(FakeLLM.pieces) in contents
    assert contents[-1] == "And a monthly one?"


def test_a_failing_model_endpoint_ends_the_stream_with_an_error_event(home: Path, admin_key: str):
    settings = settings_for(home, llm_base_url="http://127.0.0.1:9/v1")  # nothing listens
    with TestClient(create_app(settings)) as client:
        events = chat(client, admin_key, "How much is a day pass?")
    assert events[-1][0] == "error"
    assert "ResponderError" in events[-1][1]["detail"]


def test_the_openai_responder_refuses_a_non_chat_event():
    import asyncio

    import httpx
    from voicebot.answer import ResponderError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'data: {"nope": 1}\n\n')

    async def run() -> None:
        responder = OpenAIResponder("http://x/v1", "m", transport=httpx.MockTransport(handler))
        try:
            async for _ in responder.stream("q", [], []):
                pass
        finally:
            await responder.aclose()

    with pytest.raises(ResponderError, match="not a chat chunk"):
        asyncio.run(run())


def test_admin_routes_create_list_rotate_revoke_and_audit(client: TestClient, admin_key: str):
    admin = bearer(admin_key)
    made = client.post(
        "/admin/keys", json={"name": "kiosk", "scopes": ["chat", "search"]}, headers=admin
    )
    assert made.status_code == 201
    key, info = made.json()["key"], made.json()["info"]
    assert key.startswith("keel_live_") and "kiosk" in [
        k["name"] for k in client.get("/admin/keys", headers=admin).json()["keys"]
    ]
    assert client.get("/search?q=bike", headers=bearer(key)).status_code == 200

    rotated = client.post(f"/admin/keys/{info['id']}/rotate", json={"grace": 0}, headers=admin)
    assert rotated.status_code == 200
    new_key = rotated.json()["key"]
    assert client.get("/search?q=bike", headers=bearer(new_key)).status_code == 200

    new_id = rotated.json()["info"]["id"]
    assert client.delete(f"/admin/keys/{new_id}", headers=admin).status_code == 204
    assert client.delete("/admin/keys/999999", headers=admin).status_code == 404
    assert (
        client.post(
            "/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=admin
        ).status_code
        == 422
    )

    entries = client.get("/admin/audit?limit=100", headers=admin).json()["entries"]
    actions = [e["action"] for e in entries]
    assert any("create" in a for a in actions)
    assert any("rotate" in a for a in actions)
    assert any("revoke" in a for a in actions)
    verified = client.get("/admin/audit/verify", headers=admin).json()
    assert verified["ok"] is True and verified["entries"] >= 3
    assert admin_key not in json.dumps(entries) and key not in json.dumps(entries)


def test_revoked_and_rotated_keys_are_refused(home: Path, admin_key: str):
    with TestClient(create_app(settings_for(home))) as client:
        admin = bearer(admin_key)
        made = client.post("/admin/keys", json={"name": "k", "scopes": ["search"]}, headers=admin)
        key, key_id = made.json()["key"], made.json()["info"]["id"]
        client.post(f"/admin/keys/{key_id}/rotate", json={"grace": 0}, headers=admin)
        assert client.get("/search?q=fare", headers=bearer(key)).status_code == 401


def test_rate_limits_answer_429_with_the_headers(client: TestClient, admin_key: str):
    made = client.post(
        "/admin/keys",
        json={"name": "tiny", "scopes": ["search"], "rate_limit": [3, 60]},
        headers=bearer(admin_key),
    )
    key = made.json()["key"]
    statuses = []
    for _ in range(5):
        resp = client.get("/search?q=fare", headers=bearer(key))
        statuses.append(resp.status_code)
        assert "ratelimit" in resp.headers and "x-ratelimit-limit" in resp.headers
    assert statuses == [200, 200, 200, 429, 429]
    assert int(resp.headers["retry-after"]) >= 1
    other_window = client.post(
        "/admin/keys",
        json={"name": "hourly", "scopes": ["search"], "rate_limit": [3, 3600]},
        headers=bearer(admin_key),
    )
    assert other_window.status_code == 422 and "window" in other_window.json()["detail"]


def test_ingest_indexes_uploaded_documents(client: TestClient, admin_key: str):
    admin = bearer(admin_key)
    doc = {
        "name": "gondola.md",
        "text": "# Gondola\n\nThe Riverton gondola to Mount Pell opens in May.",
    }
    resp = client.post("/ingest", json={"documents": [doc]}, headers=admin)
    assert resp.status_code == 200, resp.text
    hits = client.get("/search?q=gondola Mount Pell", headers=admin).json()["hits"]
    assert hits and "gondola" in hits[0]["doc_id"]
    bad = {"name": "../escape.md", "text": "x"}
    assert client.post("/ingest", json={"documents": [bad]}, headers=admin).status_code == 422


def test_readyz_checks_database_keyring_knowledge_base_and_speech(client: TestClient):
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    checks = resp.json()["checks"]
    assert {"database", "keyring", "knowledge_base", "speech", "responder"} <= set(checks)
    assert all(c["ok"] for c in checks.values())
    client.app.state.speaker.binary = "espeak-ng-not-installed"
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["speech"]["ok"] is False


def test_speech_helpers():
    assert speakable("Fares are capped [2]. See *this* [1, 3].") == "Fares are capped. See this."
    raw = bytearray(b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00")
    raw += bytes([1, 0, 1, 0]) + (22050).to_bytes(4, "little") + (44100).to_bytes(4, "little")
    raw += bytes([2, 0, 16, 0]) + b"data\xff\xff\xff\x7f" + b"\x00\x01" * 100
    with wave.open(io.BytesIO(fix_wav_sizes(bytes(raw)))) as w:
        assert w.getnframes() == 100
    with pytest.raises(ValueError):
        fix_wav_sizes(b"not a wav")


def test_two_keys_of_one_tenant_keep_separate_conversations_of_the_same_name(
    client: TestClient, admin_key: str
):
    made = [
        client.post(
            "/admin/keys", json={"name": name, "scopes": ["chat"]}, headers=bearer(admin_key)
        ).json()["key"]
        for name in ("alice", "bob")
    ]
    for key, question in zip(made, ("How much is a day pass?", "Where is lost and found?")):
        events = chat(client, key, question, session="default")
        assert events[-1][0] == "done", events[-1]
    for key, question in zip(made, ("How much is a day pass?", "Where is lost and found?")):
        stored = client.get("/history?session=default", headers=bearer(key)).json()["messages"]
        assert [m["content"] for m in stored][0] == question and len(stored) == 2


def test_a_document_ingested_through_one_worker_is_found_through_another(
    home: Path, admin_key: str
):
    admin = bearer(admin_key)
    with (
        TestClient(create_app(settings_for(home))) as one,
        TestClient(create_app(settings_for(home, index_on_start=False))) as two,
    ):
        before = two.get("/search?q=gondola Pell", headers=admin).json()["hits"]
        assert all("gondola" not in h["doc_id"] for h in before)
        text = "# Gondola\n\nThe Riverton gondola to Mount Pell opens in May."
        doc = {"name": "gondola.md", "text": text}
        assert one.post("/ingest", json={"documents": [doc]}, headers=admin).status_code == 200
        hits = two.get("/search?q=gondola Pell", headers=admin).json()["hits"]
        assert hits and "gondola" in hits[0]["doc_id"]


def test_metrics_count_the_turns_keys_and_limits(client: TestClient, admin_key: str):
    chat(client, admin_key, "How much is a day pass?", session="metrics")
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for name in (
        "keel_messages_stored_total",
        "keel_auth_verifications_total",
        "keel_ratelimit_decisions_total",
    ):
        assert name in text, name
    assert "ratelimit-policy" not in resp.headers  # exempt, like the probes
