"""The voice bot's latency and load numbers (``make bench-voicebot``; bounded, loopback only).

1. Latency: one uvicorn worker, the offline extractive responder paced like a model
   (``--word-delay`` seconds per word), espeak-ng speech on. ``--questions`` sequential chats;
   client-side time to first token, time to first audio, time to the full answer (the
   ``citations`` event, which follows the last token) and to ``done`` (the last audio), p50/p95,
   and how many answers had audio playing before their text was complete.
2. Load: locust (``examples/voicebot/locustfile.py``) headless with fixed users, spawn rate and
   run time against 1 and 2 uvicorn workers (chat with speech, and search; unpaced words):
   requests/s, p50/p95/p99 and failures per endpoint.

    PYTHONPATH=examples .venv/bin/python bench/python/bench_voicebot.py --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

import keel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

from voicebot.demo import setup  # noqa: E402
from voicebot.settings import Limits, init_home  # noqa: E402

QUESTIONS = [
    "How much is a day pass?",
    "Can I take my bike on the tram?",
    "When do the Night Owl buses run?",
    "Where is the lost and found office?",
    "How do I pay with my phone?",
    "What happens on New Year's Eve?",
    "What is the penalty fare?",
    "How do I book Riverton Access?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(home: Path, workers: int, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "voicebot.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log"],
        env={**os.environ, "VOICEBOT_HOME": str(home), **env, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "examples"), os.environ.get("PYTHONPATH")]))},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}")
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not become ready")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def new_home(limits: Limits) -> tuple[Path, str]:
    home = Path(tempfile.mkdtemp(prefix="voicebot-bench-"))
    init_home(home, limits)
    with open(os.devnull, "w") as null:
        key = setup(home, out=null)
    return home, key


def latency(n: int, word_delay: float) -> list[str]:
    home, key = new_home(Limits(per_ip=(100_000, 60.0), per_key=(100_000, 60.0)))
    marks: dict[str, list[float]] = {"first token": [], "first audio": [], "full answer": [],
                                     "last audio (done)": []}  # fmt: skip
    ahead = 0
    env = {"VOICEBOT_WORD_DELAY": str(word_delay)}
    with server(home, 1, env) as url:
        headers = {"Authorization": f"Bearer {key}"}
        for i in range(n):
            body = {"question": QUESTIONS[i % len(QUESTIONS)], "session": f"bench{i}"}
            seen: dict[str, float] = {}
            start = time.perf_counter()
            with httpx.stream("POST", url + "/chat", json=body, headers=headers,
                              timeout=120) as resp:  # fmt: skip
                resp.raise_for_status()
                parser = keel.SseParser()
                for chunk in resp.iter_bytes():
                    now = (time.perf_counter() - start) * 1000
                    for ev in parser.feed(chunk):
                        seen.setdefault(ev.event or "", now)
            marks["first token"].append(seen["token"])
            marks["first audio"].append(seen["audio"])
            marks["full answer"].append(seen["citations"])
            marks["last audio (done)"].append(seen["done"])
            ahead += seen["audio"] < seen["citations"]
    rows = [
        f"Latency: {n} sequential chats, 1 worker, extractive responder at {word_delay * 1000:g} "
        "ms/word, espeak-ng speech, client-side (loopback)",
        "",
        "| milestone | p50 ms | p95 ms |",
        "|---|---:|---:|",
    ]
    rows += [f"| {k} | {pct(v, 0.5):.0f} | {pct(v, 0.95):.0f} |" for k, v in marks.items()]
    gap = [f - a for a, f in zip(marks["first audio"], marks["full answer"])]
    rows += [
        "",
        f"First audio arrived before the full answer in {ahead}/{n} chats "
        f"(median lead {statistics.median(gap):.0f} ms).",
    ]
    return rows


def load(workers: int, users: int, spawn: int, seconds: int) -> list[list[str]]:
    home, _ = new_home(Limits(per_ip=(1_000_000, 60.0), per_key=(1_000_000, 60.0)))
    engine = keel.Engine(home / "keel.toml")
    keys = [
        engine.api_keys.create("bench", f"user{i}", scopes=["chat", "search"])[0]
        for i in range(users)
    ]
    env = {"VOICEBOT_WORD_DELAY": "0"}
    prefix = home / "locust"
    with server(home, workers, env) as url:
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "examples/voicebot/locustfile.py"),
             "--headless", "-H", url, "-u", str(users), "-r", str(spawn), "-t", f"{seconds}s",
             "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"],
            env={**os.environ, "VOICEBOT_LOAD_KEYS": ",".join(keys)},
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    out = []
    with open(f"{prefix}_stats.csv") as f:
        for row in csv.DictReader(f):
            out.append(
                [str(workers), row["Name"], row["Request Count"], row["Failure Count"],
                 f"{float(row['Requests/s']):.1f}", row["50%"], row["95%"], row["99%"]]
            )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--word-delay", type=float, default=0.03)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    print("\n".join(latency(args.questions, args.word_delay)))
    print()
    print(
        f"Load: locust, {args.users} users, spawn rate {args.spawn_rate}/s, {args.seconds} s, "
        "chat:search = 1:3, speech on, unpaced words"
    )
    print()
    print("| workers | endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for workers in (1, 2):
        for row in load(workers, args.users, args.spawn_rate, args.seconds):
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
