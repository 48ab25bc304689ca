"""keel's PostgreSQL memory vs LangChain's SQLChatMessageHistory (SQLAlchemy + psycopg) and
PostgresChatMessageHistory (langchain-postgres), on one throwaway PostgreSQL server with
synchronous_commit = on (every acknowledged append is flushed: equal durability).

Measures appends/s with 1 and 32 concurrent conversations (one thread each, every append a
call that returns once its message is durable) and the time to load a conversation's last 50
messages. All three run in this interpreter, from Python, threads on every side: keel as
`keel.Engine` with a `postgres://` database URL (`engine.memory`, pool of 32; concurrent appends
share transactions, group commit), LangChain's classes as their users call them. With `--rust`,
keel also runs as the release build of examples/bench_pg_memory.rs (the Rust door).

    make dev   # keel into .venv; then, once: .venv/bin/pip install 'psycopg[binary]==3.3.9' \
               #     langchain-postgres==0.0.19
    .venv/bin/python bench/postgres_memory.py  # as root: the server runs as `nobody`
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parent
KEEL = ROOT / "target" / "release" / "examples" / "bench_pg_memory"
TOTAL = {1: 400, 32: 3200}


def as_nobody() -> None:
    pw = pwd.getpwnam("nobody")
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


class Server:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keel-pgbench-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.data.mkdir(mode=0o700)
        pw = pwd.getpwnam("nobody")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        run = {"preexec_fn": as_nobody, "check": True, "capture_output": True, "cwd": self.data}
        subprocess.run(
            [BIN / "initdb", "-U", "keel", "--auth=trust", "-D", self.data, "--no-sync"], **run
        )
        opts = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c synchronous_commit=on -c max_connections=200"
        )
        subprocess.run(
            [BIN / "pg_ctl", "-w", "-o", opts, "-l", self.data / "log", "-D", self.data, "start"],
            **run,
        )

    def url(self, db: str) -> str:
        return f"postgres://keel@127.0.0.1:{self.port}/{db}"

    def create(self, db: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {db}")
        return self.url(db)

    def stop(self) -> None:
        subprocess.run(
            [BIN / "pg_ctl", "-D", self.data, "-m", "fast", "stop"],
            preexec_fn=as_nobody,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def threaded(n: int, per: int, append) -> float:
    barrier = threading.Barrier(n + 1)

    def work(c: int) -> None:
        barrier.wait()
        for i in range(per):
            append(c, f"message {i} of conversation {c}: some typical chat text")

    threads = [threading.Thread(target=work, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return n * per / (time.perf_counter() - started)


def median_ms(f, rounds: int = 30) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def sql_chat(url: str, n: int) -> tuple[float, float]:
    from langchain_community.chat_message_histories import SQLChatMessageHistory
    from langchain_core.messages import HumanMessage
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgres://", "postgresql+psycopg://"), pool_size=n)
    hist = [SQLChatMessageHistory(f"conv-{c}", connection=engine) for c in range(n)]
    rate = threaded(n, TOTAL[n] // n, lambda c, t: hist[c].add_message(HumanMessage(t)))
    return rate, median_ms(lambda: hist[0].messages[-50:])


def pg_chat(url: str, n: int) -> tuple[float, float]:
    import uuid

    import psycopg
    from langchain_core.messages import HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    url = url.replace("postgres://", "postgresql://")
    with psycopg.connect(url) as c:
        PostgresChatMessageHistory.create_tables(c, "chat_history")
    conns = [psycopg.connect(url) for _ in range(n)]
    ids = [str(uuid.uuid4()) for _ in range(n)]
    hist = [
        PostgresChatMessageHistory("chat_history", ids[c], sync_connection=conns[c])
        for c in range(n)
    ]
    rate = threaded(n, TOTAL[n] // n, lambda c, t: hist[c].add_messages([HumanMessage(t)]))
    return rate, median_ms(lambda: hist[0].get_messages()[-50:])


def keel_py(url: str, n: int) -> tuple[float, float]:
    import keel

    conf = Path(tempfile.mkdtemp(prefix="keel-pgbench-conf-")) / "keel.toml"
    conf.write_text(f'[database]\nurl = "{url}"\npool_size = {max(n, 2)}\n')
    os.environ["KEEL_KEYRING"] = f"1:{keel.Keyring.generate_key()}"
    try:
        mem = keel.Engine(conf).memory
    finally:
        del os.environ["KEEL_KEYRING"]
        shutil.rmtree(conf.parent, ignore_errors=True)

    def append(c: int, t: str) -> None:
        mem.append("bench", "user", f"conv-{c}", "user", t)

    rate = threaded(n, TOTAL[n] // n, append)
    return rate, median_ms(lambda: mem.history("bench", "user", "conv-0", limit=50))


def keel(url: str, n: int) -> tuple[float, float]:
    out = subprocess.run(
        [KEEL, url, str(n), str(TOTAL[n])], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(kv.split("=") for kv in out.split()[1:])
    return float(fields["appends_per_s"]), float(fields["last50_median_ms"])


def main() -> None:
    sides = [
        ("keel (Python)", keel_py),
        ("SQLChatMessageHistory", sql_chat),
        ("PostgresChatMessageHistory", pg_chat),
    ]
    if "--rust" in sys.argv:
        if not KEEL.exists():
            sys.exit(f"build it first: cargo build --release --example bench_pg_memory ({KEEL})")
        sides.insert(1, ("keel (Rust)", keel))
    server = Server()
    try:
        rows = []
        for n in (1, 32):
            for name, f in sides:
                db = f"b_{name.split()[0].lower()}_{len(rows)}_{n}"
                rate, load = f(server.create(db), n)
                rows.append((n, name, rate, load))
                print(
                    f"{n:>2} conversations  {name:<28} {rate:>9.0f} appends/s  "
                    f"last 50: {load:.2f} ms",
                    flush=True,
                )
        print()
        print("| conversations | implementation | appends/s | last 50 (median ms) |")
        print("|---|---|---|---|")
        for n, name, rate, load in rows:
            print(f"| {n} | {name} | {rate:.0f} | {load:.2f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
