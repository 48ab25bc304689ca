"""Every native call the docs say releases the GIL, proven with one harness (gil_harness.probe):
another Python thread runs while the call is observed inside native code. Negative controls show
the harness reports a call that holds the GIL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gil_harness import probe

import keel

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
T, U, S = "acme", "alice", "s1"

WORDS = (
    "lift drag wing flow pressure boundary layer shock wave turbulence vortex laminar airfoil "
    "nozzle thrust combustion heat transfer shell buckling stress strain beam plate"
).split()


def text(i: int, n: int = 40) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n)) + f" doc{i}"


def model(name: str) -> Path:
    path = MODELS / name
    assert (path / "model.onnx").is_file(), f"test model {path} missing: run `make models`"
    return path


# ---------------------------------------------------------------------------------------------
# The harness can fail: calls known to hold the GIL, and a positive control of the same shape.


def test_negative_control_a_builtin_holding_the_gil_is_reported() -> None:
    n = 10_000_000
    p = probe(sum, range(n))  # a C loop that never lets the GIL go
    assert p.result == n * (n - 1) // 2
    assert not p.released, p
    assert p.iterations == 0, p


def test_negative_control_a_keel_call_holding_the_gil_is_reported() -> None:
    # With a Python `length` the chunker holds the GIL throughout (documented: it calls Python for
    # every measurement); `len` is a C function, so no bytecode runs and nothing gives the GIL up.
    chunker = keel.Chunker(200, 20, length=len)
    p = probe(chunker.chunks, text(1, 20) * 8_000)
    assert p.error is None and p.result
    assert not p.released, p


def test_positive_control_a_builtin_releasing_the_gil_is_reported() -> None:
    p = probe(hashlib.pbkdf2_hmac, "sha256", b"pw", b"salt", 400_000)
    assert p.error is None
    assert p.released, p


# ---------------------------------------------------------------------------------------------
# Calls that wait for a SQLite lock another process holds.

_LOCK_HOLDER = """
import fcntl, os, select, sqlite3, sys
path, mode, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "readers":
    # WAL lets readers past a write lock, so take what a reader needs: the five read-mark locks
    # of the wal-index (bytes 123..127 of the -shm file, SQLite's file format section 4.5). A
    # reader that cannot take one retries for about ten seconds before giving up.
    fd = os.open(path + "-shm", os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123)
else:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
ready, _, _ = select.select([sys.stdin], [], [], hold)
if mode == "readers":
    fcntl.lockf(fd, fcntl.LOCK_UN, 5, 123)
else:
    con.execute("COMMIT")
print("on-request" if ready else "timed-out", flush=True)
"""


class LockHolder:
    """Another process holding the database's write (or exclusive) lock until told to let go,
    or until `hold` seconds pass, shorter than keel's busy timeout (5 s): a call that waited for
    the lock can only have finished after the holder let go."""

    def __init__(self, db: Path, mode: str = "write", hold: float = 4.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, str(db), mode, str(hold)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> bool:
        """Let go; True if the lock was still held when asked (the call was still waiting)."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self.proc.stdout.readline().strip()
        assert self.proc.wait(timeout=10) == 0
        return answer == "on-request"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keel.db"


@pytest.fixture
def keyring() -> keel.Keyring:
    return keel.Keyring.generate()


def _memory_calls(mem: keel.Memory) -> dict[str, tuple[Callable[..., object], tuple[object, ...]]]:
    return {
        "append": (mem.append, (T, U, S, "user", "late")),
        "append_many": (mem.append_many, (T, U, S, [{"role": "user", "content": "late"}])),
        "delete_session": (mem.delete_session, (T, U, S)),
    }


@pytest.mark.parametrize("name", ["append", "append_many", "delete_session"])
def test_memory_writes_release_the_gil_while_waiting_for_the_lock(
    db: Path, keyring: keel.Keyring, name: str
) -> None:
    mem = keel.Memory(db, keyring)
    mem.append(T, U, S, "user", "warm up")
    fn, args = _memory_calls(mem)[name]
    holder = LockHolder(db)
    p = probe(fn, *args, release=holder.release)
    assert p.error is None, p.error
    assert p.released, p
    if name == "delete_session":
        with pytest.raises(keel.SessionNotFound):
            mem.history(T, U, S)
    else:
        assert [m.content for m in mem.history(T, U, S)] == ["late", "warm up"]  # newest first


@pytest.mark.parametrize("name", ["history", "window", "sessions", "export"])
def test_memory_reads_release_the_gil_while_waiting_for_the_lock(
    db: Path, keyring: keel.Keyring, name: str
) -> None:
    mem = keel.Memory(db, keyring)
    mem.append(T, U, S, "user", "warm up")
    fn, args = {
        "history": (mem.history, (T, U, S)),
        "window": (mem.window, (T, U, S, 1000)),
        "sessions": (mem.sessions, (T, U)),
        "export": (mem.export, (T, U, S)),
    }[name]
    holder = LockHolder(db, "readers")
    p = probe(fn, *args, release=holder.release)
    assert p.error is None, p.error
    assert p.released, p
    assert p.result


def test_audit_log_append_query_and_verify_release_the_gil(db: Path, keyring: keel.Keyring) -> None:
    log = keel.AuditLog(db, keyring)
    log.append("admin", "probe.first")
    for fn, args, mode in [
        (log.append, ("admin", "probe.second"), "write"),
        (log.query, (), "readers"),
        (log.verify, (), "readers"),
    ]:
        holder = LockHolder(db, mode)
        p = probe(fn, *args, release=holder.release)
        assert p.error is None, (fn, p.error)
        assert p.released, (fn, p)
    assert [e.action for e in log.query()][-2:] in (
        ["probe.first", "probe.second"],
        ["probe.second", "probe.first"],
    )


@pytest.fixture
def api_keys(db: Path, keyring: keel.Keyring) -> Iterator[tuple[keel.ApiKeys, str]]:
    admin = keel.ApiKeys(db, keyring)
    key, _ = admin.create(T, "probe", scopes=["read"])
    # A second instance: its verification cache is empty, so verify goes to the database.
    yield keel.ApiKeys(db, keyring), key


def test_api_keys_create_releases_the_gil_while_waiting_for_the_lock(
    db: Path, api_keys: tuple[keel.ApiKeys, str]
) -> None:
    keys, _ = api_keys
    holder = LockHolder(db)
    p = probe(keys.create, T, "another", release=holder.release)
    assert p.error is None, p.error
    assert p.released, p


def test_api_keys_uncached_verify_releases_the_gil_while_waiting_for_the_database(
    db: Path, api_keys: tuple[keel.ApiKeys, str]
) -> None:
    keys, key = api_keys
    holder = LockHolder(db, "readers")
    p = probe(keys.verify, key, release=holder.release)
    assert p.error is None, p.error
    assert p.released, p
    assert p.result.tenant == T


# ---------------------------------------------------------------------------------------------
# Compute-bound calls, sized to run long enough to be watched.

DOCS = [(f"d{i}", text(i)) for i in range(50_000)]


@pytest.fixture(scope="module")
def bm25() -> keel.BM25Index:
    index = keel.BM25Index()
    index.add_many(DOCS)
    return index


def test_bm25_add_many_releases_the_gil() -> None:
    # One thread (the default is one per core): long enough on any machine to be watched, and
    # the GIL must be released on the calling thread's own work too.
    index = keel.BM25Index()
    p = probe(index.add_many, [(f"x{i}", text(i, 120)) for i in range(12_000)], threads=1)
    assert p.error is None, p.error
    assert p.released, p


def test_bm25_search_releases_the_gil(bm25: keel.BM25Index) -> None:
    # One search takes milliseconds even here (every document holds every query term), so ask
    # for less progress: still more than a thousand iterations while the search runs.
    p = probe(bm25.search, " ".join(WORDS), 1000, progress=1_000, window=0.0)
    assert p.error is None, p.error
    assert p.released, p
    assert len(p.result) == 1000


def test_bm25_search_many_releases_the_gil(bm25: keel.BM25Index) -> None:
    p = probe(bm25.search_many, [text(i, 6) for i in range(1_000)], 10)
    assert p.error is None, p.error
    assert p.released, p
    assert len(p.result) == 1_000


def test_chunker_without_a_python_length_releases_the_gil() -> None:
    chunker = keel.Chunker(200, 20)
    for fn, args in [
        (chunker.chunks, (text(1, 20) * 40_000,)),
        (keel.chunk_text, (text(2, 20) * 40_000, 200, 20)),
    ]:
        p = probe(fn, *args)
        assert p.error is None, p.error
        assert p.released, (fn, p)


@pytest.fixture(scope="module")
def embedder() -> keel.Embedder:
    return keel.Embedder(model("minilm"), threads=2, batch_size=8)


@pytest.fixture(scope="module")
def cross_encoder() -> keel.CrossEncoder:
    return keel.CrossEncoder(model("test-cross-encoder"), threads=2, batch_size=4)


def test_embedder_embed_releases_the_gil(embedder: keel.Embedder) -> None:
    p = probe(embedder.embed, [text(i) for i in range(16)])
    assert p.error is None, p.error
    assert p.released, p
    assert len(p.result) == 16


def test_embedder_embed_bytes_releases_the_gil(embedder: keel.Embedder) -> None:
    p = probe(embedder.embed_bytes, [text(i) for i in range(16)])
    assert p.error is None, p.error
    assert p.released, p


def test_dense_index_add_many_and_search_release_the_gil(embedder: keel.Embedder) -> None:
    dense = keel.DenseIndex(embedder)
    p = probe(dense.add_many, [(f"d{i}", text(i)) for i in range(16)])
    assert p.error is None, p.error
    assert p.released, p
    assert len(dense) == 16
    # One query (a long one, so embedding it takes a few milliseconds): less progress asked.
    p = probe(dense.search, text(1, 200), 16, progress=1_000, window=0.0)
    assert p.error is None, p.error
    assert p.released, p


def test_cross_encoder_score_and_rerank_release_the_gil(
    cross_encoder: keel.CrossEncoder, bm25: keel.BM25Index
) -> None:
    p = probe(cross_encoder.score, "wing lift", [text(i) for i in range(16)])
    assert p.error is None, p.error
    assert p.released, p
    hits = bm25.search("wing lift pressure", 16)
    p = probe(cross_encoder.rerank, "wing lift", hits)
    assert p.error is None, p.error
    assert p.released, p


# ---------------------------------------------------------------------------------------------
# Cache.get_or_set: a thread missing a key another thread is computing waits without the GIL.
# Run in a child: were the wait to hold the GIL, the computing thread could never finish and the
# child would hang (killed by the timeout) instead of this test process.

_CACHE_WAITER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from gil_harness import probe
import keel

c = keel.Cache(100)
computing, go = threading.Event(), threading.Event()

def slow():
    computing.set()
    go.wait(20)
    return "first"

lead = threading.Thread(target=lambda: c.get_or_set("k", slow))
lead.start()
assert computing.wait(10)

def release():
    blocked = not go.is_set() and lead.is_alive()  # the leader has not produced the value yet
    go.set()
    return blocked

p = probe(c.get_or_set, "k", lambda: "second", release=release)
lead.join(10)
assert p.error is None, p.error
assert p.result == "first", p.result  # it waited for the leader's value
print(p.released, p, flush=True)
"""


def test_cache_get_or_set_waiters_release_the_gil() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CACHE_WAITER, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True "), out.stdout


def test_knowledge_base_index_folder_and_search_release_the_gil(
    tmp_path: Path, embedder: keel.Embedder
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(400):
        (folder / f"d{i}.txt").write_text(text(i, 400), encoding="utf-8")
    kb = keel.KnowledgeBase()
    # Tens of milliseconds: less progress asked, as for one search.
    p = probe(kb.index_folder, folder, progress=1_000, window=0.0)
    assert p.error is None, p.error
    assert p.released, p
    assert p.result.added == 400
    hybrid = keel.KnowledgeBase(embedder=embedder)
    hybrid.add("one", text(1))
    p = probe(hybrid.search, text(1, 200), 5, progress=1_000, window=0.0)
    assert p.error is None, p.error
    assert p.released, p


def test_memory_llm_messages_releases_the_gil(tmp_path: Path) -> None:
    mem = keel.Memory(tmp_path / "m.db", keel.Keyring.generate())
    mem.append_many("t", "u", "s", [{"role": "user", "content": text(i)} for i in range(2_000)])
    p = probe(
        mem.llm_messages,
        "t",
        "u",
        "s",
        budget=10**9,
        system="Be brief.",
        progress=1_000,
        window=0.0,
    )
    assert p.error is None, p.error
    assert p.released, p
    assert len(p.result) == 2_001
