"""Instructions per call of keel's hottest Python calls, counted by callgrind (deterministic).

For each operation the script runs itself under `valgrind --tool=callgrind` twice, with N calls
and with 0 calls, and prints (total(N) - total(0)) / N: interpreter start, imports and setup
cancel out; the Python loop around each call is included. Set PYTHONHASHSEED=0 (done here).

Run: .venv/bin/python bench/python/callgrind_ops.py [--python PATH]
(`--python` picks another interpreter, e.g. a venv with an older build, for a before/after pair.)
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


def run_op(op: str, n: int) -> None:
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
    ap.add_argument("--child", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_op(args.child[0], int(args.child[1]))
        return
    print(f"instructions per call ({args.python})")
    print("| call | N | instructions |")
    print("|---|---:|---:|")
    for op, n in OPS.items():
        per = (instructions(args.python, op, n) - instructions(args.python, op, 0)) // n
        print(f"| {op} | {n} | {per:,} |")


if __name__ == "__main__":
    main()
