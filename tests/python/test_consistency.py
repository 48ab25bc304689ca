"""Issue 9, consistency across the doors: the same name and unit as in Rust and C, defaults read
from the core (a `None` argument is the core's default), old names still working with one
DeprecationWarning, and one async shape (`Async<Name>` wrappers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import keel


def _keys(tmp_path: Path) -> tuple[keel.ApiKeys, keel.AuditLog]:
    keyring = keel.Keyring.generate()
    audit = keel.AuditLog(tmp_path / "keel.db", keyring)
    return keel.ApiKeys(tmp_path / "keel.db", keyring, audit=audit), audit


# -- defaults come from the core -------------------------------------------------------------


def test_none_arguments_are_the_core_defaults() -> None:
    limiter = keel.RateLimiter(10, 60.0)
    assert (limiter.algorithm, limiter.name) == ("gcra", "default")
    index = keel.BM25Index()
    assert (index.k1, index.b, index.language, index.stemming, index.stopwords) == (
        pytest.approx(1.2),
        pytest.approx(0.75),
        "en",
        True,
        True,
    )
    assert keel.Keyring.from_key(bytes(range(64))).key_ids == [1]


def test_memory_options_default_to_the_core_and_take_max_metadata_bytes(tmp_path: Path) -> None:
    keyring = keel.Keyring.generate()
    memory = keel.Memory(tmp_path / "m.db", keyring, max_metadata_bytes=16)
    memory.append("t", "u", "s", "user", "hi", {"a": 1})
    with pytest.raises(keel.KeelError, match="metadata"):
        memory.append("t", "u", "s", "user", "hi", {"a": "x" * 64})
    with pytest.raises(keel.InvalidArgument, match='"fast"'):
        keel.Memory(tmp_path / "n.db", keyring, synchronous="fast")
    with pytest.raises(keel.InvalidArgument, match="busy_timeout"):
        keel.Memory(tmp_path / "n.db", keyring, busy_timeout=-1.0)


def test_api_key_cache_ttl_zero_is_refused_by_the_core(tmp_path: Path) -> None:
    with pytest.raises(keel.InvalidArgument, match="cache_ttl"):
        keel.ApiKeys(tmp_path / "k.db", keel.Keyring.generate(), cache_ttl=0)


# -- new names, old names deprecated ---------------------------------------------------------


def test_cache_max_entries_and_the_deprecated_maxsize() -> None:
    cache = keel.Cache(5)
    assert cache.max_entries == 5
    assert keel.Cache(max_entries=7).max_entries == 7
    with pytest.warns(DeprecationWarning, match="max_entries"):
        old = keel.Cache(maxsize=3)
    with pytest.warns(DeprecationWarning, match="max_entries"):
        assert old.maxsize == 3
    with pytest.raises(keel.InvalidArgument, match="max_entries only"):
        keel.Cache(max_entries=3, maxsize=3)
    with pytest.warns(DeprecationWarning, match="max_entries"):
        fn = keel.cached(maxsize=2)(lambda x: x)
    assert fn(1) == 1 and fn.cache.max_entries == 2  # type: ignore[attr-defined]


def test_ratelimiter_check_window_and_shared_path(tmp_path: Path) -> None:
    limiter = keel.RateLimiter(2, 60.0)
    decision = limiter.check("k")
    assert decision.allowed and decision.window == 60.0
    new = keel.RateLimiter(2, 60.0, shared_path=tmp_path / "new")
    assert new.shared and new.shared_path is not None
    with pytest.warns(DeprecationWarning, match="shared_path"):
        old = keel.RateLimiter(2, 60.0, shared=tmp_path / "new")
    # The old keyword opens the same file: one budget.
    assert old.shared_path == new.shared_path
    new.check("k")
    assert old.check("k").remaining == 0
    with pytest.raises(keel.InvalidArgument, match="shared_path= only"):
        keel.RateLimiter(2, 60.0, shared=tmp_path / "a", shared_path=tmp_path / "a")


def test_ratelimiter_hit_still_works_and_warns_once_per_process() -> None:
    code = (
        "import warnings, keel\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    lim = keel.RateLimiter(5, 60.0)\n"
        "    a = lim.hit('k'); b = lim.hit('k')\n"
        "print(len([x for x in w if issubclass(x.category, DeprecationWarning)]), b.remaining)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["1", "3"]


def test_api_key_info_key_id_and_times_in_ms(tmp_path: Path) -> None:
    keys, audit = _keys(tmp_path)
    expires = int(time.time() * 1000) + 3_600_000
    _, info = keys.create("acme", "k", expires_at_ms=expires)
    assert info.expires_at_ms == expires and isinstance(info.created_at_ms, int)
    assert info.revoked_at_ms is None and info.last_used_at_ms is None
    assert keys.get("acme", info.key_id).key_id == info.key_id
    with pytest.warns(DeprecationWarning, match="key_id"):
        assert info.id == info.key_id
    with pytest.warns(DeprecationWarning, match="created_at_ms"):
        assert info.created_at == info.created_at_ms / 1000
    with pytest.warns(DeprecationWarning, match="expires_at_ms"):
        _, old = keys.create("acme", "k2", expires_at=expires / 1000)
    # Float seconds round to the millisecond below (the reason for the integer name).
    assert old.expires_at_ms in (expires - 1, expires)
    with pytest.raises(keel.InvalidArgument, match="expires_at_ms only"):
        keys.create("acme", "k3", expires_at=1.0, expires_at_ms=1000)
    d = info.to_dict()
    assert d["key_id"] == info.key_id and d["expires_at_ms"] == expires


def test_audit_entry_at_ms_and_query_in_ms(tmp_path: Path) -> None:
    _, audit = _keys(tmp_path)
    audit.append("ops", "deploy", "v1")
    (entry,) = audit.query(actor="ops")
    assert isinstance(entry.at_ms, int)
    assert audit.query(since_ms=entry.at_ms + 1) == []
    assert len(audit.query(since_ms=entry.at_ms, until_ms=entry.at_ms + 1)) == 1
    with pytest.warns(DeprecationWarning, match="at_ms"):
        assert entry.at == entry.at_ms / 1000
    with pytest.warns(DeprecationWarning, match="since_ms"):
        assert len(audit.query(since=entry.at_ms / 1000)) == 1
    with pytest.raises(keel.InvalidArgument, match="since_ms only"):
        audit.query(since=1.0, since_ms=1)


# -- one async shape -------------------------------------------------------------------------


def test_async_wrappers_have_the_same_methods_and_a_sync_face(tmp_path: Path) -> None:
    async def run() -> None:
        keyring = keel.Keyring.generate()
        audit = await keel.AsyncAuditLog.open(str(tmp_path / "a.db"), keyring)
        keys = await keel.AsyncApiKeys.open(str(tmp_path / "a.db"), keyring, audit=audit.sync)
        plaintext, info = await keys.create("acme", "k", scopes=["chat:write"])
        assert (await keys.verify(plaintext)).key_id == info.key_id
        assert [k.key_id for k in await keys.list("acme")] == [info.key_id]
        await keys.revoke("acme", info.key_id, actor="ops")
        verification = await audit.verify()
        assert verification == (2, verification.head) and verification.entries == 2
        assert isinstance(verification, keel.AuditVerification) and len(verification.head) == 64
        assert await audit.append("ops", "deploy") == 3

        bm25 = keel.AsyncBM25Index(keel.BM25Index())
        await bm25.add("d1", "the quick brown fox")
        await bm25.add_many([("d2", "a lazy dog")])
        assert [h.doc_id for h in await bm25.search("fox")] == ["d1"]
        assert [[h.doc_id for h in hs] for hs in await bm25.search_many(["dog"], k=1)] == [["d2"]]
        await bm25.save(str(tmp_path / "bm25.idx"))
        again = await keel.AsyncBM25Index.open(str(tmp_path / "bm25.idx"))
        assert len(again.sync) == 2

    asyncio.run(run())


def test_the_async_free_functions_are_deprecated_wrappers() -> None:
    class FakeEmbedder:
        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[float(len(t))] for t in texts]

    async def run() -> list[list[float]]:
        return await keel.embed_async(FakeEmbedder(), ["ab"])  # type: ignore[arg-type]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(run()) == [[2.0]]
    assert any(
        issubclass(w.category, DeprecationWarning) and "AsyncEmbedder" in str(w.message)
        for w in caught
    )


# -- getters: to_dict on every record, derived figures from the core --------------------------


def test_decision_session_info_and_cache_stats_have_to_dict(tmp_path: Path) -> None:
    d = keel.RateLimiter(2, 60.0, name="api").check("k").to_dict()
    assert d == {
        "allowed": True,
        "limit": 2,
        "remaining": 1,
        "reset": d["reset"],
        "retry_after": None,
        "window": 60.0,
        "policy": "api",
    }
    memory = keel.Memory(tmp_path / "m.db", keel.Keyring.generate())
    memory.append("t", "u", "s", "user", "hi")
    (info,) = memory.sessions("t", "u")
    assert info.to_dict() == {
        "session": "s",
        "created_at_ms": info.created_at_ms,
        "updated_at_ms": info.updated_at_ms,
        "message_count": 1,
    }
    cache = keel.Cache(4)
    cache["a"] = 1
    assert cache.get("a") == 1 and cache.get("b") is None
    stats = cache.stats().to_dict()
    assert (stats["hits"], stats["misses"], stats["hit_ratio"]) == (1, 1, 0.5)
