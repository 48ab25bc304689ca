"""Retrieval from Python: chunking, BM25, filters, persistence, fusion, metrics (checked against
ranx), the BEIR loader and the ``python -m keel.eval`` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()


def cranfield() -> Path:
    # A missing data set is a failure, not a skip: these tests guard the quality numbers.
    assert (CRANFIELD / "corpus.jsonl").is_file(), (
        f"the Cranfield data set is missing: expected BEIR files in {CRANFIELD}"
    )
    return CRANFIELD


DOCS = [
    {
        "id": "a",
        "title": "Wings",
        "text": "the lift of a wing in a slipstream",
        "metadata": {"y": 1950, "lang": "en"},
    },
    {
        "id": "b",
        "title": "Heat",
        "text": "heat transfer in a slab",
        "metadata": {"y": 1960, "lang": "en"},
    },
    {"id": "c", "text": "supersonic flow over a wing", "metadata": {"y": 1970, "lang": "de"}},
    keel.Document("d", "laminar boundary layer flow with heat transfer", "Layers"),
    ("e", "supersonic flow over a wing"),
]


@pytest.fixture
def index() -> keel.BM25Index:
    idx = keel.BM25Index()
    idx.add_many(DOCS)
    return idx


# --- chunking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "max_len", "overlap"),
    [
        ("Hello world. " * 50, 30, 10),
        ("naïve café — ünïcödé 👩‍👩‍👧 text\n\nnext paragraph here. " * 20, 25, 5),
        ("la " * 500, 7, 3),
        ("x" * 100, 9, 0),
    ],
)
def test_chunks_carry_exact_char_and_byte_offsets(text, max_len, overlap):
    data = text.encode()
    chunks = keel.chunk_text(text, max_len, overlap)
    assert chunks
    for i, c in enumerate(chunks):
        assert c.index == i
        assert text[c.char_start : c.char_end] == c.text
        assert data[c.byte_start : c.byte_end].decode() == c.text
        assert len(c.text) <= max_len or len(c.text) == 1
    ends = [c.char_end for c in chunks]
    assert ends == sorted(set(ends))


def test_chunker_with_a_custom_length_function():
    words = keel.Chunker(3, length=lambda s: len(s.split()))
    texts = [c.text for c in words.chunks("one two three four five six seven")]
    assert texts == ["one two three", "four five six", "seven"]
    assert (words.max_len, words.overlap) == (3, 0)


def test_a_failing_length_function_raises_its_error():
    def boom(s: str) -> int:
        raise RuntimeError("length failed")

    with pytest.raises(RuntimeError, match="length failed"):
        keel.Chunker(5, length=boom).chunks("some text here")


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 0), "at least 1"), ((10, 10), "smaller than max_len"), ((5, 7), "smaller")],
)
def test_bad_chunk_settings_raise(args, match):
    with pytest.raises(keel.RagConfigError, match=match):
        keel.Chunker(*args)


# --- BM25 -----------------------------------------------------------------------------------


def test_search_returns_citable_hits(index):
    hits = index.search("wing slipstream", k=3)
    top = hits[0]
    assert (top.doc_id, top.chunk_id, top.title) == ("a", 0, "Wings")
    assert top.text == "the lift of a wing in a slipstream"
    assert (top.char_start, top.char_end, top.byte_start, top.byte_end) == (0, 34, 0, 34)
    assert top.metadata == {"y": 1950, "lang": "en"}
    assert top.sources == [("bm25", 1, pytest.approx(top.score))]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(index) == 5 and "a" in index and "zz" not in index


def test_ties_break_by_document_id(index):
    assert [h.doc_id for h in index.search("supersonic")] == ["c", "e"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"lang": "en"}, ["a", "b"]),
        ({"lang": ["de", "en"]}, ["a", "b", "c"]),
        ({"y": {"$gte": 1960}}, ["b", "c"]),
        ({"$or": [{"lang": "de"}, {"y": 1950}]}, ["a", "c"]),
        ({"lang": {"$exists": False}}, ["d", "e"]),
    ],
)
def test_metadata_filters(index, flt, expected):
    assert sorted(h.doc_id for h in index.search("wing heat flow", 10, filter=flt)) == expected


@pytest.mark.parametrize(
    ("flt", "match"),
    [
        ({"$xor": []}, "unknown filter operator"),
        ({"y": {"$in": 3}}, "takes an array"),
        ([1], "object"),
    ],
)
def test_bad_filters_raise(index, flt, match):
    with pytest.raises(keel.MetadataFilterError, match=match):
        index.search("wing", filter=flt)


def test_update_and_delete_score_like_a_fresh_build(index):
    index.update("b", "heat in a wing", title="Changed")
    assert index.delete("d") is True
    assert index.delete("d") is False
    fresh = keel.BM25Index()
    fresh.add_many([DOCS[0], keel.Document("b", "heat in a wing", "Changed"), DOCS[2], DOCS[4]])
    for q in ["wing", "heat", "supersonic flow"]:
        assert [(h.doc_id, h.score) for h in index.search(q)] == [
            (h.doc_id, h.score) for h in fresh.search(q)
        ]


def test_duplicates_and_bad_settings_raise(index):
    with pytest.raises(keel.DuplicateDocumentError, match="already indexed"):
        index.add("a", "again")
    with pytest.raises(keel.DuplicateDocumentError):
        index.add_many([("n", "x"), ("n", "y")])
    assert "n" not in index
    with pytest.raises(keel.RagConfigError, match="b must be"):
        keel.BM25Index(b=2.0)
    with pytest.raises(keel.RagConfigError, match="stemmer"):
        keel.BM25Index(language="xx")
    with pytest.raises(keel.MetadataFilterError, match="dict"):
        index.add("m", "x", metadata=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="document"):
        index.add_many([42])  # type: ignore[list-item]
    assert issubclass(keel.RagConfigError, keel.RagError)
    assert issubclass(keel.RagError, keel.KeelError)
    assert issubclass(keel.IndexFileError, OSError)


def test_save_and_open_keep_scores_and_settings(index, tmp_path):
    path = tmp_path / "idx.bm25"
    index.save(path)
    again = keel.BM25Index.open(str(path))
    assert (again.k1, again.b, again.language, again.stemming) == (
        pytest.approx(1.2),
        pytest.approx(0.75),
        "en",
        True,
    )
    assert [(h.doc_id, h.score) for h in again.search("wing")] == [
        (h.doc_id, h.score) for h in index.search("wing")
    ]
    path.write_bytes(b"garbage, not an index at all")
    with pytest.raises(keel.IndexFileError, match="not a keel BM25 index"):
        keel.BM25Index.open(path)
    with pytest.raises(keel.IndexFileError):
        keel.BM25Index.open(tmp_path / "missing")


def test_add_many_on_two_threads_builds_the_same_index():
    corpus, queries, _ = keel.load_beir(cranfield())
    one, two = keel.BM25Index(), keel.BM25Index()
    one.add_many(corpus)
    two.add_many(corpus, threads=2)
    assert len(one) == len(two) == 1400 and one.num_terms == two.num_terms
    for q in list(queries.values())[:30]:
        assert [(h.doc_id, h.score) for h in one.search(q, 20)] == [
            (h.doc_id, h.score) for h in two.search(q, 20)
        ]
    with pytest.raises(keel.DuplicateDocumentError):
        two.add_many(corpus[:3], threads=2)


def test_search_many_and_threads_agree(index):
    queries = ["wing", "heat transfer", "flow"] * 20
    one = index.search_many(queries, 3)
    two = index.search_many(queries, 3, threads=2)
    assert [[h.doc_id for h in r] for r in one] == [[h.doc_id for h in r] for r in two]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(200):
                assert index.search("wing")[0].doc_id in {"a", "c", "e"}
        except BaseException as e:  # noqa: BLE001 - reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --- fusion ---------------------------------------------------------------------------------


def test_rrf_and_weighted_fusion(index):
    bm25 = index.search("wing", 5)
    other = [("e", 0.9), ("zzz", 0.5)]
    fused = keel.rrf({"bm25": bm25, "dense": other}, limit=10)
    by_id = {h.doc_id: h for h in fused}
    assert by_id["e"].score == pytest.approx(
        1 / 61 + 1 / (60 + [h.doc_id for h in bm25].index("e") + 1)
    )
    assert ("dense", 1, pytest.approx(0.9)) in by_id["e"].sources
    assert by_id["a"].title == "Wings"  # citations survive fusion
    mm = keel.fuse(
        {"x": [("p", 10.0), ("q", 0.0)], "y": [("q", 1.0)]}, method="minmax", weights={"y": 2}
    )
    assert [(h.doc_id, h.score) for h in mm] == [("q", 2.0), ("p", 1.0)]
    with pytest.raises(keel.RagConfigError, match="unknown fusion method"):
        keel.fuse({}, method="borda")
    with pytest.raises(keel.RagConfigError, match="applies only to rrf"):
        keel.fuse({}, method="zscore", k=10)
    assert keel.rrf({"x": [("p", 1.0)]}, k=0)[0].score == 1.0  # k = 0: 1 / rank
    with pytest.raises(keel.RagConfigError, match="finite"):
        keel.fuse({"x": [("p", 1.0)]}, weights={"x": float("nan")})


# --- evaluation -----------------------------------------------------------------------------


def test_metrics_have_trec_eval_definitions():
    qrels = {"1": {"a": 2, "b": 1, "c": 0}}
    run = {"1": {"a": 0.9, "c": 0.8, "b": 0.7}}
    m = keel.evaluate(qrels, run, ["p@2", "recall@1", "mrr", "map"])
    assert m == {
        "precision@2": 0.5,
        "recall@1": 0.5,
        "mrr": 1.0,
        "map": pytest.approx((1 + 2 / 3) / 2),
    }
    # trec_eval breaks score ties by document id, descending: "b" ranks before "a".
    assert keel.evaluate({"1": {"a": 1}}, {"1": {"a": 1.0, "b": 1.0}}, ["mrr"]) == {"mrr": 0.5}
    per = keel.evaluate_per_query(qrels, run, ["mrr"])
    assert per == {"1": {"mrr": 1.0}}
    # No metrics: the core's defaults, the same in every door.
    defaults = {"ndcg@10", "recall@100", "map", "mrr", "precision@10"}
    assert set(keel.evaluate(qrels, run)) == defaults
    with pytest.raises(keel.RagConfigError, match="unknown metric"):
        keel.evaluate(qrels, run, ["bleu"])


def test_metrics_agree_with_ranx_on_cranfield():
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    corpus, queries, qrels = keel.load_beir(cranfield())
    index = keel.BM25Index()
    index.add_many(corpus)
    qids = list(queries)
    results = index.search_many([queries[q] for q in qids], 100)
    run = {q: {h.doc_id: h.score for h in hits} for q, hits in zip(qids, results)}
    # ranx breaks ties arbitrarily; trec_eval by document id, descending. Give both evaluators the
    # same ranking without ties: the trec_eval order, rescored by position.
    untied = {}
    for q, docs in run.items():
        order = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
        order = sorted(order, key=lambda kv: kv[1], reverse=True)
        untied[q] = {d: float(len(order) - i) for i, (d, _) in enumerate(order)}
    metrics = ["ndcg@10", "recall@100", "map", "mrr", "precision@10", "ndcg@100"]
    mine = keel.evaluate(qrels, untied, metrics)
    # Ties changed nothing: the untied run scores the same under keel's tie rule.
    assert mine == keel.evaluate(qrels, run, metrics)
    # ranx's "ndcg" is Järvelin's (gain = grade), which is trec_eval's; "ndcg_burges" is not.
    ranx_names = {m: m for m in metrics}
    # Only queries that have at least one relevant document: ranx drops the others.
    judged = {q: d for q, d in qrels.items() if any(g >= 1 for g in d.values()) and q in untied}
    theirs = ranx_evaluate(
        Qrels({q: dict(d) for q, d in judged.items()}),
        Run({q: untied[q] for q in judged}),
        list(ranx_names.values()),
        make_comparable=True,
    )
    mine = keel.evaluate(judged, {q: untied[q] for q in judged}, metrics)
    for name, rname in ranx_names.items():
        assert mine[name] == pytest.approx(theirs[rname], abs=1e-6), name
    assert mine["ndcg@10"] >= 0.369


def test_load_beir_and_the_command_line(tmp_path):
    corpus, queries, qrels = keel.load_beir(cranfield())
    assert (len(corpus), len(queries)) == (1400, 225)
    assert set(corpus[0]) == {"id", "title", "text", "metadata"}
    with pytest.raises(keel.EvalDataError, match="cannot read"):
        keel.load_beir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    out = subprocess.run(
        [sys.executable, "-m", "keel.eval", str(cranfield()), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    report = json.loads(out.stdout)
    assert report["documents"] == 1400 and report["queries"] == 225
    assert report["metrics"]["ndcg@10"] >= 0.369
    assert set(report["seconds"]) == {"load", "index", "search", "evaluate"}


def test_add_many_takes_documents_dicts_and_pairs_in_the_order_of_add():
    by_add, by_many = keel.BM25Index(), keel.BM25Index()
    by_add.add("a", "lift of a wing", "Wings")
    by_add.add("b", "heat transfer", "Heat", metadata={"y": 1})
    by_add.add("c", "boundary layer")
    by_many.add_many(
        [
            keel.Document("a", "lift of a wing", "Wings"),
            {"id": "b", "text": "heat transfer", "title": "Heat", "metadata": {"y": 1}},
            ("c", "boundary layer"),
        ]
    )
    for q in ["wing", "heat", "layer", "wings"]:
        assert [h.to_dict() for h in by_add.search(q)] == [h.to_dict() for h in by_many.search(q)]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            ("a", "Title", "text"),
            r"3-tuple document is ambiguous .*keel\.Document\(id, text, title\)",
        ),
        (("a",), r"tuple is \(id, text\)"),
        ({"id": "a", "body": "x"}, "unknown document key 'body'"),
        ({"id": "a", "title": "t"}, "needs a 'text' key"),
        ({"text": "x"}, "needs an 'id'"),
        (42, "not int"),
    ],
)
def test_ambiguous_or_malformed_documents_are_refused_and_nothing_is_added(doc, match):
    index = keel.BM25Index()
    with pytest.raises(TypeError, match=match):
        index.add_many([("ok", "fine"), doc])
    assert len(index) == 0


@pytest.mark.parametrize("threads", [1025, 10_000, 2**31, 2**64 - 1])
def test_threads_above_the_maximum_are_refused_with_the_value(index, threads):
    with pytest.raises(
        keel.RagConfigError, match=f"threads = {threads} exceeds the maximum of 1024"
    ):
        index.search_many(["wing"], threads=threads)
    with pytest.raises(keel.RagConfigError, match=f"threads = {threads}"):
        index.add_many([("x", "y"), ("z", "w")], threads=threads)
    assert "x" not in index


def test_threads_above_the_core_count_run_on_the_cores(index):
    assert [
        [h.doc_id for h in hits] for hits in index.search_many(["wing", "heat"], threads=64)
    ] == [[h.doc_id for h in index.search(q)] for q in ["wing", "heat"]]


FIXTURES = ROOT / "tests" / "fixtures" / "rag"


def test_an_index_file_from_format_1_still_opens():
    old = keel.BM25Index.open(FIXTURES / "bm25_v1.idx")
    assert len(old) == 3 and (old.k1, old.b) == (pytest.approx(0.9), pytest.approx(0.4))
    assert old.search("slipstream")[0].to_dict()["metadata"] == {"year": 1950, "lang": "en"}


def test_every_damaged_byte_of_a_saved_index_is_an_index_file_error_naming_it(index, tmp_path):
    good = tmp_path / "good.bm25"
    index.save(good)
    data = good.read_bytes()
    bad = tmp_path / "damaged.bm25"
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        bad.write_bytes(bytes(damaged))
        with pytest.raises(keel.IndexFileError, match="damaged.bm25"):
            keel.BM25Index.open(bad)


def test_a_missing_index_file_names_the_path(tmp_path):
    with pytest.raises(keel.IndexFileError, match="no-such.bm25"):
        keel.BM25Index.open(tmp_path / "no-such.bm25")
