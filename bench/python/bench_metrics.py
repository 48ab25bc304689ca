"""The cost of keel's metrics on the hot paths (docs/benchmarks.md, "Telemetry cost I"): metrics
on vs off in one build, and optionally against another build (--before-python, e.g. a venv with
a build that has no metrics at all), on a cache get that hits and a rate-limit decision, plus two
instrumented operations for scale. Two measures:

- callgrind instructions per call: the script runs itself under `valgrind --tool=callgrind`
  with N calls and with 0 calls and prints (total(N) - total(0)) / N (deterministic; the Python
  loop around the call is included; PYTHONHASHSEED=0);
- wall-clock: the median of 7 timeit repeats, ns per call (noisy on a loaded machine).

Run: .venv/bin/python bench/python/bench_metrics.py [--python PY] [--before-python PY]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

OPS = {"cache_get_hit": 20000, "ratelimit_hit": 20000, "verify_cached": 2000, "append": 200}


def setup(op: str):
    """Returns a zero-argument callable doing one `op`."""
    import keel

    tmp = tempfile.mkdtemp()
    if op == "cache_get_hit":
        cache = (
            keel.Cache(1000, name="bench") if hasattr(keel, "metrics_text") else keel.Cache(1000)
        )
        cache["k"] = "v"
        return lambda: cache.get("k")
    if op == "ratelimit_hit":
        lim = keel.RateLimiter(10**9, 3600, name="bench")
        return lambda: lim.hit("k")
    ring = keel.Keyring.generate()
    if op == "verify_cached":
        keys = keel.ApiKeys(os.path.join(tmp, "k.db"), ring, cache_ttl=3600.0)
        key, _ = keys.create("acme", "k")
        keys.verify(key)
        return lambda: keys.verify(key)
    if op == "append":
        mem = keel.Memory(os.path.join(tmp, "m.db"), ring)
        return lambda: mem.append("acme", "alice", "s1", "user", "hello there")
    raise SystemExit(f"unknown operation {op!r}")


def set_mode(mode: str) -> None:
    import keel

    if hasattr(keel, "set_metrics_enabled"):
        keel.set_metrics_enabled(mode != "off")


def child(op: str, mode: str, n: int) -> None:
    set_mode(mode)
    call = setup(op)
    call()
    for _ in range(n):
        call()


def instructions(python: str, op: str, mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__,
             "--child", op, mode, str(n)],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        with open(out) as f:
            m = re.search(r"^summary:\s+(\d+)", f.read(), re.M)
        assert m, "no callgrind summary"
        return int(m.group(1))


def per_call_instructions(python: str, op: str, mode: str) -> float:
    n = OPS[op]
    return (instructions(python, op, mode, n) - instructions(python, op, mode, 0)) / n


def wall_ns(python: str, op: str, mode: str) -> float:
    here = os.path.dirname(os.path.abspath(__file__))
    n = OPS[op] * 5
    code = (
        f"import sys, timeit, statistics; sys.path.insert(0, {here!r}); "
        f"import bench_metrics as b; b.set_mode({mode!r}); call = b.setup({op!r}); call(); "
        f"print(statistics.median(timeit.repeat(call, number={n}, repeat=7)) / {n} * 1e9)"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("OP", "MODE", "N"))
    parser.add_argument("--python", default=sys.executable, help="the build measured on and off")
    parser.add_argument("--before-python", help="an interpreter with another keel build")
    parser.add_argument("--no-callgrind", action="store_true")
    args = parser.parse_args()
    if args.child:
        op, mode, n = args.child
        child(op, mode, int(n))
        return 0
    columns = [("off", args.python, "off"), ("on", args.python, "on")]
    if args.before_python:
        columns.insert(0, ("before", args.before_python, "on"))
    head = " | ".join(f"{name} ns" for name, _, _ in columns)
    if not args.no_callgrind:
        head += " | " + " | ".join(f"{name} instr" for name, _, _ in columns)
    print(f"| operation | {head} |")
    print("|---" * (1 + len(head.split(" | "))) + "|")
    for op in OPS:
        cells = [f"{wall_ns(py, op, mode):.0f}" for _, py, mode in columns]
        if not args.no_callgrind:
            cells += [f"{per_call_instructions(py, op, mode):.0f}" for _, py, mode in columns]
        print(f"| {op} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
