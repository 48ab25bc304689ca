"""API-key verification from Python: keel.ApiKeys (cached and uncached) beside a stdlib
baseline (hashlib SHA-256 of the key + a sqlite3 lookup by hash, the usual hand-rolled scheme),
uncached and with an `functools.lru_cache` in front (the fair partner of keel's cached row).

Same 1000 keys on each side; median µs per verification over ROUNDS interleaved rounds (each round
times every side once, in an order that rotates).
Run: .venv/bin/python bench/python/bench_auth.py [--keys 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keel


def stdlib_side(tmp: Path, n: int) -> tuple[Callable[[str], object], list[str]]:
    db = sqlite3.connect(tmp / "stdlib.db", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE keys (hash BLOB PRIMARY KEY, tenant TEXT, scopes TEXT)")
    plain = [f"sk_live_{secrets.token_urlsafe(24)}" for _ in range(n)]
    db.executemany(
        "INSERT INTO keys VALUES (?, 'acme', 'chat:write')",
        [(hashlib.sha256(k.encode()).digest(),) for k in plain],
    )
    db.commit()

    def verify(key: str) -> object:
        row = db.execute(
            "SELECT tenant, scopes FROM keys WHERE hash = ?",
            (hashlib.sha256(key.encode()).digest(),),
        ).fetchone()
        if row is None:
            raise PermissionError("unknown key")
        return row

    return verify, plain


def per_call_us(fn: Callable[[str], object], keys: list[str]) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for k in keys:
            fn(k)
        return (time.perf_counter_ns() - t0) / len(keys) / 1000
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="keel-auth-bench-"))
    keyring = keel.Keyring.generate()
    # Cached: a long TTL, warmed. Uncached: a fresh registry per round with an effectively
    # empty cache (1 entry), so every verification reads SQLite.
    cached = keel.ApiKeys(tmp / "keel.db", keyring, cache_ttl=3600, cache_entries=100_000)
    plain = [cached.create("acme", f"k{i}", scopes=["chat:write"])[0] for i in range(args.keys)]
    uncached = keel.ApiKeys(tmp / "keel.db", keyring, cache_ttl=0.001, cache_entries=1)
    stdlib, stdlib_keys = stdlib_side(tmp, args.keys)
    for k in plain:
        cached.verify(k)

    stdlib_cached = functools.lru_cache(maxsize=100_000)(stdlib)
    for k in stdlib_keys:
        stdlib_cached(k)

    sides: dict[str, tuple[Callable[[str], object], list[str]]] = {
        "keel cached": (cached.verify, plain),
        "stdlib cached": (stdlib_cached, stdlib_keys),
        "keel uncached": (uncached.verify, plain),
        "stdlib": (stdlib, stdlib_keys),
    }
    samples: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(args.rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            samples[name].append(per_call_us(*sides[name]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"median µs per verification over {args.rounds} rounds, {args.keys} keys")
    for k, v in samples.items():
        print(f"  {k}: " + " ".join(f"{x:.2f}" for x in v))
    print("| side | µs/verify | partner | partner / side |")
    print("|---|---|---|---|")
    rows = [
        ("keel cached", "keel.ApiKeys.verify, cached (HMAC + cache hit)", "stdlib cached"),
        (
            "stdlib cached",
            "stdlib + `functools.lru_cache` (a revoked key stays valid until evicted)",
            None,
        ),
        (
            "keel uncached",
            "keel.ApiKeys.verify, uncached (HMAC + SQLite read + last_used write)",
            "stdlib",
        ),
        ("stdlib", "stdlib: hashlib.sha256 + sqlite3 SELECT (no expiry/scopes/revocation)", None),
    ]
    for k, label, partner in rows:
        ratio = f"{med[partner] / med[k]:.2f}x" if partner else ""
        print(f"| {label} | {med[k]:.2f} | {partner or ''} | {ratio} |")


if __name__ == "__main__":
    main()
