"""A bounded locust load test of the voice bot: chat (the whole SSE stream read) and search.

    VOICEBOT_LOAD_KEYS=key1,key2,... locust -f examples/voicebot/locustfile.py --headless \\
        -H http://127.0.0.1:8000 -u 8 -r 4 -t 30s

Each simulated user takes one key (round robin) and its own conversation session. A chat
counts as failed unless the stream ends with a ``done`` event. ``make bench-voicebot`` runs it
through bench/python/bench_voicebot.py for 1 and 2 uvicorn workers.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid

from locust import HttpUser, between, task

QUESTIONS = [
    "How much is a day pass?",
    "Can I take my bike on the tram?",
    "When do the Night Owl buses run?",
    "Where is the lost and found office?",
    "How do I pay with my phone?",
    "Is the ferry running at night?",
    "What is the penalty fare?",
    "How do I book Riverton Access?",
]
SEARCHES = ["fare cap", "wheelchair ramp", "airport express", "marathon diversion", "bike share"]

_keys = itertools.cycle([k for k in os.environ.get("VOICEBOT_LOAD_KEYS", "").split(",") if k])


class VoiceBotUser(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {next(_keys)}"}
        self.session = uuid.uuid4().hex[:16]

    @task(1)
    def chat(self) -> None:
        body = {"question": random.choice(QUESTIONS), "session": self.session}
        # Not streamed: the recorded time is the whole answer, the last audio included.
        with self.client.post(
            "/chat", json=body, headers=self.headers, catch_response=True, name="/chat"
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            if b"event: done" not in resp.content[-4096:]:
                resp.failure("the stream did not end with a done event")
            else:
                resp.success()

    @task(3)
    def search(self) -> None:
        q = random.choice(SEARCHES)
        self.client.get(f"/search?q={q}&k=5", headers=self.headers, name="/search")
