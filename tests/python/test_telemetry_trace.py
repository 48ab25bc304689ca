"""Traces and logs end to end: a FastAPI app instrumented with opentelemetry-instrumentation-fastapi
exports with the Python SDK, keel exports with its own pipeline, both to one OTLP/HTTP receiver
started here (decoded with opentelemetry-proto); keel's spans must sit beneath the server span.
Also: no secret or id in any attribute (with a probe proving the scan can fail), the explicit
``traceparent`` context, a forked worker's exporter, and logs to ``logging`` and stderr."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import keel
import keel.telemetry
from keel import _native

sys.path.insert(0, str(Path(__file__).parent))
from otlp_receiver import Receiver, Span, otlp_receiver  # noqa: E402

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
TENANT = "tenant-canary-5e1d"
USER = "user-canary-83af"
SESSION = "session-canary-c0de"
CONTENT = "content-canary-b00k: my card number is 4111"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as r:
        yield r
    keel.telemetry.shutdown()


def keel_on(receiver: Receiver, **kw: object) -> None:
    keel.telemetry.configure(
        endpoint=receiver.url, service_name="keel-test", scheduled_delay=0.05, **kw
    )


def leaks(spans: list[Span], canaries: list[str]) -> list[str]:
    """Every place a canary appears: span names, attribute keys and values, events, status."""
    found = []
    for s in spans:
        texts = [s.name, s.status_message]
        for k, v in s.attributes.items():
            texts += [k, repr(v)]
        for name, attrs in s.events:
            texts.append(name)
            for k, v in attrs.items():
                texts += [k, repr(v)]
        for c in canaries:
            if any(c in t for t in texts):
                found.append(f"{c!r} in span {s.name!r}")
    return found


def test_keel_spans_are_children_of_the_fastapi_server_span(receiver, tmp_path):
    keel_on(receiver)
    keyring = keel.Keyring.generate()
    keys = keel.ApiKeys(tmp_path / "keel.db", keyring)
    memory = keel.Memory(tmp_path / "keel.db", keyring)
    bm25 = keel.BM25Index()
    bm25.add("d1", "opening hours of the store are nine to five")
    bm25.add("d2", "refunds take five business days")
    api_key, _ = keys.create(TENANT, "bot")

    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{receiver.url}/v1/traces")))
    app = FastAPI()

    @app.post("/chat")
    def chat(x_api_key: str = Header()) -> dict[str, int]:
        identity = keys.verify(x_api_key)
        memory.append(identity.tenant, USER, SESSION, "user", CONTENT)
        hits = bm25.search("when are you open", k=2)
        return {"hits": len(hits)}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    keel.telemetry.flush()  # spans of the setup above (key creation) are not part of the
    receiver.clear()  # request: sent and received before they are forgotten
    r = TestClient(app).post("/chat", headers={"X-API-Key": api_key})
    assert r.status_code == 200 and r.json() == {"hits": 1}
    provider.force_flush()
    keel.telemetry.flush()

    wanted = {"auth.verify", "memory.append", "rag.search"}

    def complete(spans: list[Span]) -> bool:
        names = {s.name for s in spans if s.service == "keel-test"}
        return wanted <= names and any(s.kind == SERVER for s in spans)

    assert receiver.wait_for(complete), [(s.service, s.name) for s in receiver.spans]
    spans = receiver.spans
    (server,) = [s for s in spans if s.kind == SERVER]
    assert server.service == "app" and server.scope.startswith("opentelemetry.instrumentation")
    mine = [s for s in spans if s.service == "keel-test"]
    assert {s.trace_id for s in spans} == {server.trace_id}, "one trace"
    by_id = {s.span_id: s for s in mine}
    for name in wanted:
        (s,) = [s for s in mine if s.name == name]
        assert s.parent_span_id == server.span_id, f"{name} is a child of the server span"
        assert s.scope == "keel"
    # The database work is beneath the memory operation, with OpenTelemetry db attributes.
    db = [s for s in mine if s.attributes.get("db.system.name") == "sqlite"]
    assert db, [s.name for s in mine]
    (append,) = [s for s in mine if s.name == "memory.append"]
    tables = {
        s.attributes.get("db.collection.name") for s in db if s.parent_span_id == append.span_id
    }
    assert tables == {"memory_messages"}, tables
    for s in db:
        root = s
        while root.parent_span_id in by_id:
            root = by_id[root.parent_span_id]
        assert root.parent_span_id == server.span_id
    (verify,) = [s for s in mine if s.name == "auth.verify"]
    assert verify.attributes.get("keel.auth.outcome") == "ok"
    (search,) = [s for s in mine if s.name == "rag.search"]
    assert search.attributes.get("rag.retriever") == "bm25"
    assert search.attributes.get("rag.candidates") == 1

    canaries = [api_key, TENANT, USER, SESSION, CONTENT, "4111"]
    assert leaks(mine, canaries) == []
    # The scan can fail: a span carrying a canary is caught.
    _native.telemetry_probe(f"x-{SESSION}-x")
    keel.telemetry.flush()
    assert receiver.wait_for(lambda spans: any(s.name == "keel.probe" for s in spans))
    assert leaks(receiver.spans, canaries) == [f"{SESSION!r} in span 'keel.probe'"]


def test_explicit_traceparent_is_the_parent(receiver):
    keel_on(receiver)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert keel.telemetry.current_traceparent() is None
    with keel.telemetry.context(tp):
        assert keel.telemetry.current_traceparent() == tp
        keel.BM25Index().search("anything", k=1)
    assert keel.telemetry.current_traceparent() is None
    keel.telemetry.flush()
    assert receiver.wait_for(lambda spans: any(s.name == "rag.search" for s in spans))
    (s,) = [s for s in receiver.spans if s.name == "rag.search"]
    assert (s.trace_id, s.parent_span_id) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    with pytest.raises(keel.InvalidArgument, match="not-a-traceparent"):
        with keel.telemetry.context("not-a-traceparent"):
            pass


def test_off_by_default_and_after_shutdown(receiver):
    assert not keel.telemetry.enabled()
    with keel.telemetry.context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        # Off: keel does not even look for the caller's context.
        assert keel.telemetry.current_traceparent() is None
    keel_on(receiver)
    assert keel.telemetry.enabled()
    keel.telemetry.shutdown()
    assert not keel.telemetry.enabled()
    keel.BM25Index().search("anything", k=1)
    keel.telemetry.flush()
    assert receiver.spans == []


def test_bad_options_are_named():
    with pytest.raises(keel.TelemetryError, match="collector:4318"):
        keel.telemetry.configure(endpoint="collector:4318")
    with pytest.raises(keel.InvalidArgument, match="1.5"):
        keel.telemetry.configure(sample_ratio=1.5)
    with pytest.raises(keel.InvalidArgument, match="loud"):
        keel.telemetry.configure(level="loud")
    assert not keel.telemetry.enabled()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_worker_exports_its_own_spans(receiver):
    keel_on(receiver)
    index = keel.BM25Index()
    index.search("before the fork", k=1)  # the parent's exporter is running
    keel.telemetry.flush()
    child_tp = "00-11111111111111111111111111111111-2222222222222222-01"
    pid = os.fork()
    if pid == 0:  # the child: a pre-forked worker
        code = 1
        signal.alarm(30)  # a child stuck on the parent's dead exporter thread fails, not hangs
        try:
            with keel.telemetry.context(child_tp):
                index.search("in the child", k=1)
            keel.telemetry.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert receiver.wait_for(
        lambda spans: any(s.trace_id == "1" * 32 for s in spans), timeout=20
    ), [(s.name, s.trace_id) for s in receiver.spans]
    # The parent still exports after its child came and went.
    index.search("after the fork", k=1)
    keel.telemetry.flush()
    assert receiver.wait_for(lambda spans: sum(s.name == "rag.search" for s in spans) >= 3)


def test_logs_go_to_logging_with_trace_ids(receiver, caplog):
    keel_on(receiver, logs=True, log_level="warn")
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with caplog.at_level(logging.WARNING, logger="keel"):
        with keel.telemetry.context(tp):
            _native.telemetry_probe("hello")
    (rec,) = [r for r in caplog.records if r.name.startswith("keel.")]
    assert rec.levelno == logging.WARNING
    assert rec.getMessage() == "probe event keel.probe=hello"
    assert rec.trace_id == "0af7651916cd43dd8448eb211c80319c"  # type: ignore[attr-defined]
    # The span id is keel's probe span, a child of the host's span.
    assert rec.span_id and rec.span_id != "b7ad6b7169203331"  # type: ignore[attr-defined]


def test_logs_as_json_lines_on_stderr():
    code = textwrap.dedent(
        """
        import keel, keel.telemetry
        from keel import _native
        keel.telemetry.configure(traces=False, logs=True, log_sink="stderr", log_level="info")
        _native.telemetry_probe("hi")
        keel.telemetry.configure(traces=False, logs=False)
        _native.telemetry_probe("not logged")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out.stderr
    (line,) = lines
    assert line["level"] == "WARN" and line["message"] == "probe event"
    assert line["keel.probe"] == "hi" and line["target"] == "keel::telemetry::trace"
    assert "trace_id" not in line  # traces off: no trace to refer to


def test_an_engine_configuration_turns_traces_and_logs_on(receiver, tmp_path, monkeypatch, caplog):
    for name in list(os.environ):
        if name.startswith("KEEL_") and name != "KEEL_TEST_MODELS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_KEYRING", f"1:{keel.Keyring.generate_key()}")
    conf = tmp_path / "keel.toml"
    conf.write_text(
        textwrap.dedent(
            f"""
            [database]
            url = "sqlite://{tmp_path / "app.db"}"
            [telemetry.traces]
            enabled = true
            endpoint = "{receiver.url}"
            service_name = "engine-test"
            scheduled_delay = 0.05
            [telemetry.logs]
            enabled = true
            level = "warn"
            """
        )
    )
    engine = keel.Engine(conf)
    assert keel.telemetry.enabled()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with caplog.at_level(logging.WARNING, logger="keel"), keel.telemetry.context(tp):
        engine.memory.append(TENANT, USER, SESSION, "user", CONTENT)
        _native.telemetry_probe("engine")
    keel.telemetry.flush()
    assert receiver.wait_for(lambda spans: any(s.name == "memory.append" for s in spans))
    (s,) = [s for s in receiver.spans if s.name == "memory.append"]
    assert (s.service, s.parent_span_id) == ("engine-test", "b7ad6b7169203331")
    # Logs of an Engine in Python go to `logging`.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("keel.")] == [
        "probe event keel.probe=engine"
    ]
