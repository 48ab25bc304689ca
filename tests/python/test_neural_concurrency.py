"""Concurrent inference through the Python door: a pool of ONNX sessions per model.

Calls release the GIL (test_gil.py); these tests check what happens next: calls from several
Python threads run on separate sessions at once, each gets its own result, equal to the
sequential one, and more callers than sessions all finish. The micro-batching of one-text calls
is proven deterministically by the Rust unit tests in src/rag/embed.rs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

import keel

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
T = TypeVar("T")


def model(name: str) -> Path:
    path = MODELS / name
    assert (path / "model.onnx").is_file(), f"test model {path} missing: run `make models`"
    return path


TEXTS = [
    f"question {i}: how does {topic} work" + " in detail, step by step" * (i % 5)
    for i, topic in enumerate(
        ["the refund", "a password reset", "shipping abroad", "the invoice"] * 4
    )
]


def together(n: int, f: Callable[[int], T]) -> list[T]:
    """`f(i)` on `n` threads released at once by a barrier; results in caller order."""
    start = threading.Barrier(n)

    def call(i: int) -> T:
        start.wait(timeout=60)
        return f(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        return [fut.result(timeout=120) for fut in futures]


@pytest.fixture(scope="module")
def embedder() -> keel.Embedder:
    return keel.Embedder(model("minilm"), sessions=2, threads=1)


@pytest.fixture(scope="module")
def cross_encoder() -> keel.CrossEncoder:
    return keel.CrossEncoder(model("test-cross-encoder"), sessions=2, threads=1)


def test_the_pool_shape_is_the_one_asked_for(
    embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    assert (embedder.sessions, embedder.threads) == (2, 1)
    assert (cross_encoder.sessions, cross_encoder.threads) == (2, 1)
    default = keel.Embedder(model("minilm"))
    # The core's default: one single-threaded session per core, never more threads than cores.
    assert default.threads == 1
    assert 1 <= default.sessions <= (os.cpu_count() or 1)


def test_sixteen_threads_get_their_own_embedding_equal_to_the_sequential_one(
    embedder: keel.Embedder,
) -> None:
    sequential = [embedder.embed([t])[0] for t in TEXTS]
    got = together(16, lambda i: embedder.embed([TEXTS[i]])[0])
    for i, v in enumerate(got):
        np.testing.assert_allclose(v, sequential[i], atol=1e-5, err_msg=f"caller {i}")
    lists = together(4, lambda i: embedder.embed(TEXTS[i::4]))
    for i, vs in enumerate(lists):
        np.testing.assert_allclose(vs, sequential[i::4], atol=1e-5, err_msg=f"caller {i}")


def test_sixteen_threads_get_their_own_rerank_scores(cross_encoder: keel.CrossEncoder) -> None:
    queries = [f"query {i} about refunds" for i in range(8)]
    sequential = [cross_encoder.score(q, TEXTS) for q in queries]
    got = together(16, lambda i: cross_encoder.score(queries[i % 8], TEXTS))
    for i, s in enumerate(got):
        np.testing.assert_allclose(s, sequential[i % 8], atol=1e-4, err_msg=f"caller {i}")


def test_two_python_threads_run_on_two_sessions_at_once() -> None:
    # One session (what a mutex around the model gives) can never show two calls at once.
    long = "a long passage about refunds and invoices and shipping " * 20
    for sessions in (1, 2):
        e = keel.Embedder(model("minilm"), sessions=sessions, threads=1)
        ce = keel.CrossEncoder(model("test-cross-encoder"), sessions=sessions, threads=1)

        def call(i: int, e: keel.Embedder = e, ce: keel.CrossEncoder = ce) -> None:
            e.embed([f"{i} {long}"])
            ce.score(f"{i}", [long])

        for _ in range(50):
            together(2, call)
            if e.peak_concurrency == ce.peak_concurrency == sessions:
                break
        assert (e.peak_concurrency, ce.peak_concurrency) == (sessions, sessions)


def test_more_callers_than_sessions_all_finish(
    embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    def turn(i: int) -> tuple[int, int, int]:
        one = embedder.embed([TEXTS[i]])
        many = embedder.embed(TEXTS[: (i % 3) * 5 + 2])
        scores = cross_encoder.score(TEXTS[i], TEXTS[: i + 1])
        return len(one), len(many), len(scores)

    got = together(16, turn)
    assert got == [(1, (i % 3) * 5 + 2, i + 1) for i in range(16)]


@pytest.mark.parametrize("sessions", [0, 65, 2**31])
def test_zero_or_absurd_session_counts_are_refused_naming_the_value(sessions: int) -> None:
    for cls, name in ((keel.Embedder, "minilm"), (keel.CrossEncoder, "test-cross-encoder")):
        with pytest.raises(keel.RagConfigError, match=f"sessions = {sessions}"):
            cls(model(name), sessions=sessions)
