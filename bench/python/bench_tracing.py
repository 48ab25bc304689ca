"""The cost of telemetry, side by side in one run (docs/benchmarks.md, "Telemetry cost II: traces").

Modes, each in its own process (telemetry is process-wide):
- ``baseline``: a build without telemetry (``--baseline DIR``: a ``keel`` package built from the
  commit before it, e.g. main's ``python/`` with its ``_native.abi3.so``);
- ``off``: this build, telemetry never turned on (the default);
- ``on-none``: traces on at 100 % sampling, spans made and dropped (``exporter="none"``);
- ``on-otlp``: traces on at 100 %, exported over OTLP/HTTP to a receiver in a child process.
Operations: cache get-hit, rate-limit decision with headers, memory append, BM25 search.
Also opentelemetry-python's own cost per span (SDK + BatchSpanProcessor + OTLP/HTTP exporter to
the same kind of receiver), measured in the same run.

Wall clock: median of ``--rounds`` rounds of ``n`` calls, ns per call. ``--callgrind``: also
instructions per call (valgrind, PYTHONHASHSEED=0), (total(n) - total(0)) / n.

Run: .venv/bin/python bench/python/bench_tracing.py --baseline /tmp/keel-baseline [--callgrind]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OPS = {
    "cache_get_hit": 50_000,
    "ratelimit_headers": 20_000,
    "memory_append": 300,
    "bm25_search": 5_000,
}
MODES = ["baseline", "off", "on-none", "on-otlp"]


def receiver_process() -> tuple[subprocess.Popen[str], str]:
    """A child process running the test receiver (so it does not share our GIL)."""
    tests = str(ROOT / "tests" / "python")
    code = (
        f"import sys; sys.path.insert(0, {tests!r})\n"
        "from otlp_receiver import otlp_receiver\n"
        "with otlp_receiver() as r:\n"
        "    print(r.url, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    return p, p.stdout.readline().strip()


def setup(op: str, tmp: str):  # noqa: ANN201
    import keel

    if op == "cache_get_hit":
        c = keel.Cache(1000)
        c.set("k", b"v")
        return lambda: c.get("k")
    if op == "ratelimit_headers":
        lim = keel.RateLimiter(10**9, 60, name="api")

        def decide() -> object:
            return lim.hit("client").headers()

        return decide
    if op == "memory_append":
        mem = keel.Memory(os.path.join(tmp, "m.db"), keel.Keyring.generate())
        mem.append("acme", "alice", "s1", "user", "warm up")
        return lambda: mem.append("acme", "alice", "s1", "user", "hello there, how are you?")
    if op == "bm25_search":
        idx = keel.BM25Index()
        words = "wing lift drag flow heat slab plate shock wave boundary layer".split()
        for i in range(2000):
            idx.add(f"d{i}", " ".join(words[(i + j) % len(words)] for j in range(12)))
        return lambda: idx.search("boundary layer shock", k=10)
    raise SystemExit(f"unknown op {op}")


def turn_on(mode: str, url: str | None) -> None:
    if mode in ("baseline", "off"):
        return
    import keel.telemetry

    if mode == "on-none":
        keel.telemetry.configure(exporter="none", sample_ratio=1.0)
    else:
        keel.telemetry.configure(endpoint=url, sample_ratio=1.0, max_queue_size=1 << 16)


def child(mode: str, op: str, n: int, rounds: int, url: str | None) -> None:
    turn_on(mode, url)
    tmp = tempfile.mkdtemp()
    f = setup(op, tmp)
    for _ in range(min(n, 1000)):
        f()
    per = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            f()
        per.append((time.perf_counter_ns() - t) / n)
    if mode != "baseline" and mode != "off":
        import keel.telemetry

        keel.telemetry.shutdown()
    print(json.dumps({"ns": statistics.median(per)}))


def child_callgrind(mode: str, op: str, n: int, url: str | None) -> None:
    turn_on(mode, url)
    tmp = tempfile.mkdtemp()
    f = setup(op, tmp)
    f()
    for _ in range(n):
        f()


def otel_python_child(n: int, rounds: int, url: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(f"{url}/v1/traces"), max_queue_size=1 << 16)
    )
    tracer = provider.get_tracer("bench")
    per = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            with tracer.start_as_current_span("op"):
                pass
        per.append((time.perf_counter_ns() - t) / n)
    empty = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            pass
        empty.append((time.perf_counter_ns() - t) / n)
    provider.shutdown()
    print(json.dumps({"ns": statistics.median(per) - statistics.median(empty)}))


def env_for(mode: str, baseline: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if mode == "baseline":
        if not baseline:
            raise SystemExit("--baseline DIR is needed for the baseline column")
        env["PYTHONPATH"] = baseline
    return env


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def instructions(mode: str, op: str, n: int, url: str, baseline: str | None) -> int:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/cg.out",
                sys.executable,
                __file__,
                "--callgrind-child",
                mode,
                op,
                str(n),
                url,
            ],
            env=env_for(mode, baseline),
            capture_output=True,
            text=True,
            check=True,
        )
    m = re.search(r"Collected : (\d+)", proc.stderr)
    assert m, proc.stderr[-2000:]
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="a directory holding a keel package without telemetry")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the call counts")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--callgrind-ops", default="cache_get_hit,ratelimit_headers")
    ap.add_argument("--callgrind-modes", default="baseline,off")
    a = ap.parse_args()
    rec, url = receiver_process()
    try:
        rows = {}
        for op, n in OPS.items():
            n = max(1, int(n * a.scale))
            rows[op] = {}
            # Interleave the modes round by round against drift of the loaded machine.
            samples: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(a.rounds):
                for mode in MODES:
                    if mode == "baseline" and not a.baseline:
                        continue
                    r = run(["--child", mode, op, str(n), "1", url], env_for(mode, a.baseline))
                    samples[mode].append(r["ns"])
            for mode, xs in samples.items():
                if xs:
                    rows[op][mode] = statistics.median(xs)
            print(op, {m: round(v) for m, v in rows[op].items()}, flush=True)
        otel = statistics.median(
            run(["--otel-python", "20000", "1", url], env_for("off", None))["ns"]
            for _ in range(a.rounds)
        )
        print("opentelemetry-python ns/span", round(otel), flush=True)
        if a.callgrind:
            for op in a.callgrind_ops.split(","):
                n = max(1, int(OPS[op] * a.scale / 10))
                for mode in a.callgrind_modes.split(","):
                    if mode == "baseline" and not a.baseline:
                        continue
                    full = instructions(mode, op, n, url, a.baseline)
                    zero = instructions(mode, op, 0, url, a.baseline)
                    print("callgrind", op, mode, round((full - zero) / n), flush=True)
    finally:
        assert rec.stdin is not None
        rec.stdin.close()
        rec.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, op, n, rounds, url = sys.argv
        child(mode, op, int(n), int(rounds), url)
    elif len(sys.argv) > 1 and sys.argv[1] == "--callgrind-child":
        _, _, mode, op, n, url = sys.argv
        child_callgrind(mode, op, int(n), url)
    elif len(sys.argv) > 1 and sys.argv[1] == "--otel-python":
        _, _, n, rounds, url = sys.argv
        otel_python_child(int(n), int(rounds), url)
    else:
        main()
