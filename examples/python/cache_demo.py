"""A short tour of keel.Cache from Python: run with `make demo`."""

from __future__ import annotations

import threading
import time

import keel

print(f"keel {keel.__version__}")

# A bounded TTL cache holding any Python object under any hashable key.
cache = keel.Cache(maxsize=1000, ttl=30.0)
cache["session:42"] = {"user": "ada", "turns": 3}
print("hit:", cache["session:42"], "| absent:", cache.get("session:7", "<none>"))

# Per-entry TTL.
cache.set("otp:ada", "731904", ttl=0.05)
time.sleep(0.1)
print("expired entry gone:", "otp:ada" not in cache)

# Single-flight: eight threads miss the same key; the slow backend is called once.
calls = 0


def slow_backend() -> str:
    global calls
    calls += 1
    time.sleep(0.05)
    return "profile-of-ada"


threads = [
    threading.Thread(target=cache.get_or_set, args=("profile:ada", slow_backend)) for _ in range(8)
]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"8 concurrent misses, backend called {calls} time(s)")


# Memoize a function (async functions work the same way).
@keel.cached(maxsize=256, ttl=60)
def embed_cost(text: str) -> int:
    return len(text.split())


embed_cost("hello there world")
embed_cost("hello there world")
print("memoized stats:", embed_cost.cache.stats())

# Bad input is a typed error, never a crash.
try:
    keel.Cache(maxsize=0)
except keel.CacheConfigError as e:
    print("CacheConfigError:", e)
print("cache stats:", cache.stats())
