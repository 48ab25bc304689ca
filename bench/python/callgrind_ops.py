"""Instructions per call of keel's hottest Python calls, counted by callgrind (deterministic).

For each operation the script runs itself under `valgrind --tool=callgrind` twice, with N calls
and with 0 calls, and prints (total(N) - total(0)) / N: interpreter start, imports and setup
cancel out; the Python loop around each call is included. Set PYTHONHASHSEED=0 (done here).

Run: .venv/bin/python bench/python/callgrind_ops.py [--python PATH]
(`--python` picks another interpreter, e.g. a venv with an older build, for a before/after pair.)

`--cache` counts the cache operations instead, for keel.Cache, cachebox.TTLCache and
cachetools.TTLCache (600 s TTL each) in the same loop over 1000 string keys: get-hit
(`g(k)`, `g = c.get`, present keys), get-miss (absent keys) and set (`c[k] = k`, present keys).
Each figure is also given net of the same loop around a dict (`d.get(k)`, `d[k] = k`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

OPS = {
    "verify_cached": 2000,
    "append": 200,
    "load50": 50,
    "shared_hit": 20000,
    "local_hit": 20000,
}


CACHE_N = 50_000
CACHES = ("keel.Cache", "cachebox.TTLCache", "cachetools.TTLCache", "dict")
CACHE_OPS = ("get-hit", "get-miss", "set")


def run_cache_op(name: str, op: str, n: int) -> None:
    keys = [f"user:{i}:profile" for i in range(1000)]
    absent = [f"absent:{i}" for i in range(1000)]
    if name == "keel.Cache":
        import keel

        c = keel.Cache(10_000, ttl=600.0)
    elif name == "cachebox.TTLCache":
        import cachebox

        c = cachebox.TTLCache(10_000, 600.0)
    elif name == "cachetools.TTLCache":
        import cachetools

        c = cachetools.TTLCache(10_000, ttl=600.0)
    else:
        c = {}
    for k in keys:
        c[k] = k
    g = c.get
    loop = (keys if op != "get-miss" else absent) * (n // 1000)
    if op == "set":
        for k in loop:
            c[k] = k
    else:
        for k in loop:
            g(k)


def run_op(op: str, n: int) -> None:
    if op.startswith("cache/"):
        _, name, cop = op.split("/")
        run_cache_op(name, cop, n)
        return
    import keel

    tmp = tempfile.mkdtemp()
    ring = keel.Keyring.generate()
    if op == "verify_cached":
        keys = keel.ApiKeys(os.path.join(tmp, "k.db"), ring, cache_ttl=3600.0)
        key, _ = keys.create("acme", "k", scopes=["chat:write"])
        keys.verify(key)
        for _ in range(n):
            keys.verify(key)
    elif op == "append":
        mem = keel.Memory(os.path.join(tmp, "m.db"), ring)
        mem.append("acme", "alice", "s1", "user", "warm up")
        for _ in range(n):
            mem.append("acme", "alice", "s1", "user", "hello there, how are you today?")
    elif op == "load50":
        mem = keel.Memory(os.path.join(tmp, "m.db"), ring)
        for _ in range(60):
            mem.append("acme", "alice", "s1", "user", "hello there, how are you today?")
        mem.history("acme", "alice", "s1", limit=50)
        for _ in range(n):
            mem.history("acme", "alice", "s1", limit=50)
    elif op in ("shared_hit", "local_hit"):
        shared = os.path.join(tmp, "rl") if op == "shared_hit" else None
        lim = keel.RateLimiter(10**9, 60, name="x", shared_path=shared)
        lim.check("warm")
        for i in range(n):
            lim.check("k%d" % (i % 1000))  # noqa: UP031 (the loop the published counts used)
    else:
        raise SystemExit(f"unknown operation {op!r}")


def instructions(python: str, op: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/cg.out",
                python,
                __file__,
                "--child",
                op,
                str(n),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if not m:
        raise SystemExit(f"callgrind printed no total for {op}:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cache", action="store_true", help="count the cache operations")
    ap.add_argument("--child", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_op(args.child[0], int(args.child[1]))
        return
    if args.cache:
        cache_table(args.python)
        return
    print(f"instructions per call ({args.python})")
    print("| call | N | instructions |")
    print("|---|---:|---:|")
    for op, n in OPS.items():
        per = (instructions(args.python, op, n) - instructions(args.python, op, 0)) // n
        print(f"| {op} | {n} | {per:,} |")


def cache_table(python: str) -> None:
    n = CACHE_N
    per: dict[tuple[str, str], float] = {}
    for op in CACHE_OPS:
        for name in CACHES:
            key = f"cache/{name}/{op}"
            per[name, op] = (instructions(python, key, n) - instructions(python, key, 0)) / n
    print(f"instructions per operation, {n} calls over 1000 str keys ({python})")
    print("raw = the loop iteration with the call; net = raw minus the same loop around a dict")
    print("| cache | " + " | ".join(f"{op} raw | {op} net" for op in CACHE_OPS) + " |")
    print("|---|" + "---:|" * (2 * len(CACHE_OPS)))
    for name in CACHES:
        cells = []
        for op in CACHE_OPS:
            raw = per[name, op]
            cells += [f"{raw:,.0f}", f"{raw - per['dict', op]:,.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
