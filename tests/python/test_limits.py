"""Numbers beyond what a library under keel can represent are typed errors naming the value and
the maximum, never a ``PanicException`` (``busy_timeout >= 2**31`` ms panicked in rusqlite)."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel


@pytest.mark.parametrize("seconds", [2**31 / 1000, 1e10, 1e18])
def test_busy_timeout_beyond_sqlite_int_ms_is_invalid_argument(tmp_path: Path, seconds: float):
    with pytest.raises(
        keel.InvalidArgument, match=r"busy_timeout of \d+ ms exceeds the maximum of 2147483647 ms"
    ):
        keel.Memory(tmp_path / "m.db", keel.Keyring.generate(), busy_timeout=seconds)


def test_busy_timeout_at_the_maximum_and_zero_work(tmp_path: Path):
    for i, seconds in enumerate((2147483.647, 0.0)):
        memory = keel.Memory(tmp_path / f"m{i}.db", keel.Keyring.generate(), busy_timeout=seconds)
        assert memory.sessions("t", "u") == []


@pytest.mark.parametrize("pool_size", [0, 1025, 2**32 - 1])
def test_pool_size_out_of_range_is_invalid_argument(tmp_path: Path, pool_size: int):
    with pytest.raises(keel.InvalidArgument, match=rf"between 1 and 1024 \(got {pool_size}\)"):
        keel.Memory(tmp_path / "m.db", keel.Keyring.generate(), pool_size=pool_size)
