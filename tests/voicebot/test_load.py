"""Correctness under concurrent load (small and bounded; the throughput numbers are
``make bench-voicebot``): two uvicorn workers behind one host-shared rate-limit state, many
concurrent chats and searches. Every key gets exactly its budget (no more, no less, across both
workers), no request fails with a 5xx, a revoked key is always refused, and every answered turn
is stored: the test counts the stored messages afterwards."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from conftest import OUTPUT, uvicorn_server
from voicebot.app import session_id
from voicebot.demo import setup
from voicebot.settings import Limits, init_home

import keel

KEYS = 4
BUDGET = 6  # requests per key per window (the window outlasts the test)
CHATS_PER_KEY = 9


def test_two_workers_keep_rate_limits_keys_and_memory_exact(tmp_path: Path):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    # A key's own limit shares the per_key limiter's window (host-shared state); an hour, so
    # nothing refills during the test.
    init_home(home, Limits(per_ip=(100_000, 3600.0), per_key=(100_000, 3600.0)))
    setup(home, out=open("/dev/null", "w"))  # noqa: SIM115 - index once, before the workers
    engine = keel.Engine(home / "keel.toml")
    keys = []
    for i in range(KEYS):
        key, _ = engine.api_keys.create(
            "load", f"user{i}", scopes=["chat", "search"], rate_limit=(BUDGET, 3600.0)
        )
        keys.append(key)
    revoked, info = engine.api_keys.create("load", "gone", scopes=["chat", "search"])
    engine.api_keys.revoke("load", info.id)

    env = {"VOICEBOT_TTS": "0", "VOICEBOT_WORD_DELAY": "0"}
    with uvicorn_server(home, workers=2, env=env, log=OUTPUT / "load-uvicorn.log") as url:

        def ask(job: tuple[int, int]) -> tuple[int, int, list[str]]:
            who, n = job
            headers = {"Authorization": f"Bearer {keys[who]}"}
            body = {"question": f"How much is a day pass? ({n})", "session": "load"}
            with httpx.stream(
                "POST", url + "/chat", json=body, headers=headers, timeout=60
            ) as resp:
                kinds = []
                if resp.status_code == 200:
                    parser = keel.SseParser()
                    for chunk in resp.iter_bytes():
                        kinds += [e.event for e in parser.feed(chunk)]
                else:
                    resp.read()
                return who, resp.status_code, kinds

        def refused(n: int) -> int:
            headers = {"Authorization": f"Bearer {revoked}"}
            return httpx.get(url + "/search?q=fare", headers=headers, timeout=30).status_code

        jobs = [(who, n) for n in range(CHATS_PER_KEY) for who in range(KEYS)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            revoked_statuses = list(pool.map(refused, range(8)))
            results = list(pool.map(ask, jobs))

    per_key = {who: Counter(s for w, s, _ in results if w == who) for who in range(KEYS)}
    summary = {str(k): dict(v) for k, v in per_key.items()}
    (OUTPUT / "load-summary.json").write_text(json.dumps(summary, indent=2))
    for who in range(KEYS):
        assert per_key[who] == Counter({200: BUDGET, 429: CHATS_PER_KEY - BUDGET}), summary
    assert revoked_statuses == [401] * 8
    for _, status, kinds in results:
        if status == 200:
            assert kinds[-1] == "done" and "citations" in kinds and "error" not in kinds

    # No lost turn: every answered chat stored its user and assistant message.
    for i in range(KEYS):
        stored = engine.memory.history("load", f"user{i}", session_id(f"user{i}", "load"), 1000)
        assert len(stored) == 2 * BUDGET
        assert [m.role for m in reversed(stored)] == ["user", "assistant"] * BUDGET
