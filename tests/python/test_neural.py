"""Neural retrieval from Python: keel.Embedder, keel.DenseIndex and keel.CrossEncoder checked
against Python onnxruntime + tokenizers on the same models and inputs (to 1e-4), plus
persistence, int8, the rerank hook after fusion, threads, and typed errors for bad model
directories and a missing ONNX Runtime. Models come from `make models`; missing ones fail."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import keel

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
sys.path.insert(0, str(ROOT / "scripts"))

import neural_reference as ref  # noqa: E402


def model(name: str) -> Path:
    path = MODELS / name
    assert (path / "model.onnx").is_file(), f"test model {path} missing: run `make models`"
    return path


@pytest.fixture(scope="module")
def embedder() -> keel.Embedder:
    return keel.Embedder(model("minilm"), threads=2, batch_size=8)


@pytest.fixture(scope="module")
def cross_encoder() -> keel.CrossEncoder:
    return keel.CrossEncoder(model("test-cross-encoder"), threads=2, batch_size=4)


TEXTS = [
    *ref.TEXTS,
    "pressure distribution on a slender body of revolution",
    "the buckling of thin cylindrical shells",
    "",
    "a" * 3000,
]


def test_embeddings_match_onnxruntime_and_tokenizers(embedder: keel.Embedder) -> None:
    path = model("minilm")
    want = ref.embed(ref.session(path), ref.tokenizer(path), TEXTS, batch_size=3)
    got = np.array(embedder.embed(TEXTS), dtype=np.float32)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    raw = np.frombuffer(embedder.embed_bytes(TEXTS), dtype="<f4").reshape(len(TEXTS), 384)
    np.testing.assert_array_equal(raw, got)
    assert (embedder.dim, embedder.max_length) == (384, 256)


def test_rerank_scores_match_onnxruntime_in_input_order(cross_encoder: keel.CrossEncoder) -> None:
    path = model("test-cross-encoder")
    query = "lift of a wing"
    want = ref.rerank(ref.session(path), ref.tokenizer(path), query, TEXTS, batch_size=5)
    got = np.array(cross_encoder.score(query, TEXTS), dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert cross_encoder.score(query, []) == []


DOCS = [
    {
        "id": "lift",
        "title": "Wings",
        "text": "the lift of a wing at incidence",
        "metadata": {"y": 1},
    },
    {
        "id": "heat",
        "title": "Heat",
        "text": "heat transfer in a boundary layer",
        "metadata": {"y": 2},
    },
    {
        "id": "shock",
        "title": "Shocks",
        "text": "shock waves in supersonic flow",
        "metadata": {"y": 1},
    },
]


@pytest.mark.parametrize("int8", [False, True])
def test_dense_index_search_filter_delete_persist(
    embedder: keel.Embedder, int8: bool, tmp_path: Path
) -> None:
    idx = keel.DenseIndex(embedder, int8=int8)
    idx.add_many(DOCS)
    assert len(idx) == 3 and idx.int8 is int8
    hits = idx.search("aerofoil upward force", k=2)
    assert hits[0].doc_id == "lift" and hits[0].sources[0][:2] == ("dense", 1)
    assert [h.doc_id for h in idx.search("force", k=3, filter={"y": 2})] == ["heat"]
    idx.save(tmp_path / "dense.idx")
    back = keel.DenseIndex.open(tmp_path / "dense.idx", embedder)
    assert [h.doc_id for h in back.search("supersonic", k=3)] == [
        h.doc_id for h in idx.search("supersonic", k=3)
    ]
    assert back.delete("shock") and not back.delete("shock")
    assert all(h.doc_id != "shock" for h in back.search("supersonic", k=3))


def test_dense_vectors_from_lists_or_float32_buffers_match_numpy() -> None:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((500, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(500)]
    a = keel.DenseIndex(dim=32)
    a.add_vectors(ids, vecs.tobytes())
    b = keel.DenseIndex(dim=32)
    b.add_vectors(ids, vecs.tolist())
    q = vecs[7] + 0.1
    want = [ids[i] for i in np.argsort(-(vecs @ (q / np.linalg.norm(q))), kind="stable")[:10]]
    assert [h.doc_id for h in a.search_vector(q.tolist(), k=10)] == want
    assert [h.doc_id for h in b.search_vector(q.tolist(), k=10)] == want
    # A huge k (e.g. a client's top_k passed through) returns every row, never aborts.
    assert len(a.search_vector(q.tolist(), k=2**40)) == 500


def test_rerank_reorders_fused_hits(
    embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    bm25 = keel.BM25Index()
    bm25.add_many(DOCS)
    dense = keel.DenseIndex(embedder)
    dense.add_many(DOCS)
    query = "lift of a wing"
    fused = keel.rrf({"bm25": bm25.search(query, k=3), "dense": dense.search(query, k=3)}, limit=3)
    reranked = cross_encoder.rerank(query, fused, top=2)
    assert len(reranked) == 3 and reranked[2].doc_id == fused[2].doc_id
    scores = cross_encoder.score(query, [f"{h.title} {h.text}" for h in fused[:2]])
    assert sorted(scores, reverse=True) == pytest.approx([h.score for h in reranked[:2]])
    assert reranked[0].sources[-1][:2] == ("rerank", 1)


# Shared with tests/neural.rs and tests/c/test_neural.c: twins with the same title and text tie
# in dense search (the earlier-added first) and in the cross-encoder (broken by document id).
TWINS = [
    ("twin-b", "the lift of a wing grows with its angle of attack"),
    ("twin-a", "the lift of a wing grows with its angle of attack"),
    ("shells", "buckling of thin cylindrical shells under axial compression"),
]


def test_tied_rerank_scores_come_back_in_document_id_order_in_every_door(
    embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    dense = keel.DenseIndex(embedder)
    for doc_id, text in TWINS:
        dense.add_many([{"id": doc_id, "title": "Lift", "text": text}])
    hits = dense.search("wing lift", k=3)
    assert [h.doc_id for h in hits] == ["twin-b", "twin-a", "shells"]
    assert hits[0].score == hits[1].score
    assert [s[:2] for s in hits[1].sources] == [("dense", 2)]
    reranked = cross_encoder.rerank("wing lift", hits, top=3)
    assert [h.doc_id for h in reranked] == ["twin-a", "twin-b", "shells"]
    assert reranked[0].score == reranked[1].score
    assert [h.sources[-1][:2] for h in reranked] == [("rerank", 1), ("rerank", 2), ("rerank", 3)]


def test_inference_is_thread_safe(embedder: keel.Embedder) -> None:  # GIL: test_gil.py
    want = embedder.embed(TEXTS[:4])
    out: list[list[list[float]]] = []
    threads = [
        threading.Thread(target=lambda: out.append(embedder.embed(TEXTS[:4]))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4
    for got in out:
        np.testing.assert_allclose(got, want, atol=1e-6)


def _dir(tmp: Path, files: dict[str, bytes | Path]) -> Path:
    tmp.mkdir()
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        (tmp / name).write_bytes(data)
    return tmp


@pytest.mark.parametrize(
    ("files", "match"),
    [
        (None, "does not exist"),
        ({}, "has no model.onnx"),
        ({"model.onnx": "minilm/model.onnx"}, "has no tokenizer.json"),
        (
            {"model.onnx": "minilm/model.onnx", "tokenizer.json": b"{oops"},
            "tokenizer.json is malformed",
        ),
        ({"model.onnx": b"not onnx", "tokenizer.json": "minilm/tokenizer.json"}, "cannot load"),
    ],
)
def test_bad_model_directories_raise_model_error(
    tmp_path: Path, files: dict[str, object] | None, match: str
) -> None:
    if files is None:
        path = tmp_path / "absent"
    else:
        resolved = {k: (MODELS / v if isinstance(v, str) else v) for k, v in files.items()}
        path = _dir(tmp_path / "m", resolved)  # type: ignore[arg-type]
    for cls in (keel.Embedder, keel.CrossEncoder):
        with pytest.raises(keel.ModelError, match=match):
            cls(path)
    with pytest.raises(ValueError):
        keel.Embedder(tmp_path / "absent")


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda e: keel.Embedder(model("minilm"), batch_size=0), keel.RagConfigError, "batch_size"),
        (lambda e: keel.DenseIndex(), TypeError, "embedder"),
        (lambda e: keel.DenseIndex(dim=0), keel.RagConfigError, "dim"),
        (lambda e: keel.DenseIndex(dim=3).search("text", k=1), keel.RagConfigError, "no embedder"),
        (
            lambda e: keel.DenseIndex(dim=3).search_vector([1.0], k=1),
            keel.RagConfigError,
            "dimension",
        ),
        (
            lambda e: keel.DenseIndex(dim=3).add_vectors(["a"], b"\0" * 8),
            keel.RagConfigError,
            "needs 12 bytes, not 8",
        ),
        (lambda e: keel.DenseIndex.open("/nonexistent/dense.idx"), keel.IndexFileError, "I/O"),
    ],
)
def test_bad_arguments_are_typed_errors(
    embedder: keel.Embedder, call, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        call(embedder)


def test_missing_onnx_runtime_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import keel\n"
        "try:\n"
        f"    keel.Embedder({str(model('minilm'))!r})\n"
        "except keel.OnnxRuntimeUnavailable as e:\n"
        "    print('OK', e)\n"
    )
    env = dict(os.environ, ORT_DYLIB_PATH=str(tmp_path / "libonnxruntime.so.missing"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.startswith("OK"), out.stderr
    assert "pip install" in out.stdout and "ORT_DYLIB_PATH" in out.stdout


def test_the_python_door_finds_its_own_onnxruntime_wheel(tmp_path: Path) -> None:
    # No ORT_DYLIB_PATH, no virtualenv, no Python on PATH: the module finds this interpreter's
    # wheel in Python (keel._onnxruntime) and hands the path to the core.
    from keel import _onnxruntime

    lib = _onnxruntime.wheel_library()
    assert lib is not None and Path(lib).name.startswith("libonnxruntime.so.1.")
    assert Path(lib).parent.parent == Path(importlib.util.find_spec("onnxruntime").origin).parent
    code = f"import keel\nprint(keel.Embedder({str(model('minilm'))!r}).dim)\n"
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "VIRTUAL_ENV")}
    env["PATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "384", out.stderr


def test_async_helpers_match_the_sync_calls(
    embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    dense = keel.DenseIndex(embedder)
    dense.add_many(DOCS)

    async def main() -> tuple[list[list[float]], list[keel.Hit], list[keel.Hit]]:
        vecs = await keel.AsyncEmbedder(embedder).embed(["wing"])
        hits = await keel.AsyncDenseIndex(dense).search("wing", 2)
        reranked = await keel.AsyncCrossEncoder(cross_encoder).rerank("wing", hits)
        return vecs, hits, reranked

    vecs, hits, reranked = asyncio.run(main())
    np.testing.assert_allclose(vecs, embedder.embed(["wing"]), atol=1e-6)
    assert [h.doc_id for h in hits] == [h.doc_id for h in dense.search("wing", k=2)]
    assert sorted(h.doc_id for h in reranked) == sorted(h.doc_id for h in hits)

    async def old() -> tuple[list[list[float]], list[keel.Hit], list[keel.Hit]]:
        return (
            await keel.embed_async(embedder, ["wing"]),
            await keel.dense_search_async(dense, "wing", 2),
            await keel.rerank_async(cross_encoder, "wing", hits),
        )

    # The first async API still works (deprecated one-line wrappers over the classes).
    with pytest.deprecated_call():
        old_vecs, old_hits, old_reranked = asyncio.run(old())
    assert old_vecs == vecs and [h.doc_id for h in old_hits] == [h.doc_id for h in hits]
    assert [h.doc_id for h in old_reranked] == [h.doc_id for h in reranked]


FIXTURES = ROOT / "tests" / "fixtures" / "rag"


@pytest.mark.parametrize(
    ("name", "int8"), [("dense_f32_v1.idx", False), ("dense_int8_v1.idx", True)]
)
def test_dense_files_of_format_1_still_open(name: str, int8: bool) -> None:
    old = keel.DenseIndex.open(FIXTURES / name)
    assert (len(old), old.dim, old.int8) == (3, 4, int8)
    fresh = keel.DenseIndex(dim=4, int8=int8)
    fresh.add_vectors(
        ["lift", "heat", "déjà"],
        [[1.0, 0.0, 0.5, -0.25], [0.0, 1.0, -0.5, 0.75], [0.5, 0.5, 0.5, 0.5]],
    )
    q = [0.1, 0.9, -0.3, 0.2]
    assert [h.doc_id for h in old.search_vector(q)] == [h.doc_id for h in fresh.search_vector(q)]
    assert old.search_vector(q)[0].title == "Heat"


def test_every_damaged_byte_of_a_saved_dense_index_is_an_index_file_error(tmp_path: Path) -> None:
    idx = keel.DenseIndex(dim=3, int8=True)
    idx.add_vectors(["a", "b"], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    good = tmp_path / "good.dense"
    idx.save(good)
    data = good.read_bytes()
    bad = tmp_path / "damaged.dense"
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        with pytest.raises(keel.IndexFileError, match="damaged.dense"):
            keel.DenseIndex.open(bad)


@pytest.mark.parametrize("threads", [1025, 2**31, 2**64 - 1])
def test_model_threads_above_the_maximum_are_refused_before_loading(threads: int) -> None:
    for cls in (keel.Embedder, keel.CrossEncoder):
        with pytest.raises(keel.RagConfigError, match=f"threads = {threads} exceeds the maximum"):
            cls(model("minilm"), threads=threads)


def test_model_threads_above_the_core_count_are_lowered_and_work() -> None:
    e = keel.Embedder(model("minilm"), threads=64)
    assert len(e.embed(["a wing"])[0]) == e.dim
