"""keel.Cache and keel.cached from Python."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

import keel


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_entries": 0}, keel.CacheConfigError, "max_entries = 0"),
        ({"max_entries": -5}, keel.CacheConfigError, "max_entries = 0"),
        ({"max_entries": 10, "ttl": 0}, keel.CacheConfigError, "positive"),
        ({"max_entries": 10, "ttl": -1.0}, keel.CacheConfigError, "positive"),
        ({"max_entries": 10, "ttl": float("nan")}, keel.CacheConfigError, "finite"),
        ({"max_entries": 10, "ttl": float("inf")}, keel.CacheConfigError, "finite"),
        ({"max_entries": 10, "max_weight": 0}, keel.CacheConfigError, "max_weight = 0"),
        ({"max_entries": 10, "weigher": len}, keel.InvalidArgument, "weigher needs max_weight"),
    ],
)
def test_bad_settings_raise_typed_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        keel.Cache(**kwargs)


def test_errors_subclass_keel_error_and_builtins():
    assert issubclass(keel.CacheConfigError, keel.KeelError)
    assert issubclass(keel.CacheConfigError, ValueError)
    assert issubclass(keel.RecursiveLoadError, RuntimeError)
    assert issubclass(keel.InvalidArgument, ValueError)
    with pytest.raises(ValueError):
        keel.Cache(0)


def test_dict_protocol():
    c = keel.Cache(100)
    c["a"] = 1
    c[("tuple", 2)] = [1, 2]
    assert c["a"] == 1
    assert c[("tuple", 2)] == [1, 2]
    assert "a" in c and "b" not in c
    assert len(c) == 2
    assert c.get("b") is None
    assert c.get("b", "default") == "default"
    with pytest.raises(KeyError):
        c["b"]
    assert c.pop("a") == 1
    assert c.pop("a", None) is None
    with pytest.raises(KeyError):
        c.pop("a")
    del c[("tuple", 2)]
    with pytest.raises(KeyError):
        del c[("tuple", 2)]
    assert len(c) == 0


def test_keys_compare_by_python_equality():
    c = keel.Cache(10)
    c[1] = "int"
    assert c[1.0] == "int"  # 1 == 1.0 and hash(1) == hash(1.0), as in a dict
    key = "".join(["ab", "c"])  # a different str object equal to "abc"
    c["abc"] = "v"
    assert c[key] == "v"


@pytest.mark.parametrize("key", [[1], {"a": 1}, {1, 2}])
def test_unhashable_key_is_a_type_error(key):
    c = keel.Cache(10)
    with pytest.raises(TypeError, match="unhashable"):
        c[key] = 1
    with pytest.raises(TypeError, match="unhashable"):
        c.get(key)


def test_caches_any_object_and_releases_it():
    class Thing:
        pass

    c = keel.Cache(10)
    t = Thing()
    ref = weakref.ref(t)
    c["t"] = t
    assert c["t"] is t
    del t
    gc.collect()
    assert ref() is not None
    c.clear()
    gc.collect()
    assert ref() is None


def test_bounded_by_entries():
    c = keel.Cache(1000)
    for i in range(20_000):
        c[i] = i
        assert len(c) <= 1000
    s = c.stats()
    assert s.inserts == 20_000
    assert s.evictions >= 18_000


def test_bounded_by_weight_with_weigher():
    c = keel.Cache(1000, max_weight=10_000, weigher=len)
    for i in range(2000):
        c[i] = b"x" * (i % 200)
        assert c.stats().weight <= 10_000
    with pytest.raises(keel.CacheConfigError, match="exceeds"):
        c["huge"] = b"x" * 20_000


def test_ttl_per_cache_and_per_entry():
    c = keel.Cache(10, ttl=0.3)
    c["default"] = 1
    c.set("short", 2, ttl=0.05)
    c.set("long", 3, ttl=60)
    time.sleep(0.15)
    assert "short" not in c
    assert c.get("short") is None
    assert c["default"] == 1
    time.sleep(0.3)
    assert c.get("default") is None
    assert c["long"] == 3
    assert c.stats().expirations >= 2
    with pytest.raises(keel.CacheConfigError):
        c.set("x", 1, ttl=-1)


def test_purge_expired():
    c = keel.Cache(100)
    for i in range(10):
        c.set(i, i, ttl=0.05 if i % 2 else None)
    time.sleep(0.1)
    assert c.purge_expired() == 5
    assert len(c) == 5


def test_stats_count_hits_and_misses():
    c = keel.Cache(10)
    c["a"] = 1
    c.get("a")
    c.get("a")
    c.get("zz")
    s = c.stats()
    assert (s.hits, s.misses, s.inserts, s.entries) == (2, 1, 1, 1)
    assert s.hit_ratio == pytest.approx(2 / 3)
    assert "hits=2" in repr(s)
    c.reset_stats()
    assert c.stats().hits == 0


def test_get_or_set_computes_once_across_threads():
    c = keel.Cache(100)
    calls = []
    barrier = threading.Barrier(8)
    results = []

    def factory():
        calls.append(1)
        time.sleep(0.1)
        return {"answer": 42}

    def worker():
        barrier.wait()
        results.append(c.get_or_set("k", factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(r is results[0] for r in results)
    assert len(results) == 8


def test_get_or_set_error_reaches_every_waiter_and_stores_nothing():
    c = keel.Cache(100)
    barrier = threading.Barrier(4)
    errors = []

    def factory():
        time.sleep(0.1)
        raise LookupError("backend down")

    def worker():
        barrier.wait()
        try:
            c.get_or_set("k", factory)
        except LookupError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert "k" not in c
    assert c.get_or_set("k", lambda: 7) == 7


def test_get_or_set_may_use_the_cache_but_not_its_own_key():
    c = keel.Cache(100)
    assert c.get_or_set("outer", lambda: c.get_or_set("inner", lambda: 1) + 1) == 2
    assert c["inner"] == 1
    with pytest.raises(keel.RecursiveLoadError):
        c.get_or_set("same", lambda: c.get_or_set("same", lambda: 1))
    assert "same" not in c


def test_properties_and_repr():
    c = keel.Cache(5, ttl=2.5, max_weight=100)
    assert (c.max_entries, c.ttl, c.max_weight) == (5, 2.5, 100)
    assert repr(c) == "keel.Cache(max_entries=5, ttl=2.5, max_weight=100, len=0)"


def test_cached_decorator_sync():
    calls = []

    @keel.cached(max_entries=10, ttl=60)
    def square(x, *, scale=1):
        calls.append(x)
        return x * x * scale

    assert square(3) == 9
    assert square(3) == 9
    assert square(3, scale=2) == 18
    assert calls == [3, 3]
    assert isinstance(square.cache, keel.Cache)
    square.cache_clear()
    assert square(3) == 9
    assert len(calls) == 3
    with pytest.raises(TypeError):
        square([1])


def test_cached_decorator_async_single_flight():
    calls = []

    @keel.cached(max_entries=10)
    async def fetch(x):
        calls.append(x)
        await asyncio.sleep(0.05)
        return x + 1

    async def main():
        return await asyncio.gather(*(fetch(1) for _ in range(10)))

    assert asyncio.run(main()) == [2] * 10
    assert calls == [1]


def test_cached_decorator_async_errors_are_not_cached():
    attempts = []

    @keel.cached(max_entries=10)
    async def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ConnectionError("first call fails")
        return x

    async def main():
        with pytest.raises(ConnectionError):
            await flaky(1)
        return await flaky(1)

    assert asyncio.run(main()) == 1
    assert attempts == [1, 1]


def test_get_or_set_in_a_forked_child_does_not_wait_for_the_parents_computation():
    import os

    c = keel.Cache(100)
    started = threading.Event()
    release = threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return "parent"

    t = threading.Thread(target=lambda: c.get_or_set("k", slow))
    t.start()
    started.wait(10)
    pid = os.fork()
    if pid == 0:  # child: the parent's computing thread does not exist here
        code = 1
        try:
            code = 0 if c.get_or_set("k", lambda: "child") == "child" else 2
        finally:
            os._exit(code)
    release.set()
    t.join()
    deadline = time.monotonic() + 20
    while True:  # a child stuck waiting would hang the suite: bound the wait, then fail
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child waited for a computation that only the parent could finish")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert c["k"] == "parent"


_GIL_RELEASING_EQ = """
import threading, keel

class Key:  # every key hashes alike; key 2's first comparison releases the GIL and waits
    def __init__(self, n):
        self.n = n
    def __hash__(self):
        return 0
    def __eq__(self, other):
        if 2 in (self.n, other.n) and not gate.is_set():
            comparing.set()
            assert other_loaded.wait(10), "another get_or_set could not run meanwhile"
            gate.set()
        return self.n == other.n

c = keel.Cache(100)
gate, comparing, other_loaded, leading, release = (threading.Event() for _ in range(5))

def lead():
    def slow():
        leading.set()
        release.wait(10)
        return 1
    c.get_or_set(Key(1), slow)

def compare():  # compares key 2 with key 1's flight
    assert c.get_or_set(Key(2), lambda: 2) == 2

a = threading.Thread(target=lead)
a.start()
leading.wait(10)
b = threading.Thread(target=compare)
b.start()
comparing.wait(10)
assert c.get_or_set(Key(3), lambda: 3) == 3  # while key 2's __eq__ runs without the GIL
other_loaded.set()
release.set()
a.join()
b.join()
assert gate.is_set() and c[Key(1)] == 1 and c[Key(2)] == 2
"""


def test_get_or_set_compares_keys_without_holding_a_lock_another_thread_needs():
    # A Python __eq__ may release the GIL; if the single-flight held a lock while comparing, a
    # second get_or_set would block on it with the GIL held: a deadlock. Run it in a child
    # process so that a deadlock fails the test instead of hanging the suite.
    import subprocess
    import sys

    try:
        run = subprocess.run(
            [sys.executable, "-c", _GIL_RELEASING_EQ], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("get_or_set deadlocked while a key's __eq__ ran without the GIL")
    assert run.returncode == 0, run.stderr


def test_cache_is_a_mutable_mapping_with_snapshot_iteration() -> None:
    from collections.abc import MutableMapping

    cache = keel.Cache(100)
    assert isinstance(cache, MutableMapping)
    assert list(cache) == []
    cache.update({"a": 1, "b": 2}, c=3)
    cache.update([("d", 4)])
    assert sorted(cache) == ["a", "b", "c", "d"]
    assert sorted(cache.keys()) == ["a", "b", "c", "d"]
    assert sorted(cache.values()) == [1, 2, 3, 4]
    assert sorted(cache.items()) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert dict(cache) == {"a": 1, "b": 2, "c": 3, "d": 4}
    # Iteration is over a snapshot: changing the cache meanwhile is safe.
    for key in cache:
        del cache[key]
    assert len(cache) == 0
    assert cache.setdefault("x", 10) == 10
    assert cache.setdefault("x", 20) == 10
    assert cache.popitem() == ("x", 10)
    with pytest.raises(KeyError, match="empty"):
        cache.popitem()
    # Iterating counts no hit or miss.
    cache["y"] = 1
    before = cache.stats()
    list(cache.items())
    after = cache.stats()
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_cached_decorator_async_stores_the_result_and_keys_on_keywords():
    # Sequential awaits (no concurrency to hide a missing cache write): the second call of the
    # same arguments must not run the function; another keyword value must.
    calls = []

    @keel.cached(max_entries=10, ttl=60)
    async def scaled(x, *, scale=1):
        calls.append((x, scale))
        return x * scale

    async def main():
        return [
            await scaled(3),
            await scaled(3),
            await scaled(3, scale=2),
            await scaled(3, scale=2),
        ]

    assert asyncio.run(main()) == [3, 3, 6, 6]
    assert calls == [(3, 1), (3, 2)]
    assert len(scaled.cache) == 2
