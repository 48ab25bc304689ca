"""Conversation memory under concurrent writers: keel (group commit) vs LangChain's
SQLChatMessageHistory, on SQLite files on the same disk, in the same run, interleaved.

N conversations (1, 8, 32), one writer thread each, append one message per call for a fixed
time; acknowledged appends/s = appends that returned, over the time. keel runs also as 4
processes x 8 threads (32 conversations) on one file. Durability is equal on both sides:
- FULL: WAL + synchronous=FULL on every connection (keel: `synchronous="full"`; LangChain: set on
  connect), every acknowledged append is on disk;
- NORMAL: WAL + synchronous=NORMAL (keel's default; LangChain set on connect).
The appends/s cells run writers only. A separate cell runs the 32 writers again with one more
thread of the same process loading the last 50 messages of a 1000-message conversation every
50 ms (at most 20 loads/s, as an application would: a tight loop would only measure who wins
the CPU) (keel: `history(limit=50)`; LangChain: `messages[-50:]`, it has no "last N" query); its
median load time is the "last-50 load" column.

Medians over rounds; ratios are medians of same-round ratios (the sides run interleaved, so each
ratio compares measurements taken under the same disk and CPU conditions).

Run: make dev && .venv/bin/python bench/python/bench_memory_concurrent.py [--rounds 3] [--secs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import sqlalchemy

import keel

warnings.filterwarnings("ignore", category=DeprecationWarning)
from bench_memory import CONTENT, TENANT, USER  # noqa: E402  (the same message on both benches)
from langchain_community.chat_message_histories import SQLChatMessageHistory  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402

LEVELS = (1, 8, 32)


def text(i: int) -> str:
    return f"{CONTENT} (turn {i})"


class Keel:
    def __init__(self, path: Path, synchronous: str, keys: str) -> None:
        self.kind = "keel"
        self.path, self.synchronous, self.keys = path, synchronous, keys
        self.mem = keel.Memory(path, keel.Keyring.parse(keys), synchronous=synchronous)

    def appender(self, session: str):
        mem = self.mem

        def append(i: int) -> None:
            mem.append(TENANT, USER, session, "user", text(i), {"turn": i})

        return append

    def fill(self, session: str, n: int) -> None:
        for k in range(0, n, 100):
            self.mem.append_many(
                TENANT,
                USER,
                session,
                [{"role": "user", "content": text(i)} for i in range(k, k + 100)],
            )

    def load_last(self, session: str, n: int) -> int:
        msgs = self.mem.history(TENANT, USER, session, limit=n)
        assert sum(len(m.content) for m in msgs) > 0
        return len(msgs)


class LangChain:
    def __init__(self, path: Path, synchronous: str) -> None:
        self.kind = "langchain"
        # A pool as large as the writers (SQLAlchemy's default is 5 + 10 overflow), and
        # SQLite's own busy wait long enough that no writer fails on "database is locked".
        engine = sqlalchemy.create_engine(
            f"sqlite:///{path}", pool_size=40, connect_args={"timeout": 60}
        )

        @sqlalchemy.event.listens_for(engine, "connect")
        def _pragmas(dbapi_con, _record) -> None:
            dbapi_con.execute("PRAGMA journal_mode = WAL")
            dbapi_con.execute(f"PRAGMA synchronous = {synchronous.upper()}")

        self.engine = engine

    def _history(self, session: str) -> SQLChatMessageHistory:
        return SQLChatMessageHistory(session_id=session, connection=self.engine)

    def appender(self, session: str):
        h = self._history(session)

        def append(i: int) -> None:
            h.add_message(HumanMessage(content=text(i), additional_kwargs={"turn": i}))

        return append

    def fill(self, session: str, n: int) -> None:
        h = self._history(session)
        for k in range(0, n, 100):
            h.add_messages([HumanMessage(content=text(i)) for i in range(k, k + 100)])

    def load_last(self, session: str, n: int) -> int:
        msgs = self._history(session).messages[-n:]
        assert sum(len(m.content) for m in msgs) > 0
        return len(msgs)


def write_for(side, sessions: list[str], secs: float, reader: bool) -> tuple[int, float, float]:
    """One writer thread per session for `secs`; returns (acknowledged appends, seconds, median
    load ms of the reader thread or nan)."""
    start, stop = threading.Barrier(len(sessions) + 1), threading.Event()
    counts = [0] * len(sessions)
    loads: list[float] = []

    def writer(k: int, session: str) -> None:
        append = side.appender(session)
        start.wait()
        i = 0
        while not stop.is_set():
            append(i)
            i += 1
        counts[k] = i

    def read() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            side.load_last("load", 50)
            loads.append((time.perf_counter() - t0) * 1000)
            stop.wait(0.05)

    threads = [threading.Thread(target=writer, args=(k, s)) for k, s in enumerate(sessions)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    r = threading.Thread(target=read) if reader else None
    if r:
        r.start()
    time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if r:
        r.join()
    return sum(counts), elapsed, statistics.median(loads) if loads else float("nan")


def _process_worker(path: str, synchronous: str, keys: str, tag: str, n: int, secs: float, go, q):
    side = Keel(Path(path), synchronous, keys)
    sessions = [f"{tag}-{k}" for k in range(n)]
    for s in sessions:  # sessions exist before the clock starts, as in the thread runs
        side.appender(s)(-1)
    go.wait()
    q.put(write_for(side, sessions, secs, reader=False)[:2])


def processes(path: Path, synchronous: str, keys: str, tag: str, secs: float) -> float:
    """4 processes x 8 writer threads on one file; acknowledged appends/s."""
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_process_worker,
            args=(str(path), synchronous, keys, f"{tag}-p{p}", 8, secs, go, q),
        )
        for p in range(4)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every child open the file (not a measurement)
    go.set()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return sum(c for c, _ in got) / max(e for _, e in got)


def count_only(kind: str, n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="keel-bench-memcount-"))
    try:
        if kind == "keel":
            side = Keel(root / "k.db", "normal", f"1:{keel.Keyring.generate_key()}")
        else:
            side = LangChain(root / "l.db", "normal")
        appends = [side.appender(f"s{k}") for k in range(32)]
        for append in appends:
            append(-1)
        for i in range(n):
            for append in appends:
                append(i)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=2.0, help="seconds each cell runs")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s, for a smoke run")
    ap.add_argument(
        "--count",
        nargs=2,
        metavar=("SIDE", "N"),
        help="for callgrind: one thread appends N rounds to 32 conversations (keel|langchain, "
        "WAL + NORMAL) after one warm-up append each, and exits; instructions per append = "
        "(count at N - count at 0) / (32 N)",
    )
    args = ap.parse_args()
    if args.count:
        count_only(args.count[0], int(args.count[1]))
        return
    rounds, secs = (1, 1.0) if args.quick else (args.rounds, args.secs)
    root = Path(tempfile.mkdtemp(prefix="keel-bench-memconc-", dir=os.getcwd()))
    try:
        samples: dict[tuple[str, str, str], list[float]] = {}
        sides = {}
        for sync in ("full", "normal"):
            keys = f"1:{keel.Keyring.generate_key()}"
            sides[("keel", sync)] = Keel(root / f"keel-{sync}.db", sync, keys)
            sides[("langchain", sync)] = LangChain(root / f"lc-{sync}.db", sync)
        for side in sides.values():
            side.fill("load", 1000)
            assert side.load_last("load", 50) == 50
        print(f"keel {keel.__version__}; {os.cpu_count()} cpus; files on {root}")
        print(f"{rounds} rounds of {secs} s per cell; one writer thread per conversation\n")
        for r in range(rounds):
            order = list(sides.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for (kind, sync), side in order:
                for n in LEVELS:
                    sessions = [f"r{r}-{kind}-{n}-{k}" for k in range(n)]
                    count, elapsed, _ = write_for(side, sessions, secs, reader=False)
                    samples.setdefault((kind, sync, str(n)), []).append(count / elapsed)
                sessions = [f"r{r}-{kind}-load-{k}" for k in range(32)]
                _, _, load = write_for(side, sessions, secs, reader=True)
                samples.setdefault((kind, sync, "load"), []).append(load)
                if kind == "keel":
                    rate = processes(side.path, sync, side.keys, f"r{r}-proc", secs)
                    samples.setdefault((kind, sync, "4x8"), []).append(rate)
        med = {k: statistics.median(v) for k, v in samples.items()}

        def paired(a, b, invert=False):
            xs, ys = samples[a], samples[b]
            return statistics.median((y / x) if invert else (x / y) for x, y in zip(xs, ys))

        print(
            f"{'':38} {'1 conv':>9} {'8 conv':>9} {'32 conv':>9} {'4 proc x 8':>11} "
            f"{'last-50 load':>13}"
        )
        print(
            f"{'':38} {'appends/s':>9} {'appends/s':>9} {'appends/s':>9} {'appends/s':>11} "
            f"{'ms (32 writ.)':>13}"
        )
        for sync in ("full", "normal"):
            for kind, label in (("keel", "keel"), ("langchain", "LangChain SQLChatMessageHistory")):
                row = f"{label + ' (WAL, ' + sync.upper() + ')':38}"
                for n in LEVELS:
                    row += f" {med[(kind, sync, str(n))]:>9,.0f}"
                four = med.get((kind, sync, "4x8"))
                row += f" {four:>11,.0f}" if four else f" {'-':>11}"
                row += f" {med[(kind, sync, 'load')]:>13.2f}"
                print(row)
        print("\nkeel / LangChain, median of same-round ratios:")
        for sync in ("full", "normal"):
            parts = [
                f"{n} conv x{paired(('keel', sync, str(n)), ('langchain', sync, str(n))):.1f}"
                for n in LEVELS
            ]
            parts.append(
                "4 proc x 8 vs 32 threads "
                f"x{paired(('keel', sync, '4x8'), ('langchain', sync, '32')):.1f}"
            )
            parts.append(
                "last-50 load under 32 writers "
                f"x{paired(('keel', sync, 'load'), ('langchain', sync, 'load'), invert=True):.1f}"
            )
            print(f"  {sync.upper():6}: " + ", ".join(parts))
        print("\nper-round samples:")
        for key, v in sorted(samples.items()):
            print(f"  {'/'.join(key):22} " + " ".join(f"{x:,.1f}" for x in v))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
