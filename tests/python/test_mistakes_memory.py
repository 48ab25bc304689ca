"""Mistakes a newcomer makes with keel.Keyring and keel.Memory, and the message each one gets:
typed (under keel.KeelError, and ValueError where the value is wrong), naming the offending
argument, value, key id or path, never key material."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel

T, U, S = "acme", "alice", "s1"


class Env:
    """A memory with three messages under key 1, its keyring text and a scratch folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = keel.Keyring.generate_key()
        self.keys = keel.Keyring.parse(f"1:{self.key}")
        self.db = tmp / "memory.db"
        self.mem = keel.Memory(self.db, self.keys)
        for i in range(3):
            self.mem.append(T, U, S, "user", f"m{i}")

    def key_file(self, mode: int) -> Path:
        path = self.tmp / "keys"
        path.write_text(f"1:{self.key}\n")
        path.chmod(mode)
        return path


def _const_key_text(byte: int) -> str:
    return "1:" + base64.b64encode(bytes([byte]) * 64).decode()


def _with_second_key(env: Env) -> keel.Memory:
    env.mem.set_keyring(env.mem.keyring.with_key(2, os.urandom(64)))
    return env.mem


Case = tuple[str, Callable[[Env], Any], type[BaseException], str]

CASES: list[Case] = [
    # -- keyring files and keys
    (
        "key file readable by others",
        lambda e: keel.Keyring.from_file(e.key_file(0o644)),
        keel.KeyringError,
        r"keys has mode 0644: .*chmod 600",
    ),
    (
        "key file readable by group",
        lambda e: keel.Keyring.from_file(e.key_file(0o640)),
        keel.KeyringError,
        r"mode 0640",
    ),
    (
        "key file missing",
        lambda e: keel.Keyring.from_file(e.tmp / "nope" / "keys"),
        keel.KeyringError,
        r"cannot read key file .*nope/keys",
    ),
    (
        "all-zero key",
        lambda e: keel.Keyring.from_key(bytes(64)),
        keel.KeyringError,
        r"key 1 is not random: only 1 distinct byte values in 64",
    ),
    (
        "constant key in keyring text",
        lambda e: keel.Keyring.parse(_const_key_text(0x41)),
        keel.KeyringError,
        r"not random",
    ),
    (
        "repeated short pattern as new key",
        lambda e: e.keys.with_key(2, b"abcd" * 16),
        keel.KeyringError,
        r"key 2 is not random: only 4 distinct",
    ),
    (
        "key of the wrong length",
        lambda e: keel.Keyring.from_key(b"short"),
        keel.KeyringError,
        r"5 bytes; keys are 64 bytes",
    ),
    (
        "negative key id",
        lambda e: keel.Keyring.from_key(os.urandom(64), key_id=-1),
        keel.InvalidArgument,
        r"key_id must be an integer >= 0, got key_id=-1",
    ),
    # -- opening with the wrong keyring
    (
        "wrong keyring",
        lambda e: keel.Memory(e.db, keel.Keyring.generate()),
        keel.KeyMismatchError,
        r"key 1 of the keyring does not match .* \(wrong keyring\?\)",
    ),
    (
        "keyring without the key the data uses",
        lambda e: keel.Memory(e.db, keel.Keyring.from_key(os.urandom(64), key_id=5)),
        keel.DecryptionError,
        r"no key with id 1",
    ),
    # -- numbers out of range
    (
        "negative budget",
        lambda e: e.mem.window(T, U, S, budget=-5),
        keel.InvalidArgument,
        r"budget must be an integer >= 0, got budget=-5",
    ),
    (
        "negative limit",
        lambda e: e.mem.history(T, U, S, limit=-1),
        keel.InvalidArgument,
        r"got limit=-1",
    ),
    (
        "huge offset",
        lambda e: e.mem.history(T, U, S, offset=2**40),
        keel.InvalidArgument,
        r"offset must be an integer from 0 to 4294967295, got offset=1099511627776",
    ),
    (
        "negative tokens",
        lambda e: e.mem.append(T, U, S, "user", "x", tokens=-3),
        keel.InvalidArgument,
        r"got tokens=-3",
    ),
    (
        "negative tokens in a batch",
        lambda e: e.mem.append_many(T, U, S, [{"role": "user", "content": "x", "tokens": -1}]),
        keel.InvalidArgument,
        r"got tokens=-1",
    ),
    (
        "negative sessions limit",
        lambda e: e.mem.sessions(T, U, limit=-2),
        keel.InvalidArgument,
        r"got limit=-2",
    ),
    (
        "zero rotation batch",
        lambda e: e.mem.rotate(0),
        keel.InvalidArgument,
        r"batch must be at least 1",
    ),
    (
        "negative rotation batch",
        lambda e: e.mem.rotate(-1),
        keel.InvalidArgument,
        r"got batch=-1",
    ),
    (
        "negative pool size",
        lambda e: keel.Memory(e.tmp / "other.db", e.keys, pool_size=-1),
        keel.InvalidArgument,
        r"got pool_size=-1",
    ),
    # -- retiring keys
    (
        "retire an unknown key id",
        lambda e: e.mem.retire_key(7),
        keel.KeyringError,
        r"key 7 is not in the keyring \(its key ids: \[1\]\)",
    ),
    (
        "retire the primary key",
        lambda e: e.mem.retire_key(1),
        keel.KeyringError,
        r"key 1 is primary",
    ),
    (
        "retire a key still in use",
        lambda e: _with_second_key(e).retire_key(1),
        keel.KeyInUseError,
        r"key 1 is still used by",
    ),
    (
        "negative key id to retire",
        lambda e: e.mem.retire_key(-1),
        keel.InvalidArgument,
        r"got key_id=-1",
    ),
    # -- sessions and messages
    (
        "unknown session",
        lambda e: e.mem.history(T, U, "nope"),
        keel.SessionNotFound,
        r"session not found",
    ),
    (
        "empty tenant",
        lambda e: e.mem.append("", U, S, "user", "x"),
        keel.InvalidArgument,
        r"tenant must be 1 to 256 bytes \(got 0\)",
    ),
    (
        "role too long",
        lambda e: e.mem.append(T, U, S, "r" * 65, "x"),
        keel.InvalidArgument,
        r"role must be 1 to 64 bytes \(got 65\)",
    ),
]


@pytest.mark.parametrize(("name", "make", "exc", "match"), CASES, ids=[c[0] for c in CASES])
def test_a_mistake_gets_a_clear_typed_message(
    tmp_path: Path,
    name: str,
    make: Callable[[Env], Any],
    exc: type[BaseException],
    match: str,
) -> None:
    env = Env(tmp_path)
    with pytest.raises(exc, match=match) as info:
        make(env)
    assert isinstance(info.value, keel.KeelError), name
    assert env.key not in str(info.value), "never key material"
    if exc is keel.InvalidArgument or issubclass(exc, keel.KeyringError):
        assert isinstance(info.value, ValueError)


def _sql(db: Path, statements: str) -> None:
    # Another process: Python's own SQLite must not share a process with keel's (docs/memory.md).
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(db), statements], check=True)


def test_a_database_edited_without_the_keyring_raises_memory_tampered(tmp_path: Path) -> None:
    env = Env(tmp_path)
    first = env.mem.history(T, U, S)[-1].id
    _sql(env.db, f"UPDATE memory_messages SET role = 'system' WHERE id = {first}")
    with pytest.raises(keel.MemoryTampered, match=f"message {first} failed its integrity") as info:
        env.mem.history(T, U, S)
    assert info.value.message_id == first
    assert isinstance(info.value, keel.ConversationError)
    assert isinstance(info.value, keel.DecryptionError), "what an altered row raised before"
    _sql(env.db, f"UPDATE memory_messages SET role = 'user' WHERE id = {first}")
    assert len(env.mem.history(T, U, S)) == 3
    _sql(env.db, "UPDATE memory_sessions SET user_id = 'mallory'")
    with pytest.raises(keel.MemoryTampered, match="session failed its integrity") as info:
        env.mem.window(T, "mallory", S, 100)
    assert info.value.message_id is None
