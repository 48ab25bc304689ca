"""Conversation memory: keel vs LangChain's SQLChatMessageHistory vs plain stdlib sqlite3.

All three write to a SQLite file on the same disk, in the same run, interleaved round by round.
Measured, as medians over rounds:
- appends one at a time (messages/s), each its own committed transaction;
- appends in batches of 100 per call (messages/s), one transaction per batch;
- loading the last 50 messages of a 1000-message session (ms per load), reading every message's
  content and parsed metadata on every side, as a user would.
Every per-round sample is printed, so each paired ratio can be checked.

keel encrypts every content and metadata value (AES-256-SIV) and runs twice: at its default
durability (WAL, synchronous=NORMAL) and at synchronous=FULL. LangChain runs twice too: with
SQLAlchemy's SQLite defaults (rollback journal, synchronous=FULL), as a user gets it, and with
WAL + NORMAL set on every connection (keel's default durability), for a like-for-like row. The
stdlib baseline stores plaintext in the same table shape as keel, with WAL + NORMAL. Each side's
journal_mode and synchronous are printed as read back from the database.

Ratios are medians of same-round ratios: the sides run interleaved, so each ratio compares
measurements taken under the same disk and CPU conditions (fsync latency on a shared VM drifts
by 10x within a run).

LangChain has no "last N" query: `messages` loads the whole session, and `messages[-50:]` is how
its users take the tail, so that is what is timed.

Run: make dev && .venv/bin/python bench/python/bench_memory.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import sqlalchemy

import keel

warnings.filterwarnings("ignore", category=DeprecationWarning)
from langchain_community.chat_message_histories import SQLChatMessageHistory  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402

TENANT, USER = "bench-tenant", "bench-user"
CONTENT = (
    "Could you move my appointment to Thursday afternoon, ideally after three? "
    "If that does not work, Friday morning is fine too. Thanks! "
) * 2  # ~270 characters, a typical voice-bot turn


def text(i: int) -> str:
    return f"{CONTENT} (turn {i})"


def read_pragmas(path: Path) -> str:
    """journal_mode is stored in the file; read it from another process (keel links its own
    SQLite, and two SQLite copies must not open one file in one process)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    return out.stdout.strip()


SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Keel:
    def __init__(self, path: Path, synchronous: str) -> None:
        self.name = f"keel (encrypted, synchronous={synchronous.upper()})"
        self.path = path
        self.synchronous = synchronous.upper()
        self.mem = keel.Memory(path, keel.Keyring.generate(), synchronous=synchronous)

    def durability(self) -> str:
        # synchronous is per connection: keel sets it on every pooled connection (unit-tested
        # in src/store/tests.rs); journal_mode is read back from the file.
        return f"journal_mode={read_pragmas(self.path)}, synchronous={self.synchronous}"

    def append(self, session: str, i: int) -> None:
        self.mem.append(TENANT, USER, session, "user", text(i), {"turn": i})

    def append_batch(self, session: str, start: int, n: int) -> None:
        self.mem.append_many(
            TENANT,
            USER,
            session,
            [
                {"role": "user", "content": text(i), "metadata": {"turn": i}}
                for i in range(start, start + n)
            ],
        )

    def load_last(self, session: str, n: int) -> int:
        # Read what a user reads: every message's content and (parsed) metadata.
        msgs = self.mem.history(TENANT, USER, session, limit=n)
        assert sum(len(m.content) + len(m.metadata or {}) for m in msgs) > 0
        return len(msgs)


class LangChain:
    name = "LangChain SQLChatMessageHistory"

    def __init__(self, path: Path, wal: bool = False) -> None:
        self.wal = wal
        if wal:
            # Same durability as keel's default, for a like-for-like row: every connection
            # SQLAlchemy opens gets WAL + synchronous=NORMAL.
            self.name = "LangChain SQLChatMessageHistory (WAL, NORMAL)"
            engine = sqlalchemy.create_engine(f"sqlite:///{path}")

            @sqlalchemy.event.listens_for(engine, "connect")
            def _pragmas(dbapi_con, _record) -> None:
                dbapi_con.execute("PRAGMA journal_mode = WAL")
                dbapi_con.execute("PRAGMA synchronous = NORMAL")

            self.connection: object = engine
        else:
            self.connection = f"sqlite:///{path}"
        self.histories: dict[str, SQLChatMessageHistory] = {}
        self.engine = self._history("probe").engine

    def _history(self, session: str) -> SQLChatMessageHistory:
        h = self.histories.get(session)
        if h is None:
            h = SQLChatMessageHistory(session_id=session, connection=self.connection)
            self.histories[session] = h
        return h

    def durability(self) -> str:
        with self.engine.connect() as c:
            jm = c.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = c.exec_driver_sql("PRAGMA synchronous").scalar()
        how = "set on connect" if self.wal else "SQLAlchemy defaults"
        return f"journal_mode={jm}, synchronous={SYNC_NAMES.get(sync, sync)} ({how})"

    def append(self, session: str, i: int) -> None:
        self._history(session).add_message(
            HumanMessage(content=text(i), additional_kwargs={"turn": i})
        )

    def append_batch(self, session: str, start: int, n: int) -> None:
        self._history(session).add_messages(
            [
                AIMessage(content=text(i), additional_kwargs={"turn": i})
                for i in range(start, start + n)
            ]
        )

    def load_last(self, session: str, n: int) -> int:
        msgs = self._history(session).messages[-n:]
        assert sum(len(m.content) + len(m.additional_kwargs) for m in msgs) > 0
        return len(msgs)


class Baseline:
    name = "stdlib sqlite3 (plaintext, WAL, NORMAL)"

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.con.executescript(
            """
            PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
            CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, session_key TEXT NOT NULL,
                created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                UNIQUE (tenant_id, session_key));
            CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                tenant_id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
                metadata TEXT, tokens INTEGER NOT NULL, created_at INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, id);
            """
        )

    def durability(self) -> str:
        jm = self.con.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.con.execute("PRAGMA synchronous").fetchone()[0]
        return f"journal_mode={jm}, synchronous={SYNC_NAMES.get(sync, sync)}"

    def _insert(self, session: str, rows: list[tuple[str, str, int]]) -> None:
        now = int(time.time() * 1000)
        c = self.con
        c.execute("BEGIN IMMEDIATE")
        sid = c.execute(
            "INSERT INTO sessions (tenant_id, user_id, session_key, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, session_key) "
            "DO UPDATE SET updated_at = excluded.updated_at RETURNING id",
            (TENANT, USER, session, now, now),
        ).fetchone()[0]
        c.executemany(
            "INSERT INTO messages (session_id, tenant_id, role, content, metadata, tokens, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (sid, TENANT, role, content, f'{{"turn": {i}}}', len(content) // 4, now)
                for role, content, i in rows
            ],
        )
        c.execute("COMMIT")

    def append(self, session: str, i: int) -> None:
        self._insert(session, [("user", text(i), i)])

    def append_batch(self, session: str, start: int, n: int) -> None:
        self._insert(session, [("user", text(i), i) for i in range(start, start + n)])

    def load_last(self, session: str, n: int) -> int:
        rows = self.con.execute(
            "SELECT m.id, m.role, m.content, m.metadata, m.tokens, m.created_at "
            "FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.tenant_id = ? AND s.user_id = ? AND s.session_key = ? "
            "ORDER BY m.id DESC LIMIT ?",
            (TENANT, USER, session, n),
        ).fetchall()
        assert sum(len(r[2]) + len(json.loads(r[3]) if r[3] else {}) for r in rows) > 0
        return len(rows)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(sides: list, rounds: int, singles: int, batches: int, loads: int) -> dict:
    """Rounds outer, sides inner (interleaved, starting with another side each round), so a noisy
    neighbour hits every side alike."""
    samples = {side.name: {"single": [], "batch": [], "load_ms": []} for side in sides}
    for side in sides:  # a 1000-message session to read from
        for k in range(10):
            side.append_batch("load", k * 100, 100)
        assert side.load_last("load", 50) == 50
    for r in range(rounds):
        for j in range(len(sides)):
            side = sides[(r + j) % len(sides)]
            got = samples[side.name]
            s, b = f"single-{r}", f"batch-{r}"
            dt = timed(lambda side=side, s=s: [side.append(s, i) for i in range(singles)])
            got["single"].append(singles / dt)
            dt = timed(
                lambda side=side, b=b: [side.append_batch(b, k * 100, 100) for k in range(batches)]
            )
            got["batch"].append(batches * 100 / dt)
            per = [timed(lambda side=side: side.load_last("load", 50)) * 1000 for _ in range(loads)]
            got["load_ms"].append(statistics.median(per))
    out = {}
    for name, got in samples.items():
        out[name] = {k: statistics.median(v) for k, v in got.items()}
        out[name]["range"] = {k: (min(v), max(v)) for k, v in got.items()}
        out[name]["samples"] = got
    return out


def paired(a: dict, b: dict, key: str, invert: bool = False) -> float:
    """Median over rounds of a/b measured in the same round (same disk and CPU conditions):
    steadier than a ratio of medians when the machine's fsync latency drifts during the run."""
    xs, ys = a["samples"][key], b["samples"][key]
    return statistics.median((y / x) if invert else (x / y) for x, y in zip(xs, ys))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer, smaller rounds, for a smoke run")
    ap.add_argument("--rounds", type=int, default=7, help="rounds (medians are over these)")
    args = ap.parse_args()
    rounds, singles, batches, loads = (2, 100, 3, 10) if args.quick else (args.rounds, 300, 10, 50)

    root = Path(tempfile.mkdtemp(prefix="keel-bench-memory-", dir=os.getcwd()))
    try:
        sides = [
            Keel(root / "keel-normal.db", "normal"),
            Keel(root / "keel-full.db", "full"),
            LangChain(root / "langchain.db"),
            LangChain(root / "langchain-wal.db", wal=True),
            Baseline(root / "baseline.db"),
        ]
        machine = f"{os.uname().sysname}, {os.cpu_count()} cpus"
        print(f"keel {keel.__version__}; files on {root} ({machine})")
        print(
            f"{rounds} rounds: {singles} single appends, {batches}x100 batched, "
            f"{loads} loads of the last 50 of 1000 messages; medians\n"
        )
        results = run(sides, rounds, singles, batches, loads)
        for side in sides:
            print(f"- {side.name}: {side.durability()}")
        print()
        header = f"{'':46} {'append 1/call':>14} {'append 100/call':>16} {'load last 50':>13}"
        print(header)
        print(f"{'':46} {'msg/s':>14} {'msg/s':>16} {'ms':>13}")
        for name, r in results.items():
            print(f"{name:46} {r['single']:>14,.0f} {r['batch']:>16,.0f} {r['load_ms']:>13.3f}")
        print("\nspread over rounds (min .. max):")
        for name, r in results.items():
            sr, br, lr = (r["range"][k] for k in ("single", "batch", "load_ms"))
            print(
                f"  {name:46} {sr[0]:,.0f} .. {sr[1]:,.0f} | {br[0]:,.0f} .. {br[1]:,.0f} | "
                f"{lr[0]:.3f} .. {lr[1]:.3f} ms"
            )
        print("\nper-round samples (append 1/call msg/s | append 100/call msg/s | load ms):")
        for name, r in results.items():
            got = r["samples"]
            print(f"  {name}")
            print("    " + " ".join(f"{x:,.0f}" for x in got["single"]))
            print("    " + " ".join(f"{x:,.0f}" for x in got["batch"]))
            print("    " + " ".join(f"{x:.3f}" for x in got["load_ms"]))
        lc = results[LangChain.name]
        print("\nratios, median over rounds of same-round ratios (higher is better for keel):")
        base = results[Baseline.name]
        for side in sides[:2]:
            r = results[side.name]
            lc_wal = results[sides[3].name]
            pairs = (("LangChain", lc), ("LangChain WAL", lc_wal), ("stdlib baseline", base))
            for label, other in pairs:
                print(
                    f"  {side.name} vs {label}: appends x{paired(r, other, 'single'):.1f} "
                    f"(1/call), x{paired(r, other, 'batch'):.1f} (100/call), "
                    f"loads x{paired(r, other, 'load_ms', invert=True):.2f}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
