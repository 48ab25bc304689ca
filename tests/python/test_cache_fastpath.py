"""keel.Cache's fast paths (`get` as a raw METH_FASTCALL method, identity before `==`, the
reference counts of values) behave exactly as the generic path: Python's key semantics, pyo3's
argument errors, hit/miss statistics, no leaked or lost references."""

from __future__ import annotations

import sys

import pytest

import keel


class LooseStr(str):
    """A str subclass equal to any str of the same lower-case form (custom __eq__/__hash__)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


class Boom:
    """Hashes like its value; comparing it to anything but itself raises."""

    def __init__(self, h: int) -> None:
        self.h = h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        raise ValueError("no comparison")


def test_get_positional_and_keyword_forms_agree():
    c = keel.Cache(10)
    c["a"] = 1
    marker = object()
    assert c.get("a") == 1
    assert c.get("b") is None
    assert c.get("b", marker) is marker
    assert c.get("a", marker) == 1
    assert c.get(key="a") == 1
    assert c.get("b", default=marker) is marker
    assert c.get(key="b", default=marker) is marker
    assert keel.Cache.get(c, "a") == 1
    assert keel.Cache.get(c, "b", marker) is marker


def test_get_argument_errors_are_the_generic_ones():
    c = keel.Cache(10)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'key'"):
        c.get()
    with pytest.raises(TypeError, match="from 1 to 2 positional arguments but 3 were given"):
        c.get("a", 1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        c.get("a", d=1)
    with pytest.raises(TypeError, match="multiple values for argument 'key'"):
        c.get("a", key="a")
    with pytest.raises(TypeError, match="unhashable"):
        c.get(["a"])
    with pytest.raises(TypeError):
        keel.Cache.get(object(), "a")


def test_get_uses_python_equality_not_identity():
    c = keel.Cache(10)
    c[1] = "int"
    assert c.get(1.0) == "int"  # 1 == 1.0, hash(1) == hash(1.0)
    assert c.get(True) == "int"
    c["Key"] = "str"
    assert c.get(LooseStr("KEY")) is None  # hash differs from hash("Key")
    c[LooseStr("Mixed")] = "loose"
    assert c.get(LooseStr("MIXED")) == "loose"
    assert c.get("mixed") == "loose"  # a plain str equal to the stored key, same hash
    key = "".join(["user:", "7"])  # equal to "user:7", another object
    c["user:7"] = 7
    assert key is not "user:7"  # noqa: F632 (the point: another object)
    assert c.get(key) == 7


def test_get_with_a_key_whose_eq_raises_is_a_miss_and_the_key_still_works():
    c = keel.Cache(10)
    b = Boom(5)
    c[b] = "boom"
    assert c.get(b) == "boom"  # identity: __eq__ is not called
    assert c.get(Boom(5)) is None  # __eq__ raises: not equal
    assert c.get(5) is None
    assert c.stats().hits == 1
    assert c.stats().misses == 2


def test_get_counts_hits_and_misses():
    c = keel.Cache(10)
    c["a"] = 1
    for _ in range(3):
        c.get("a")
    c.get("b")
    c.get("b", 0)
    c.get(key="a")
    s = c.stats()
    assert (s.hits, s.misses) == (4, 2)


def test_get_keeps_reference_counts():
    c = keel.Cache(10)
    value = object()
    default = object()
    c["a"] = value
    before = (sys.getrefcount(value), sys.getrefcount(default))
    for _ in range(1000):
        assert c.get("a") is value
        assert c.get("b", default) is default
        assert c.get(key="b", default=default) is default
    assert (sys.getrefcount(value), sys.getrefcount(default)) == before
    del c["a"]
    assert sys.getrefcount(value) == before[0] - 1


def test_set_and_overwrite_keep_reference_counts():
    c = keel.Cache(10)
    old, new = object(), object()
    base = (sys.getrefcount(old), sys.getrefcount(new))
    c["a"] = old
    c["a"] = new
    assert sys.getrefcount(old) == base[0]
    assert sys.getrefcount(new) == base[1] + 1
    c.set("a", old)
    assert (sys.getrefcount(old), sys.getrefcount(new)) == (base[0] + 1, base[1])
    c.clear()
    assert (sys.getrefcount(old), sys.getrefcount(new)) == base
