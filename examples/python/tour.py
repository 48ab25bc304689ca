"""A tour of keel from Python, on one embedded SQLite file: `make demo` runs it.

Cache, encrypted conversation memory, API keys with an audit log, rate limiting, retrieval
(chunking, BM25, fusion, citations), then one Engine built from a configuration file.
Everything runs offline.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import keel


def section(title: str) -> None:
    print(f"\n== {title}")


workdir = Path(tempfile.mkdtemp(prefix="keel-tour-"))
db = workdir / "keel.db"
keyring = keel.Keyring.generate()  # production: keel.Keyring.from_env() (KEEL_KEYRING)
print(f"keel {keel.__version__}; database {db}")

section("cache: bounded, TTL, single-flight")
cache = keel.Cache(max_entries=1000, ttl=30.0)
calls = 0


def slow_profile() -> dict[str, str]:
    global calls
    calls += 1
    time.sleep(0.05)
    return {"name": "Ada"}


threads = [
    threading.Thread(target=cache.get_or_set, args=("profile:ada", slow_profile)) for _ in range(8)
]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"8 concurrent misses -> loader ran {calls} time(s); {cache.stats()}")

section("conversation memory: encrypted at rest, tenant-isolated")
memory = keel.Memory(db, keyring)
memory.append("acme", "ada", "s1", "user", "What is the wing area of the test model?")
memory.append("acme", "ada", "s1", "assistant", "About 1.2 square metres.")
for m in memory.history("acme", "ada", "s1", limit=5):
    print(f"  {m.role:9} {m.content}")
print(f"  sessions of ada: {[s.session for s in memory.sessions('acme', 'ada')]}")

section("API keys and the audit log")
audit = keel.AuditLog(db, keyring)
keys = keel.ApiKeys(db, keyring, audit=audit)
plaintext, info = keys.create("acme", "voice app", scopes=["chat:write"], actor="admin@acme")
print(f"  created {info.display}... (shown once), scopes {info.scopes}")
identity = keys.verify(plaintext)
print(f"  verified: tenant={identity.tenant} key_id={identity.key_id}")
try:
    keys.verify(plaintext[:-1] + ("x" if plaintext[-1] != "x" else "y"))
except keel.AuthError as e:
    print(f"  a mistyped key is refused offline: reason={e.reason}")
keys.revoke("acme", info.key_id, actor="admin@acme")
try:
    keys.verify(plaintext)
except keel.AuthError as e:
    print(f"  after revocation: reason={e.reason}")
entries, head = audit.verify()
print(f"  audit log: {entries} entries, chain verified (head {head[:16]}...)")
for e in audit.query(actor="admin@acme"):
    print(f"    #{e.seq} {e.actor} {e.action} {e.outcome}")

section("rate limiting: GCRA, headers, all-or-nothing")
per_ip = keel.RateLimiter(3, 60, name="per-ip")
for i in range(4):
    d = per_ip.check("203.0.113.7")
    print(f"  request {i + 1}: allowed={d.allowed} remaining={d.remaining}")
print(f"  headers: {dict(d.headers())}")

section("retrieval: chunks with exact offsets, BM25, fusion, citations")
doc = (
    "Wing flutter is a dynamic instability. It couples bending and torsion.\n\n"
    "Heat transfer in hypersonic flow dominates the design of the leading edge."
)
for c in keel.chunk_text(doc, 60):
    assert doc[c.char_start : c.char_end] == c.text
    print(f"  chunk {c.index} [{c.char_start}:{c.char_end}] {c.text!r}")
index = keel.BM25Index()
index.add("d1", "Flutter of wings couples bending and torsion modes.", title="Flutter")
index.add("d2", "Leading edges see extreme heat transfer in hypersonic flow.", title="Heating")
index.add("d3", "Boundary layers thicken downstream on a flat plate.", title="Boundary layers")
hits = index.search("hypersonic heat transfer", k=2)
for h in hits:
    print(f"  {h.doc_id} {h.title!r} score={h.score:.3f} cite=[{h.char_start}:{h.char_end}]")
fused = keel.rrf({"bm25": hits, "other": index.search("flutter", k=2)})
print(f"  RRF of two result lists: {[h.doc_id for h in fused]}")

section("one Engine from one configuration (TOML and/or KEEL_* variables)")
config = workdir / "keel.toml"
config.write_text(
    f"""[database]
url = "sqlite://{workdir / "engine.db"}"

[ratelimit.per_ip]
limit = 2
window = 60
"""
)
keyfile = workdir / "keyring"
keyfile.write_text(f"1:{keel.Keyring.generate_key()}\n")
keyfile.chmod(0o600)  # a keyring file readable by others is refused, like ssh keys
os.environ["KEEL_KEYRING_FILE"] = str(keyfile)
os.environ.pop("KEEL_KEYRING", None)
engine = keel.Engine(str(config))
engine.memory.append("acme", "ada", "s-engine", "user", "one pool for every primitive")
plain, _ = engine.api_keys.create("acme", "engine key", scopes=["chat:write"])
print(
    f"  memory and API keys share one store: {engine.memory.store_id == engine.api_keys.store_id}"
)
per_ip = engine.rate_limiters["per_ip"]
print(f"  per_ip limiter (limit 2) allows: {[per_ip.check('1.2.3.4').allowed for _ in range(3)]}")
print(f"  configured limiters: {sorted(engine.rate_limiters)}")

section("bad input is a typed error")
for attempt in (
    lambda: keel.Cache(0),
    lambda: keel.RateLimiter(0, 60),
    lambda: memory.history("acme", "ada", "no-such-session"),
):
    try:
        attempt()
    except keel.KeelError as e:
        print(f"  {type(e).__name__}: {e}")
print("\ntour complete")
