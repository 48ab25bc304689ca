"""Concurrent inference: keel's Embedder / CrossEncoder (a pool of ONNX Runtime sessions per
model, one-text embeddings micro-batched) beside Python onnxruntime with ONE InferenceSession
shared by the same number of Python threads (its `run` releases the GIL), as issue 15 asks.

Workloads, each call made by one of N caller threads (N = 1, 4, 16), every caller making the
same number of calls:
  query embedding: one Cranfield query per call (`Embedder.embed([q])` vs tokenizers + run +
    mean pooling in numpy, scripts/neural_reference.py);
  rerank: one query against 20 Cranfield passages (cut to --passage-chars characters, about 70
    tokens at the default 300: a voice bot's chunks; full abstracts cost ~0.2 s per pair here)
    per call (`CrossEncoder.score` vs the same reference, batch size 16 on both sides).

Both sides: the same model files, TOKENIZERS_PARALLELISM=false (set before tokenizers loads),
keel with its defaults (sessions and threads chosen by the core from the cores), Python with
onnxruntime's default intra-op threads unless --py-threads is given. Rounds interleave the two
systems (benchutil's rotation); each cell reports the median over rounds of throughput
(calls/s), of the round's p50 / p95 call latency, and of the process CPU time per call (all
threads: what a call costs a loaded machine, less sensitive to other load than wall-clock).

Run: .venv/bin/python bench/python/bench_neural_concurrent.py [--rounds 3] [--calls 24]
     [--callers 1,4,16] [--py-threads 0] [--no-rerank]
Models: `make models` (.cache/models or $KEEL_TEST_MODELS).
"""

from __future__ import annotations

import argparse
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
sys.path.insert(0, str(ROOT / "scripts"))

import neural_reference as ref  # noqa: E402

Call = Callable[[int], Any]


def cell(call: Call, callers: int, calls: int) -> tuple[float, list[float], float]:
    """`callers` threads released together, each making `calls` calls (call index i is
    caller * calls + j); returns (calls per second, every call's latency in seconds, process
    CPU seconds per call)."""
    start = threading.Barrier(callers + 1)
    lat: list[list[float]] = [[] for _ in range(callers)]

    def run(c: int) -> None:
        start.wait()
        mine = lat[c]
        for j in range(calls):
            t0 = time.perf_counter()
            call(c * calls + j)
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    c0 = time.process_time()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    flat = [x for xs in lat for x in xs]
    n = callers * calls
    return n / wall, flat, cpu / n


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p)) * 1e3


def measure(
    systems: list[tuple[str, Call]], callers: int, calls: int, rounds: int
) -> dict[str, list[float]]:
    """Median [calls/s, p50 ms, p95 ms, CPU ms per call] per system over interleaved rounds."""
    got: dict[str, list[list[float]]] = {name: [] for name, _ in systems}
    for r in range(rounds):
        for j in range(len(systems)):
            name, call = systems[(r + j) % len(systems)]
            tput, lat, cpu = cell(call, callers, calls)
            got[name].append([tput, pct(lat, 50), pct(lat, 95), cpu * 1e3])
    return {
        name: [statistics.median(v[k] for v in vals) for k in range(4)]
        for name, vals in got.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=24, help="calls per caller per round (embedding)")
    ap.add_argument("--rerank-calls", type=int, default=1, help="calls per caller per round")
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument("--callers", default="1,4,16")
    ap.add_argument("--py-threads", type=int, default=0, help="onnxruntime intra-op threads")
    ap.add_argument("--no-rerank", action="store_true", help="the query-embedding rows only")
    args = ap.parse_args()
    levels = [int(x) for x in args.callers.split(",")]

    corpus, queries, _ = keel.load_beir(CRANFIELD)
    qtexts = list(queries.values())
    passages = [
        (f"{d['title']} {d['text']}" if d["title"] else d["text"])[: args.passage_chars]
        for d in corpus
    ]

    mpath, cpath = MODELS / "minilm", MODELS / "test-cross-encoder"
    embedder = keel.Embedder(mpath)
    ce = keel.CrossEncoder(cpath)
    sess, tok = ref.session(mpath, args.py_threads), ref.tokenizer(mpath)
    ce_sess, ce_tok = ref.session(cpath, args.py_threads), ref.tokenizer(cpath)

    def q(i: int) -> str:
        return qtexts[i % len(qtexts)]

    def pas(i: int) -> list[str]:
        s = (i * 20) % (len(passages) - 20)
        return passages[s : s + 20]

    # Same answers first (a benchmark of wrong results proves nothing).
    k, p = np.array(embedder.embed([q(0)])), ref.embed(sess, tok, [q(0)])
    assert np.abs(k - p).max() < 1e-4, "embeddings differ"
    ks, ps = np.array(ce.score(q(1), pas(1))), ref.rerank(ce_sess, ce_tok, q(1), pas(1))
    assert np.abs(ks - ps).max() < 1e-4, "rerank scores differ"

    workloads: list[tuple[str, list[tuple[str, Call]], int]] = [
        (
            "query embedding (1 query per call)",
            [
                ("keel", lambda i: embedder.embed([q(i)])),
                ("onnxruntime", lambda i: ref.embed(sess, tok, [q(i)])),
            ],
            args.calls,
        ),
        (
            f"rerank (1 query x 20 passages of {args.passage_chars} chars per call)",
            [
                ("keel", lambda i: ce.score(q(i), pas(i))),
                ("onnxruntime", lambda i: ref.rerank(ce_sess, ce_tok, q(i), pas(i))),
            ],
            args.rerank_calls,
        ),
    ]
    if args.no_rerank:
        workloads = workloads[:1]
    cores = os.cpu_count()
    lines = [
        f"cores: {cores}; keel: Embedder sessions={embedder.sessions} threads={embedder.threads}, "
        f"CrossEncoder sessions={ce.sessions} threads={ce.threads}; onnxruntime: one shared "
        f"InferenceSession per model, intra_op_num_threads={args.py_threads or 'default'}; "
        f"{args.rounds} interleaved rounds, medians",
        "",
        "| workload | callers | keel calls/s | ort calls/s | ratio | keel p50 / p95 ms "
        "| ort p50 / p95 ms | keel / ort CPU ms per call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for title, systems, calls in workloads:
        for _, call in systems:
            for i in range(3):
                call(i)  # warm-up
        for n in levels:
            runs0 = embedder.runs
            res = measure(systems, n, calls, args.rounds)
            (kt, k50, k95, kc), (pt, p50, p95, pc) = res["keel"], res["onnxruntime"]
            lines.append(
                f"| {title} | {n} | {kt:.1f} | {pt:.1f} | {kt / pt:.2f}x | "
                f"{k50:.1f} / {k95:.1f} | {p50:.1f} / {p95:.1f} | {kc:.1f} / {pc:.1f} |"
            )
            if title.startswith("query"):
                made = n * calls * args.rounds
                print(
                    f"  ({n} callers: {made} keel embed calls ran as {embedder.runs - runs0} "
                    "batches)",
                    file=sys.stderr,
                )
            print(lines[-1], file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
