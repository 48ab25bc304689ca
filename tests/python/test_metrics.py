"""keel's metrics from Python: the exposition (checked by promtool), named caches, rate limiters,
the prometheus_client collector, the FastAPI route and the on/off switch."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

import keel
import keel.fastapi
import keel.prometheus


def sample(text: str, series: str) -> float | None:
    """The value of the sample written exactly as ``series`` (name and labels)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test` installs the Debian package prometheus"
    return path


def test_prometheus_text_passes_promtool():
    keel.Cache(10, name="promtool_check")["k"] = 1
    text = keel.metrics_text()
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# TYPE keel_operations_total counter" in text
    assert sample(text, "process_resident_memory_bytes") > 0


def test_openmetrics_parses_with_the_reference_parser():
    text = keel.metrics_text(openmetrics=True)
    assert text.endswith("# EOF\n")
    names = {f.name: f.type for f in parse_openmetrics(text)}
    assert names["keel_operations"] == "counter"
    assert names["keel_operation_duration_seconds"] == "histogram"
    assert keel.metrics_content_type(True).startswith("application/openmetrics-text")
    assert keel.metrics_content_type().startswith("text/plain; version=0.0.4")


def test_named_caches_and_limiters_are_exported_and_summed_by_name():
    a = keel.Cache(10, name="py_summed")
    b = keel.Cache(10, name="py_summed")
    a["x"] = 1
    b["y"] = 2
    assert a.get("x") == 1 and b.get("y") == 2 and b.get("z") is None
    limiter = keel.RateLimiter(1, 60, name="py_limiter")
    assert limiter.check("198.51.100.7").allowed
    assert not limiter.check("198.51.100.7").allowed
    text = keel.metrics_text()
    assert sample(text, 'keel_cache_hits_total{cache="py_summed"}') == 2
    assert sample(text, 'keel_cache_misses_total{cache="py_summed"}') == 1
    assert sample(text, 'keel_cache_entries{cache="py_summed"}') == 2
    allowed = 'keel_ratelimit_decisions_total{limiter="py_limiter",decision="allowed"}'
    assert sample(text, allowed) == 1
    denied = 'keel_ratelimit_decisions_total{limiter="py_limiter",decision="denied"}'
    assert sample(text, denied) == 1
    assert "198.51.100.7" not in text
    del a, b, limiter
    assert "py_summed" not in keel.metrics_text()


@pytest.mark.parametrize("name", ["", "x" * 65, "line\nbreak"])
def test_a_bad_cache_name_is_refused(name):
    with pytest.raises(keel.InvalidArgument, match="cache name"):
        keel.Cache(10, name=name)


def test_the_collector_joins_the_hosts_registry_without_process_duplicates():
    registry = CollectorRegistry()
    collector = keel.prometheus.register(registry)
    text = generate_latest(registry).decode()
    assert "# TYPE keel_operations_total counter" in text
    assert "process_cpu_seconds_total" not in text
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(ValueError, match="Duplicated"):
        keel.prometheus.register(registry)
    registry.unregister(collector)
    # With the default registry, whose process collector exports process_* already.
    from prometheus_client import REGISTRY

    collector = keel.prometheus.register()
    try:
        text = generate_latest(REGISTRY).decode()
        assert text.count("# TYPE process_cpu_seconds_total counter") == 1
        assert "keel_build_info" in text
    finally:
        REGISTRY.unregister(collector)


def test_the_fastapi_route_serves_both_formats():
    app = FastAPI()
    app.add_route("/metrics", keel.fastapi.metrics_route, include_in_schema=False)
    client = TestClient(app)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE keel_operations_total counter" in r.text
    r = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


def test_operations_are_counted_unless_switched_off(tmp_path):
    keyring = keel.Keyring.generate()
    memory = keel.Memory(tmp_path / "m.db", keyring)
    ok = 'keel_operations_total{primitive="memory",operation="memory.append",outcome="ok"}'

    def count() -> float:
        return sample(keel.metrics_text(), ok)

    before = count()
    memory.append("t", "u", "s", "user", "hello")
    assert count() == before + 1
    assert keel.metrics_enabled()
    keel.set_metrics_enabled(False)
    try:
        memory.append("t", "u", "s", "user", "hello again")
        assert count() == before + 1
    finally:
        keel.set_metrics_enabled(True)
    memory.append("t", "u", "s", "user", "and again")
    assert count() == before + 2
    assert not re.search(r"hello|\"t\"|\"u\"|\"s\"", keel.metrics_text())


def test_the_metrics_route_renders_off_the_event_loop(monkeypatch) -> None:
    """Rendering reads /proc and takes locks: keel.fastapi must do it in a worker thread."""
    import asyncio
    import threading

    import keel.fastapi

    seen: list[tuple[bool, bool]] = []
    render = keel.fastapi.metrics_text

    def spy(openmetrics: bool) -> str:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        seen.append((on_loop, threading.current_thread() is threading.main_thread()))
        return render(openmetrics)

    monkeypatch.setattr(keel.fastapi, "metrics_text", spy)
    app = FastAPI()
    app.add_route("/metrics", keel.fastapi.metrics_route, include_in_schema=False)
    r = TestClient(app).get("/metrics")
    assert r.status_code == 200 and "# TYPE" in r.text
    assert seen == [(False, False)], "rendered on the event loop"
