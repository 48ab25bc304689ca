"""keel.RateLimiter side by side with the `limits` package and a pure-Python floor.

One decision = one request checked against a 1000-per-minute policy, cycling over 10k keys
(every request is allowed, the common path). Same keys, same process, interleaved rounds; prints
the median ns per decision over ROUNDS rounds and each contender's time relative to keel's GCRA
decision *with* its response headers rendered (`raw_headers()`, what the ASGI middleware sends).

Run: .venv/bin/python bench/python/bench_ratelimit.py [--requests 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from limits import RateLimitItemPerMinute, storage, strategies

import keel

LIMIT = 1000
KEYS = 10_000


def keel_gcra(headers: bool) -> Callable[[str], object]:
    limiter = keel.RateLimiter(LIMIT, 60.0, algorithm="gcra")
    hit = limiter.check
    if headers:
        return lambda k: hit(k).raw_headers()
    return hit


def keel_sliding(headers: bool) -> Callable[[str], object]:
    limiter = keel.RateLimiter(LIMIT, 60.0, algorithm="sliding_window")
    hit = limiter.check
    if headers:
        return lambda k: hit(k).raw_headers()
    return hit


def limits_strategy(cls: type) -> Callable[[], Callable[[str], object]]:
    def make() -> Callable[[str], object]:
        limiter = cls(storage.MemoryStorage())
        item = RateLimitItemPerMinute(LIMIT)
        hit = limiter.check
        return lambda k: hit(item, k)

    return make


def dict_floor() -> Callable[[str], object]:
    counts: dict[tuple[str, int], int] = {}
    monotonic = time.monotonic

    def hit(key: str) -> bool:
        k = (key, int(monotonic() // 60))
        c = counts.get(k, 0)
        if c < LIMIT:
            counts[k] = c + 1
            return True
        return False

    return hit


CONTENDERS: dict[str, Callable[[], Callable[[str], object]]] = {
    "keel GCRA + headers": lambda: keel_gcra(True),
    "keel GCRA (decision only)": lambda: keel_gcra(False),
    "keel sliding window + headers": lambda: keel_sliding(True),
    "limits moving-window": limits_strategy(strategies.MovingWindowRateLimiter),
    "limits fixed-window": limits_strategy(strategies.FixedWindowRateLimiter),
    "limits sliding-window-counter": limits_strategy(strategies.SlidingWindowCounterRateLimiter),
    "pure-Python dict fixed window (floor)": dict_floor,
}


def measure(make: Callable[[], Callable[[str], object]], keys: list[str]) -> float:
    hit = make()
    for k in keys[:KEYS]:  # warm: every key exists
        hit(k)
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for k in keys:
            hit(k)
        return (time.perf_counter_ns() - t0) / len(keys)
    finally:
        gc.enable()


def _shared_worker(path: str, keys: list[str], start, out) -> None:
    limiter = keel.RateLimiter(LIMIT, 60.0, shared_path=path, max_keys=2 * KEYS)
    hit = limiter.check
    start.wait()
    t0 = time.perf_counter()
    for k in keys:
        hit(k)
    out.put((len(keys), time.perf_counter() - t0))


def shared_rate(processes: int, keys: list[str]) -> float:
    """Aggregate host-shared decisions/s of `processes` processes hitting one state file."""
    import multiprocessing
    import os
    import tempfile

    ctx = multiprocessing.get_context("spawn")
    path = os.path.join(tempfile.mkdtemp(prefix="keel-rl-bench-"), "state")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_shared_worker, args=(path, keys, start, out)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every worker import keel and open the file
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    os.remove(path)
    # Wall time of the slowest worker: all ran concurrently from the same start signal.
    return sum(n for n, _ in results) / max(t for _, t in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    names = [f"198.51.{i // 256}.{i % 256}" for i in range(KEYS)]
    keys = [names[i % KEYS] for i in range(args.requests)]
    assert args.requests // KEYS < LIMIT, "every request must be allowed"

    samples: dict[str, list[float]] = {n: [] for n in CONTENDERS}
    for _ in range(args.rounds):
        for name, make in CONTENDERS.items():
            samples[name].append(measure(make, keys))
    med = {n: statistics.median(v) for n, v in samples.items()}
    base = med["keel GCRA + headers"]
    print(
        f"median ns per decision over {args.rounds} rounds, {args.requests} requests over "
        f"{KEYS} keys, limit {LIMIT}/min; (x) = time / keel GCRA + headers"
    )
    print("| contender | ns/decision | relative |")
    print("|---|---|---|")
    for n in CONTENDERS:
        print(f"| {n} | {med[n]:.0f} | {med[n] / base:.2f}x |")
    fastest_limits = min(v for n, v in med.items() if n.startswith("limits"))
    print()
    print(f"keel GCRA + headers vs fastest limits strategy: {fastest_limits / base:.1f}x faster")
    print(f"keel GCRA + headers vs dict floor: {med[next(reversed(CONTENDERS))] / base:.2f}x")

    print()
    print("host-shared mode (GCRA, one state file, decision only), aggregate decisions/s:")
    print("| processes | decisions/s | vs in-process, 1 process |")
    print("|---|---|---|")
    local = 1e9 / med["keel GCRA (decision only)"]
    print(f"| in-process, 1 | {local:,.0f} | 1.00x |")
    for n in (1, 2, 4):
        rates = [shared_rate(n, keys) for _ in range(3)]
        rate = statistics.median(rates)
        print(f"| host-shared, {n} | {rate:,.0f} | {rate / local:.2f}x |")


if __name__ == "__main__":
    main()
