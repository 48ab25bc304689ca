"""Realistic mistakes with the cache and retrieval API, and the message each one gets: a typed
exception that names the offending value, path or setting (never a bare panic or a conversion
error from the binding layer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel


def _index() -> keel.BM25Index:
    idx = keel.BM25Index()
    idx.add("a", "the lift of a wing", "Wings")
    return idx


def _saved_then_damaged(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.bm25"
    _index().save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def _dense_damaged(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.dense"
    idx = keel.DenseIndex(dim=2)
    idx.add_vectors(["a"], [[1.0, 0.0]])
    idx.save(path)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x80
    path.write_bytes(bytes(data))
    return path


# (name, call(tmp_path), exception, message pattern)
MISTAKES: list[tuple[str, Callable[[Path], Any], type[BaseException], str]] = [
    # Cache
    ("cache of size 0", lambda _: keel.Cache(0), keel.CacheConfigError, "max_entries = 0"),
    ("negative ttl", lambda _: keel.Cache(10, ttl=-1), keel.CacheConfigError, r"got -1"),
    (
        "ttl in ms by mistake",
        lambda _: keel.Cache(10, ttl=1e12),
        keel.CacheConfigError,
        "100 years",
    ),
    (
        "nan ttl",
        lambda _: keel.Cache(10).set("k", 1, ttl=float("nan")),
        keel.CacheConfigError,
        "got NaN",
    ),
    ("missing key", lambda _: keel.Cache(10)["nope"], KeyError, "nope"),
    ("unhashable key", lambda _: keel.Cache(10).set([1], 1), TypeError, "unhashable"),
    ("popitem on empty", lambda _: keel.Cache(10).popitem(), KeyError, "empty"),
    # BM25Index
    (
        "open a missing file",
        lambda p: keel.BM25Index.open(p / "missing.bm25"),
        keel.IndexFileError,
        "missing.bm25.*(not found|No such)",
    ),
    (
        "open a damaged file",
        lambda p: keel.BM25Index.open(_saved_then_damaged(p)),
        keel.IndexFileError,
        "damaged.bm25: checksum mismatch",
    ),
    (
        "open a dense file as BM25",
        lambda p: keel.BM25Index.open(_dense_damaged(p)),
        keel.IndexFileError,
        "damaged.dense: not a keel BM25 index",
    ),
    (
        "save into a missing folder",
        lambda p: _index().save(p / "no-such-dir" / "x.bm25"),
        keel.IndexFileError,
        "no-such-dir",
    ),
    ("b above 1", lambda _: keel.BM25Index(b=1.5), keel.RagConfigError, r"b must be in \[0, 1\]"),
    (
        "unknown language",
        lambda _: keel.BM25Index(language="klingon"),
        keel.RagConfigError,
        "klingon",
    ),
    ("duplicate id", lambda _: _index().add("a", "again"), keel.DuplicateDocumentError, "update"),
    (
        "(id, title, text) tuple",
        lambda _: _index().add_many([("b", "Title", "text")]),
        TypeError,
        "ambiguous",
    ),
    (
        "metadata not a dict",
        lambda _: _index().add("b", "x", metadata="y=1"),
        keel.MetadataFilterError,
        "dict",
    ),
    (
        "bad filter operator",
        lambda _: _index().search("wing", filter={"y": {"$gtx": 1}}),
        keel.MetadataFilterError,
        "gtx",
    ),
    (
        "threads=10000",
        lambda _: _index().search_many(["wing"], threads=10_000),
        keel.RagConfigError,
        "threads = 10000 exceeds the maximum of 1024",
    ),
    # Chunker
    ("chunk size 0", lambda _: keel.Chunker(0), keel.RagConfigError, "max_len"),
    ("overlap not below size", lambda _: keel.Chunker(100, 100), keel.RagConfigError, "overlap"),
    (
        "negative chunk size",
        lambda _: keel.Chunker(-5),
        keel.InvalidArgument,
        r"max_len must be an integer >= 0, got max_len=-5",
    ),
    (
        "negative overlap",
        lambda _: keel.chunk_text("x", 10, -1),
        keel.InvalidArgument,
        r"overlap must be an integer >= 0, got overlap=-1",
    ),
    (
        "negative k",
        lambda _: _index().search("wing", k=-1),
        keel.InvalidArgument,
        r"k must be an integer >= 0, got k=-1",
    ),
    (
        "negative threads",
        lambda _: _index().search_many(["wing"], threads=-1),
        keel.InvalidArgument,
        r"threads must be an integer >= 0, got threads=-1",
    ),
    (
        "huge fusion limit",
        lambda _: keel.fuse({}, limit=2**70),
        keel.InvalidArgument,
        r"limit must be an integer from 0 to \d+, got limit=1180591620717411303424",
    ),
    # DenseIndex
    (
        "dense without embedder or dim",
        lambda _: keel.DenseIndex(),
        TypeError,
        "pass an embedder, or dim=",
    ),
    (
        "dense dim too large",
        lambda _: keel.DenseIndex(dim=10**6),
        keel.RagConfigError,
        r"got 1000000",
    ),
    (
        "vector of the wrong dimension",
        lambda _: keel.DenseIndex(dim=3).add_vectors(["a"], [[1.0, 0.0]]),
        keel.RagConfigError,
        "dimension 2 in an index of dimension 3",
    ),
    (
        "text search without embedder",
        lambda _: keel.DenseIndex(dim=2).search("wing"),
        keel.RagConfigError,
        "embedder",
    ),
    (
        "open a damaged dense file",
        lambda p: keel.DenseIndex.open(_dense_damaged(p)),
        keel.IndexFileError,
        "damaged.dense: checksum mismatch",
    ),
    (
        "open a missing dense file",
        lambda p: keel.DenseIndex.open(p / "gone.dense"),
        keel.IndexFileError,
        "gone.dense",
    ),
    # fuse
    (
        "unknown fusion method",
        lambda _: keel.fuse({}, method="borda"),
        keel.RagConfigError,
        "borda",
    ),
    ("negative rrf k", lambda _: keel.fuse({}, k=-1), keel.RagConfigError, r"got -1"),
    (
        "nan weight",
        lambda _: keel.fuse({"a": [("d", 1.0)]}, weights={"a": float("nan")}),
        keel.RagConfigError,
        "NaN",
    ),
    ("bad ranked list item", lambda _: keel.fuse({"a": [42]}), TypeError, r"\(doc_id, score\)"),
    # Embedder / CrossEncoder
    (
        "embedder on a missing model dir",
        lambda p: keel.Embedder(p / "no-model"),
        keel.ModelError,
        "no-model.*does not exist",
    ),
    (
        "embedder on an empty dir",
        lambda p: keel.Embedder(p),
        keel.ModelError,
        "has no model.onnx",
    ),
    (
        "embedder threads=2**31",
        lambda p: keel.Embedder(p / "no-model", threads=2**31),
        keel.RagConfigError,
        "threads = 2147483648 exceeds the maximum of 1024",
    ),
    (
        "cross-encoder batch 0",
        lambda p: keel.CrossEncoder(p / "no-model", batch_size=0),
        keel.RagConfigError,
        "batch_size",
    ),
    # evaluate
    ("unknown metric", lambda _: keel.evaluate({}, {}, ["ndcg@x"]), keel.RagConfigError, "ndcg@x"),
    ("BEIR dir missing", lambda p: keel.load_beir(p / "beir"), keel.EvalDataError, "beir"),
]


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [pytest.param(m, e, r, id=name) for name, m, e, r in MISTAKES],
)
def test_mistake_gets_a_clear_typed_message(
    make: Callable[[Path], Any], exc: type[BaseException], match: str, tmp_path: Path
) -> None:
    with pytest.raises(exc, match=match):
        make(tmp_path)
