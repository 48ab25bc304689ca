"""keel.Cache side by side with the caches a Python service would otherwise use.

Same keys, same operations, same process, interleaved rounds; prints the median ns per operation
over ROUNDS rounds and the ratio of each cache to keel. Operations over N string keys:
  get-hit       c.get(k) for keys that are present
  get-miss      c.get(k) for keys that are absent
  set           c[k] = v overwriting present keys (no eviction)
  set-evict     c[k] = v of N fresh keys into a cache of N/10 entries (every insert evicts)

Run: .venv/bin/python bench/python/bench_cache.py [--n 100000] [--rounds 7] [--markdown]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any, Callable

import cachebox
import cachetools

import keel

TTL = 600.0


def factories(maxsize: int) -> dict[str, Callable[[], Any]]:
    return {
        "keel.Cache(ttl)": lambda: keel.Cache(maxsize, ttl=TTL),
        "cachebox.TTLCache": lambda: cachebox.TTLCache(maxsize, TTL),
        "cachetools.TTLCache": lambda: cachetools.TTLCache(maxsize, ttl=TTL),
        "cachetools.LRUCache": lambda: cachetools.LRUCache(maxsize),
        "dict (floor, unbounded)": dict,
    }


def per_op_ns(fn: Callable[[], None], ops: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / ops
    finally:
        gc.enable()


def measure(name: str, n: int) -> dict[str, float]:
    keys = [f"user:{i}:profile" for i in range(n)]
    absent = [f"absent:{i}" for i in range(n)]
    fresh = [f"fresh:{i}" for i in range(n)]
    out: dict[str, float] = {}

    c = factories(2 * n)[name]()
    for k in keys:
        c[k] = k

    def get_hit() -> None:
        g = c.get
        for k in keys:
            g(k)

    def get_miss() -> None:
        g = c.get
        for k in absent:
            g(k)

    def set_existing() -> None:
        for k in keys:
            c[k] = k

    out["get-hit"] = per_op_ns(get_hit, n)
    out["get-miss"] = per_op_ns(get_miss, n)
    out["set"] = per_op_ns(set_existing, n)

    small = factories(max(n // 10, 1))[name]()
    for k in keys[: n // 10]:
        small[k] = k

    def set_evict() -> None:
        for k in fresh:
            small[k] = k

    out["set-evict"] = per_op_ns(set_evict, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    names = list(factories(1))
    ops = ["get-hit", "get-miss", "set", "set-evict"]
    samples: dict[str, dict[str, list[float]]] = {m: {o: [] for o in ops} for m in names}
    for _ in range(args.rounds):
        for name in names:  # interleaved, so drift in machine load hits every cache alike
            for op, ns in measure(name, args.n).items():
                samples[name][op].append(ns)
    med = {m: {o: statistics.median(v) for o, v in d.items()} for m, d in samples.items()}
    base = med["keel.Cache(ttl)"]

    print(f"median ns/op over {args.rounds} rounds, {args.n} keys; (x) = time / keel's time")
    header = "| cache | " + " | ".join(ops) + " |"
    print(header)
    print("|" + "---|" * (len(ops) + 1))
    for m in names:
        cells = [f"{med[m][o]:.0f} ({med[m][o] / base[o]:.2f}x)" for o in ops]
        print(f"| {m} | " + " | ".join(cells) + " |")
    if not args.markdown:
        print()
        for anchor in ("cachebox.TTLCache", "cachetools.TTLCache"):
            worst = min(med[anchor][o] / base[o] for o in ops)
            print(f"keel vs {anchor}: on its worst operation keel is {worst:.2f}x as fast")


if __name__ == "__main__":
    main()
