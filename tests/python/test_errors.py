"""Exceptions carry the data of the core error they come from, as attributes (one mapping, in
bindings/python/src/errors.rs), and sit where callers catch them."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

import keel


def _tamper(db: Path, sql: str) -> None:
    # From another process: keel links its own SQLite, and two SQLite libraries must not share
    # a database file inside one process (POSIX locks are per process).
    code = "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.executescript(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(db), sql], check=True)


def test_audit_tampered_is_a_crypto_error_naming_the_first_bad_entry(tmp_path: Path) -> None:
    keyring = keel.Keyring.generate()
    audit = keel.AuditLog(tmp_path / "keel.db", keyring)
    for i in range(4):
        audit.append("alice", f"action-{i}", "target")
    _tamper(tmp_path / "keel.db", "DELETE FROM audit_log WHERE seq = 3")
    with pytest.raises(keel.AuditTampered, match="entry 3") as err:
        audit.verify()
    assert err.value.seq == 3
    assert isinstance(err.value, keel.CryptoError) and isinstance(err.value, keel.KeelError)


def test_memory_errors_carry_sizes_and_key_ids(tmp_path: Path) -> None:
    keyring = keel.Keyring.generate()
    mem = keel.Memory(tmp_path / "m.db", keyring, max_content_bytes=64)
    with pytest.raises(keel.ContentTooLarge) as err:
        mem.append("acme", "alice", "s1", "user", "x" * 100)
    assert (err.value.size, err.value.max) == (100, 64)
    mem.append("acme", "alice", "s1", "user", "hello")

    # A new primary: key 1 cannot be retired while the message above is encrypted under it.
    mem.set_keyring(keyring.with_key(2, base64.b64decode(keel.Keyring.generate_key())))
    with pytest.raises(keel.KeyInUseError) as in_use:
        mem.retire_key(1)
    assert (in_use.value.key_id, in_use.value.rows) == (1, 1)
    del mem
    with pytest.raises(keel.KeyMismatchError) as mismatch:
        keel.Memory(tmp_path / "m.db", keel.Keyring.generate())
    assert mismatch.value.key_id == 1


def test_memory_tampered_carries_the_message_id_and_reason(tmp_path: Path) -> None:
    keyring = keel.Keyring.generate()
    mem = keel.Memory(tmp_path / "m.db", keyring)
    first = mem.append("acme", "alice", "s1", "user", "hello")
    mem.append("acme", "alice", "s1", "assistant", "hi")
    _tamper(tmp_path / "m.db", f"UPDATE memory_messages SET role = 'system' WHERE id = {first}")
    with pytest.raises(keel.MemoryTampered) as err:
        mem.history("acme", "alice", "s1")
    assert err.value.message_id == first
    assert isinstance(err.value.reason, str) and err.value.reason


def test_auth_errors_carry_the_environments(tmp_path: Path) -> None:
    keys = keel.ApiKeys(tmp_path / "keel.db", keel.Keyring.generate())
    test_key, _ = keys.create("acme", "ci", env="test")
    with pytest.raises(keel.AuthError) as err:
        keys.verify(test_key)
    assert err.value.reason == "wrong_environment"
    assert (err.value.env, err.value.accepted) == ("test", ["live"])


@pytest.mark.parametrize(
    ("call", "exc", "attrs"),
    [
        (lambda: keel.Cache(0), keel.CacheConfigError, {"field": "max_entries"}),
        (
            lambda: keel.RateLimiter(10, 1.0, name="api").check("k", 11),
            keel.RateLimitConfigError,
            {"cost": 11, "limit": 10, "policy": "api"},
        ),
    ],
)
def test_configuration_errors_carry_the_offending_values(call, exc, attrs) -> None:
    with pytest.raises(exc) as err:
        call()
    for name, value in attrs.items():
        assert getattr(err.value, name) == value, name


def test_data_attributes_default_to_none_when_raised_by_hand() -> None:
    # Callers and test doubles raise these without data (e.g. keel.StoreBusy("locked")).
    assert keel.StoreBusy("locked").waited is None
    assert keel.AuditTampered("x").seq is None
    assert keel.RateLimitStateBusy("x").holder_pid is None
    assert issubclass(keel.StoreBusy, TimeoutError)
