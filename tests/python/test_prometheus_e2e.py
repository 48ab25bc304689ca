"""End to end against a real Prometheus (Debian package `prometheus`, installed by `make test`):
a FastAPI app under uvicorn (metrics_app.py) serves keel's metrics two ways (/metrics via
keel.fastapi.metrics_route, /pc-metrics via the prometheus_client collector); Prometheus scrapes
both every second and evaluates deploy/prometheus's rules; after known traffic the counts read
back through Prometheus's HTTP API are exact, every rule is healthy, and every panel query of
deploy/grafana/keel.json returns data."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "grafana"))
import dashboard  # noqa: E402

JOBS = ("keel", "keel_pc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post(url: str) -> bytes:
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def wait_until(what: str, check, timeout: float = 60.0):
    """Polls `check` (a readiness probe of a server we started, not a synchronisation sleep)
    until it returns a truthy value; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kw)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[str, str]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make test` installs the Debian package"
    tmp = tmp_path_factory.mktemp("prom-e2e")
    app_port, prom_port = free_port(), free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/rules/keel.rules.yml")],
        "scrape_configs": [
            {
                "job_name": "keel",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
            },
            {
                "job_name": "keel_pc",
                "metrics_path": "/pc-metrics/",
                "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    env = dict(os.environ, KEEL_E2E_DIR=str(tmp))
    app = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "metrics_app:app",
            "--app-dir",
            str(ROOT / "tests/python"),
            "--host",
            "127.0.0.1",
            "--port",
            str(app_port),
            "--log-level",
            "warning",
        ],
        tmp / "app.log",
        env=env,
    )
    prom = None
    try:
        wait_until("the app", lambda: get(app_url + "/metrics"))
        prom = start(
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp / "prometheus.log",
        )
        wait_until("prometheus", lambda: get(prom_url + "/-/ready"))
        yield app_url, prom_url
    finally:
        if prom is not None:
            stop(prom)
        stop(app)


def query(prom_url: str, expr: str) -> list[dict]:
    body = json.loads(get(prom_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(prom_url: str, expr: str) -> float | None:
    result = query(prom_url, expr)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def test_counts_read_back_through_prometheus_are_exact(servers):
    app_url, prom_url = servers
    # Both endpoints scraped (OpenMetrics and the collector's format) before any traffic.
    for job in JOBS:
        wait_until(f"a scrape of {job}", lambda job=job: value(prom_url, f'up{{job="{job}"}}') == 1)

    good = json.loads(post(app_url + "/keys"))["key"]
    revoked = json.loads(post(app_url + "/keys?revoked=true"))["key"]
    statuses = [
        urllib.request.urlopen(
            app_url + "/chat?" + urllib.parse.urlencode({"key": good, "q": "refund"})
        ).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    for key, status in [(good, 429), (revoked, 401), ("not-a-key", 401)]:
        with pytest.raises(urllib.error.HTTPError) as e:
            get(app_url + "/chat?" + urllib.parse.urlencode({"key": key, "q": "refund"}))
        assert e.value.code == status

    expected = {
        'keel_auth_verifications_total{outcome="ok",reason="none"}': 4,
        'keel_auth_verifications_total{outcome="refused",reason="revoked"}': 1,
        'keel_auth_verifications_total{outcome="refused",reason="malformed"}': 1,
        'keel_operations_total{operation="auth.admin",outcome="ok"}': 3,
        'keel_operations_total{operation="memory.append",outcome="ok"}': 3,
        'keel_operations_total{operation="retrieval.search",outcome="ok"}': 3,
        'keel_ratelimit_decisions_total{limiter="e2e_api",decision="allowed"}': 3,
        'keel_ratelimit_decisions_total{limiter="e2e_api",decision="denied"}': 1,
        'keel_cache_hits_total{cache="e2e_answers"}': 2,
        'keel_cache_misses_total{cache="e2e_answers"}': 1,
        'keel_cache_entries{cache="e2e_answers"}': 1,
        "keel_messages_stored_total": 3,
        "keel_conversations_started_total": 1,
        'keel_retrieval_queries_total{retriever="bm25"}': 3,
        'keel_operation_duration_seconds_count{operation="memory.append"}': 3,
        'keel_retrieval_stage_duration_seconds_count{stage="bm25"}': 3,
    }
    for job in JOBS:

        def scraped_after_traffic(job=job):
            return value(prom_url, f'keel_messages_stored_total{{job="{job}"}}') == 3

        wait_until(f"{job} scraped after the traffic", scraped_after_traffic)
        for series, want in expected.items():
            name, _, labels = series.partition("{")
            selector = f'{name}{{job="{job}",{labels}' if labels else f'{name}{{job="{job}"}}'
            assert value(prom_url, f"sum({selector})") == want, (job, series)
        assert value(prom_url, f'process_resident_memory_bytes{{job="{job}"}}') > 0
    # No key, user, tenant or session in any label.
    for series in query(prom_url, '{job=~"keel.*"}'):
        text = json.dumps(series["metric"])
        for canary in (good, revoked, "tenant-a", "user-1", "session-1"):
            assert canary not in text, (canary, series["metric"])


def test_every_rule_loads_and_evaluates(servers):
    _, prom_url = servers
    wait_until("the recording rules", lambda: query(prom_url, "keel:sli_errors:ratio_rate5m"))

    def evaluated():
        body = json.loads(get(prom_url + "/api/v1/rules"))
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        done = rules and all(not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done else None

    rules = wait_until("the rules", evaluated)
    names = {r["name"] for r in rules}
    for alert in (
        "KeelAvailabilityFastBurn",
        "KeelAvailabilitySlowBurn",
        "KeelLatencyFastBurn",
        "KeelLatencySlowBurn",
        "KeelDatabaseBusy",
        "KeelAuthFailureSpike",
        "KeelRateLimitDenialSpike",
        "KeelMetricsDown",
        "KeelTelemetryExportFailing",
    ):
        assert alert in names
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not bad, bad
    # The test traffic had no errors and nothing slow: no SLO alert fires.
    alerts = json.loads(get(prom_url + "/api/v1/alerts"))["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"].startswith("KeelAvail")], alerts


def test_every_dashboard_panel_returns_data(servers):
    _, prom_url = servers
    wait_until("the recording rules", lambda: query(prom_url, "keel:sli_slow:ratio_rate1h"))
    board = json.loads((ROOT / "deploy/grafana/keel.json").read_text())
    panels = dashboard.queries(board)
    assert len(panels) >= 20
    empty = []
    for title, expr in panels:
        promql = expr.replace("$__rate_interval", "1m")
        result = query(prom_url, promql)
        finite = [r for r in result if math.isfinite(float(r["value"][1]))]
        if not finite:
            empty.append((title, promql, result))
    assert not empty, "panels without data:\n" + "\n".join(map(str, empty))


def test_alertmanager_inhibits_the_ticket_while_the_page_fires(tmp_path):
    """deploy/alertmanager/alertmanager.yml in a real Alertmanager: with a page and a ticket of
    the availability SLO firing, the ticket is inhibited; a ticket of another SLO is not."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "alertmanager is missing: `make test` installs prometheus-alertmanager"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    am = start(
        [
            binary,
            f"--config.file={ROOT / 'deploy/alertmanager/alertmanager.yml'}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
    )
    try:
        wait_until("alertmanager", lambda: get(url + "/-/ready"))
        alerts = [
            {"alertname": "KeelAvailabilityFastBurn", "severity": "page", "slo": "availability"},
            {"alertname": "KeelAvailabilitySlowBurn", "severity": "ticket", "slo": "availability"},
            {"alertname": "KeelLatencySlowBurn", "severity": "ticket", "slo": "latency"},
        ]
        body = json.dumps([{"labels": labels} for labels in alerts]).encode()
        req = urllib.request.Request(
            url + "/api/v2/alerts", data=body, headers={"content-type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=5).close()

        def states():
            got = {
                a["labels"]["alertname"]: a["status"]["state"]
                for a in json.loads(get(url + "/api/v2/alerts"))
            }
            return got if len(got) == 3 else None

        assert wait_until("the alerts", states) == {
            "KeelAvailabilityFastBurn": "active",
            "KeelAvailabilitySlowBurn": "suppressed",
            "KeelLatencySlowBurn": "active",
        }
    finally:
        stop(am)
