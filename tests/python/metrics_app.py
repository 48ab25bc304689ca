"""A small FastAPI app for the Prometheus end-to-end test (test_prometheus_e2e.py): keel's
primitives behind one chat route, keel's metrics at /metrics (keel.fastapi.metrics_route) and,
through the prometheus_client collector, at /pc-metrics. Run with uvicorn; KEEL_E2E_DIR names a
scratch directory for its databases."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException
from prometheus_client import make_asgi_app

import keel
import keel.fastapi
import keel.prometheus

DIR = Path(os.environ["KEEL_E2E_DIR"])
keyring = keel.Keyring.generate()
memory = keel.Memory(DIR / "memory.db", keyring)
api_keys = keel.ApiKeys(DIR / "keys.db", keyring)
limiter = keel.RateLimiter(3, 3600, name="e2e_api")
answers = keel.Cache(100, name="e2e_answers")
index = keel.BM25Index()
index.add_many(
    [
        ("refunds", "Refunds are paid within 14 days of the return."),
        ("shipping", "Shipping takes 3 to 5 working days."),
        ("hours", "The support line is open from 9 to 17."),
    ]
)

app = FastAPI()
# The two lines of an app without a /metrics route ...
app.add_route("/metrics", keel.fastapi.metrics_route, include_in_schema=False)
# ... and the two of an app that serves prometheus_client's registry already.
keel.prometheus.register()
app.mount("/pc-metrics", make_asgi_app())


@app.post("/keys")
def create_key(revoked: bool = False) -> dict[str, str]:
    plaintext, info = api_keys.create("tenant-a", "e2e")
    if revoked:
        api_keys.revoke("tenant-a", info.id)
    return {"key": plaintext}


@app.get("/chat")
def chat(key: str, q: str) -> dict[str, object]:
    try:
        api_keys.verify(key)
    except keel.AuthError as e:
        raise HTTPException(401, "invalid API key") from e
    if not limiter.hit("tenant-a").allowed:
        raise HTTPException(429, "slow down")
    answer = answers.get(q)
    if answer is None:
        hits = index.search(q, k=1)
        answer = hits[0].text if hits else ""
        answers[q] = answer
    else:
        index.search(q, k=1)
    memory.append("tenant-a", "user-1", "session-1", "user", q)
    return {"answer": answer}
