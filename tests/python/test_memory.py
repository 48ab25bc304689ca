"""keel.Keyring, keel.Memory and keel.AsyncMemory: behaviour, errors, isolation, encryption at
rest, fork safety and several processes on one file (GIL release: test_gil.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import keel


@pytest.fixture
def keys() -> keel.Keyring:
    return keel.Keyring.generate()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
def mem(db: Path, keys: keel.Keyring) -> keel.Memory:
    return keel.Memory(db, keys)


T, U, S = "acme", "alice", "s1"


# -- keyring ------------------------------------------------------------------------------------


def test_generated_keys_are_base64_of_64_random_bytes() -> None:
    a, b = keel.Keyring.generate_key(), keel.Keyring.generate_key()
    assert a != b
    assert len(base64.b64decode(a)) == 64
    ring = keel.Keyring.parse(f"1:{a}\n2:{b}\n")
    assert ring.key_ids == [1, 2]
    assert ring.primary_id == 2


def test_keyring_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = keel.Keyring.generate_key()
    monkeypatch.setenv("KEEL_KEYRING", f"3:{key}")
    assert keel.Keyring.from_env().primary_id == 3
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026, by ops\n4:{key}\n")
    path.chmod(0o600)  # a key file others can read is refused
    assert keel.Keyring.from_file(path).primary_id == 4
    assert keel.Keyring.from_file(str(path)).key_ids == [4]
    assert keel.Keyring.from_key(base64.b64decode(key), key_id=9).primary_id == 9


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: keel.Keyring.parse(""), keel.KeyringError, "no keys"),
        (lambda: keel.Keyring.parse("1:@@@"), keel.KeyringError, "not valid base64"),
        (lambda: keel.Keyring.from_key(b"short"), keel.KeyringError, "5 bytes"),
        (lambda: keel.Keyring.from_env("KEEL_TEST_UNSET_VAR"), keel.KeyringError, "not set"),
        (lambda: keel.Keyring.from_file("/nonexistent/keys"), keel.KeyringError, "key file"),
    ],
)
def test_bad_keyrings_raise_keyring_error(make, exc, match) -> None:
    with pytest.raises(exc, match=match) as info:
        make()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, keel.CryptoError)


def test_keyring_repr_shows_ids_only() -> None:
    key = keel.Keyring.generate_key()
    ring = keel.Keyring.parse(f"7:{key}")
    assert repr(ring) == "Keyring(key_ids=[7], primary_id=7)"
    assert key not in repr(ring)


# -- memory -------------------------------------------------------------------------------------


def test_append_and_history_newest_first(mem: keel.Memory) -> None:
    first = mem.append(T, U, S, "user", "hello", {"lang": "en"}, tokens=5)
    ids = mem.append_many(
        T,
        U,
        S,
        [{"role": "assistant", "content": "hi!"}, {"role": "user", "content": "bye"}],
    )
    assert ids == [first + 1, first + 2]
    history = mem.history(T, U, S)
    assert [m.content for m in history] == ["bye", "hi!", "hello"]
    oldest = history[-1]
    assert (oldest.id, oldest.role, oldest.tokens) == (first, "user", 5)
    assert oldest.metadata == {"lang": "en"}
    assert json.loads(oldest.metadata_json) == {"lang": "en"}
    assert history[0].metadata is None
    assert oldest.created_at_ms > 1_600_000_000_000
    assert [m.content for m in mem.history(T, U, S, limit=1, offset=1)] == ["hi!"]
    assert "hello" not in repr(oldest)


def test_window_fits_the_budget_oldest_first(mem: keel.Memory) -> None:
    for i, tokens in enumerate([5, 3, 4, 2]):
        mem.append(T, U, S, "user", f"w{i}", tokens=tokens)
    assert [m.content for m in mem.window(T, U, S, 9)] == ["w1", "w2", "w3"]
    assert mem.window(T, U, S, 1) == []


def test_default_and_custom_token_counters(db: Path, keys: keel.Keyring) -> None:
    mem = keel.Memory(db, keys)
    mem.append(T, U, S, "user", "abcdefghi")
    assert mem.history(T, U, S)[0].tokens == 3  # ceil(9 chars / 4)
    words = keel.Memory(db, keys, token_counter=lambda text: len(text.split()))
    words.append(T, U, S, "user", "one two three four five")
    assert words.history(T, U, S)[0].tokens == 5


def test_sessions_export_and_deletes(mem: keel.Memory) -> None:
    mem.append(T, U, "a", "user", "x")
    mem.append(T, U, "b", "user", "y", {"k": [1]})
    mem.append(T, "bob", "c", "user", "z")
    listed = mem.sessions(T, U)
    assert sorted(s.session for s in listed) == ["a", "b"]
    assert all(s.message_count == 1 for s in listed)
    doc = json.loads(mem.export(T, U, "b"))
    assert doc["messages"][0]["content"] == "y"
    assert doc["messages"][0]["metadata"] == {"k": [1]}
    mem.delete_session(T, U, "a")
    assert [s.session for s in mem.sessions(T, U)] == ["b"]
    assert mem.delete_user(T, U) == 1
    assert mem.sessions(T, U) == []
    assert len(mem.sessions(T, "bob")) == 1


def test_purge_idle(mem: keel.Memory) -> None:
    mem.append(T, U, S, "user", "old")
    assert mem.purge_idle(3600) == 0
    time.sleep(0.01)  # the store's clock is the wall clock, in milliseconds
    assert mem.purge_idle(0) == 1
    assert mem.sessions(T, U) == []


def test_tenants_never_see_each_other(mem: keel.Memory) -> None:
    mem.append("acme", "alice", "s", "user", "acme data")
    mem.append("globex", "alice", "s", "user", "globex data")
    assert [m.content for m in mem.history("acme", "alice", "s")] == ["acme data"]
    assert [m.content for m in mem.history("globex", "alice", "s")] == ["globex data"]
    with pytest.raises(keel.SessionNotFound):
        mem.history("acme", "mallory", "s")
    with pytest.raises(keel.SessionNotFound):
        mem.append("acme", "mallory", "s", "user", "hijack")
    assert mem.delete_user("acme", "alice") == 1
    assert len(mem.history("globex", "alice", "s")) == 1


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda m: m.history(T, U, "missing"), keel.SessionNotFound, "session not found"),
        (lambda m: m.delete_session(T, U, "missing"), keel.SessionNotFound, "not found"),
        (lambda m: m.export(T, U, "missing"), keel.SessionNotFound, "not found"),
        (lambda m: m.append("", U, S, "user", "x"), keel.InvalidArgument, "tenant"),
        (lambda m: m.append(T, U, S, "", "x"), keel.InvalidArgument, "role"),
        (lambda m: m.append(T, U, S, "user", "x", float("nan")), keel.InvalidMetadata, "JSON"),
        (lambda m: m.append(T, U, S, "user", "x" * 65), keel.ContentTooLarge, "limit is 64"),
        (lambda m: m.append_many(T, U, S, [{"content": "x"}]), keel.InvalidArgument, "role"),
        (lambda m: m.append_many(T, U, S, ["x"]), keel.InvalidArgument, "dict"),
        (lambda m: m.purge_idle(-1.0), keel.InvalidArgument, "idle"),
        (lambda m: m.rotate(0), keel.InvalidArgument, "batch"),
    ],
)
def test_errors(db: Path, keys: keel.Keyring, call, exc, match) -> None:
    mem = keel.Memory(db, keys, max_content_bytes=64)
    with pytest.raises(exc, match=match):
        call(mem)
    assert mem.sessions(T, U) == []


def test_error_classes_subclass_builtins() -> None:
    assert issubclass(keel.SessionNotFound, KeyError)
    assert issubclass(keel.ContentTooLarge, ValueError)
    assert issubclass(keel.StoreError, OSError)
    assert issubclass(keel.StoreBusy, TimeoutError)
    assert issubclass(keel.DecryptionError, ValueError)
    assert issubclass(keel.ConversationError, keel.KeelError)


def test_bad_options_and_files(tmp_path: Path, keys: keel.Keyring) -> None:
    with pytest.raises(keel.InvalidArgument, match="synchronous"):
        keel.Memory(tmp_path / "x.db", keys, synchronous="sometimes")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x5a" * 8192)
    with pytest.raises(keel.StoreError, match="cannot open"):
        keel.Memory(garbage, keys)


def test_wrong_key_is_refused_when_memory_opens(db: Path, keys: keel.Keyring) -> None:
    keel.Memory(db, keys).append(T, U, S, "user", "secret")
    with pytest.raises(keel.KeyMismatchError, match="key 1 of the keyring does not match") as e:
        keel.Memory(db, keel.Keyring.generate())
    assert isinstance(e.value, keel.DecryptionError) and isinstance(e.value, keel.KeyringError)
    other_id = keel.Keyring.from_key(os.urandom(64), key_id=5)
    with pytest.raises(keel.DecryptionError, match="no key with id 1"):
        keel.Memory(db, other_id)
    # set_keyring with the wrong key: the first read names the key.
    mem = keel.Memory(db, keys)
    mem.set_keyring(keel.Keyring.generate())
    with pytest.raises(keel.KeyMismatchError, match="key 1"):
        mem.history(T, U, S)


def test_rotation(mem: keel.Memory) -> None:
    for i in range(30):
        mem.append(T, U, S, "user", f"r{i}", {"i": i})
    mem.set_keyring(mem.keyring.with_key(2, os.urandom(64)))
    with pytest.raises(keel.KeyInUseError, match="still used by 30"):
        mem.retire_key(1)
    assert mem.rotate(20) == 20
    assert mem.key_usage() == {1: 10, 2: 20}
    while mem.rotate(20):
        pass
    mem.retire_key(1)
    assert mem.keyring.key_ids == [2]
    assert mem.history(T, U, S, limit=100)[-1].metadata == {"i": 0}


def _scan(db: Path, needles: list[bytes]) -> int:
    hits = 0
    for suffix in ("", "-wal", "-shm"):
        f = Path(f"{db}{suffix}")
        if f.exists():
            data = f.read_bytes()
            hits += sum(data.count(n) for n in needles)
    return hits


def test_canaries_are_never_on_disk(db: Path, mem: keel.Memory) -> None:
    canaries = [b"PY-CANARY-CONTENT-91ab", b"PY-CANARY-META-5c2d"]
    for i in range(100):
        mem.append(T, U, S, "user", f"{canaries[0].decode()} {i}", {"n": canaries[1].decode()})
    assert mem.history(T, U, S, limit=1)[0].content.startswith(canaries[0].decode())
    assert _scan(db, canaries) == 0
    mem.delete_user(T, U)
    assert _scan(db, canaries) == 0
    # The scan itself can fail: plaintext written by another process through sqlite3 is found.
    probe = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    probe += "c.execute('CREATE TABLE probe (x TEXT)'); "
    probe += "c.execute(\"INSERT INTO probe VALUES ('PY-PROBE-77')\"); c.commit()"
    subprocess.run([sys.executable, "-c", probe, str(db)], check=True)
    assert _scan(db, [b"PY-PROBE-77"]) > 0


def test_async_memory(db: Path, keys: keel.Keyring) -> None:
    async def main() -> list[str]:
        amem = await keel.AsyncMemory.open(str(db), keys)
        await asyncio.gather(*(amem.append(T, U, S, "user", f"a{i}", {"i": i}) for i in range(20)))
        await amem.append_many(T, U, S, [{"role": "assistant", "content": "done"}])
        assert len(await amem.window(T, U, S, 1000)) == 21
        assert (await amem.sessions(T, U))[0].message_count == 21
        assert json.loads(await amem.export(T, U, S))["session"] == S
        history = await amem.history(T, U, S, limit=100)
        await amem.delete_session(T, U, S)
        with pytest.raises(keel.SessionNotFound):
            await amem.history(T, U, S)
        assert await amem.delete_user(T, U) == 0
        assert await amem.purge_idle(3600) == 0
        assert await amem.rotate() == 0
        assert amem.sync.sessions(T, U) == []
        return [m.content for m in history]

    contents = asyncio.run(main())
    assert contents[0] == "done"
    assert sorted(contents[1:]) == sorted(f"a{i}" for i in range(20))


def test_a_forked_child_uses_the_store_through_a_new_pool(mem: keel.Memory) -> None:
    mem.append(T, U, S, "user", "parent")
    pid = os.fork()
    if pid == 0:  # the child: must work, then leave without running pytest's teardown
        code = 1
        try:
            mem.append(T, U, S, "user", "child")
            code = 0 if len(mem.history(T, U, S)) == 2 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    mem.append(T, U, S, "user", "parent again")
    assert [m.content for m in mem.history(T, U, S)] == ["parent again", "child", "parent"]


def _worker(path: str, keyring_text: str, worker: int) -> None:
    mem = keel.Memory(path, keel.Keyring.parse(keyring_text))
    for i in range(100):
        mem.append(T, U, "shared", "user", f"{worker}-{i}")


def test_four_processes_append_to_one_file(db: Path) -> None:
    text = f"1:{keel.Keyring.generate_key()}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(db), text, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    history = keel.Memory(db, keel.Keyring.parse(text)).history(T, U, "shared", limit=1000)
    assert len(history) == 400
    assert len({m.content for m in history}) == 400


def test_threads_share_one_memory(mem: keel.Memory) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                mem.append(T, U, S, "user", f"{t}-{i}")
                mem.history(T, U, S, limit=5)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(mem.history(T, U, S, limit=1000)) == 400


def test_async_memory_keeps_metadata_and_tokens_and_open_honours_its_options(
    db: Path, keys: keel.Keyring
) -> None:
    async def main() -> None:
        amem = await keel.AsyncMemory.open(str(db), keys, max_content_bytes=8)
        await amem.append(T, U, S, "user", "short", {"lang": "en"}, tokens=7)
        with pytest.raises(keel.ContentTooLarge):
            await amem.append(T, U, S, "user", "far too long for eight bytes")
        [m] = await amem.history(T, U, S)
        assert (m.content, m.metadata, m.tokens) == ("short", {"lang": "en"}, 7)

    asyncio.run(main())
