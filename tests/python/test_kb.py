"""keel.KnowledgeBase: a folder of txt / Markdown / HTML files indexed in one call, searched with
citations whose offsets are exact, re-indexed incrementally, persisted, hybrid with an embedder,
reranked with a cross-encoder, with a progress hook, an async face and typed errors. Models come
from `make models`; missing ones fail."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import keel

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))


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


FILES = {
    "wings.md": "# Wings\n\nThe lift of a wing grows with its angle of attack until it stalls.\n",
    "shells.txt": "Thin cylindrical shells buckle under axial compression.\n\n"
    "Imperfections lower the buckling load a great deal.",
    "guide/heat.html": "<html><head><title>Heat &amp; flow</title><style>p {}</style></head>"
    "<body><h1>Heat</h1><p>Heat transfer in a <b>laminar</b> boundary layer.</p></body></html>",
    "guide/long.txt": " ".join(
        f"Paragraph {i} about supersonic inlets and shock waves." for i in range(60)
    ),
    "notes.pdf": "not indexed",
}


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write(tmp_path / "docs", FILES)


def test_index_folder_and_search_with_exact_citations(docs: Path) -> None:
    kb = keel.KnowledgeBase()
    report = kb.index_folder(docs)
    assert (report.added, report.updated, report.removed, report.unchanged) == (4, 0, 0, 0)
    assert report.chunks == kb.passages > 4  # the long file is chunked
    assert len(kb) == kb.documents == 4
    assert not kb.hybrid and not kb.reranked and kb.path is None

    hits = kb.search("lift of a wing", k=3)
    assert hits[0].doc_id == "wings.md" and hits[0].title == "Wings"
    assert hits[0].metadata == {"path": "wings.md", "format": "md"}
    # Every hit of a txt / md file cites its exact place in the file.
    for query in ["lift of a wing", "buckling load", "shock waves paragraph 42"]:
        for hit in kb.search(query, k=5):
            if hit.metadata["format"] == "html":
                continue
            source = (docs / hit.doc_id).read_text(encoding="utf-8")
            assert source[hit.char_start : hit.char_end] == hit.text
            assert source.encode()[hit.byte_start : hit.byte_end].decode() == hit.text
    heat = kb.search("laminar heat", k=1)[0]
    assert (heat.doc_id, heat.title) == ("guide/heat.html", "Heat & flow")
    assert "laminar boundary layer" in heat.text and "<" not in heat.text
    assert kb.search("not indexed", k=5) == []
    assert kb.search("lift", k=5, filter={"format": "txt"}) == []


def test_modifying_one_file_reindexes_only_it(docs: Path) -> None:
    kb = keel.KnowledgeBase()
    kb.index_folder(docs)
    hashes = kb.files()
    assert sorted(hashes) == ["guide/heat.html", "guide/long.txt", "shells.txt", "wings.md"]

    again = kb.index_folder(docs)
    assert (again.added, again.updated, again.removed, again.unchanged, again.chunks) == (
        0,
        0,
        0,
        4,
        0,
    )
    (docs / "shells.txt").write_text("Conical shells vibrate.", encoding="utf-8")
    report = kb.index_folder(docs)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, 3)
    assert report.chunks == 1
    after = kb.files()
    assert [k for k in after if after[k] != hashes[k]] == ["shells.txt"]
    assert kb.search("conical", k=1)[0].doc_id == "shells.txt"
    assert kb.search("cylindrical", k=5) == []

    (docs / "wings.md").unlink()
    (docs / "new.md").write_text("# New\n\nRotor blades flap.", encoding="utf-8")
    report = kb.index_folder(docs)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 0, 1, 3)
    assert kb.search("lift wing", k=5) == []
    assert "wings.md" not in kb.files()


def test_persisted_knowledge_base_reopens_without_reindexing(docs: Path, tmp_path: Path) -> None:
    at = tmp_path / "kb"
    kb = keel.KnowledgeBase(at)
    kb.index_folder(docs)
    before = [(h.doc_id, h.chunk_id, h.score) for h in kb.search("shells buckle", k=3)]
    del kb
    assert sorted(p.name for p in at.iterdir()) == ["bm25.idx", "manifest.kb"]
    kb = keel.KnowledgeBase(str(at))
    assert kb.path == at and kb.documents == 4
    assert [(h.doc_id, h.chunk_id, h.score) for h in kb.search("shells buckle", k=3)] == before
    report = kb.index_folder(docs)
    assert (report.unchanged, report.chunks) == (4, 0)
    # A document added by hand persists with save().
    kb.add("faq", "Flutter is a dynamic aeroelastic instability.", title="FAQ")
    kb.save()
    assert keel.KnowledgeBase(at).search("flutter", k=1)[0].doc_id == "faq"
    with pytest.raises(keel.RagConfigError, match="chunk_size = 1000, not 200"):
        keel.KnowledgeBase(at, chunk_size=200)


def test_progress_with_a_callable_and_a_tqdm_like_bar(docs: Path) -> None:
    calls: list[tuple[int, int]] = []
    keel.KnowledgeBase().index_folder(
        docs, progress=lambda done, total: calls.append((done, total))
    )
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Bar:  # what tqdm offers: a settable total and update(n)
        def __init__(self) -> None:
            self.total: int | None = None
            self.n = 0
            self.refreshed = 0

        def update(self, n: int = 1) -> None:
            self.n += n

        def refresh(self) -> None:
            self.refreshed += 1

    kb = keel.KnowledgeBase()
    bar = Bar()
    kb.index_folder(docs, progress=bar)
    assert (bar.total, bar.n, bar.refreshed) == (4, 4, 1)
    # Unchanged files count too: a re-index still fills the bar.
    (docs / "wings.md").write_text("# Wings\n\nChanged.", encoding="utf-8")
    bar = Bar()
    kb.index_folder(docs, progress=bar)
    assert (bar.total, bar.n) == (4, 4)


def test_a_raising_progress_hook_stops_and_its_error_propagates(docs: Path) -> None:
    kb = keel.KnowledgeBase()

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt, match="stop"):
        kb.index_folder(docs, progress=stop)
    assert kb.documents == 0
    with pytest.raises(TypeError, match="progress must be"):
        kb.index_folder(docs, progress=42)  # type: ignore[arg-type]


def test_bad_input_is_a_typed_error_naming_the_value_or_path(docs: Path, tmp_path: Path) -> None:
    kb = keel.KnowledgeBase()
    missing = tmp_path / "missing"
    with pytest.raises(keel.SourceError) as err:
        kb.index_folder(missing)
    assert err.value.path == str(missing) and err.value.reason == "no such folder"
    assert str(missing) in str(err.value)
    assert isinstance(err.value, (keel.RagError, OSError))
    with pytest.raises(keel.SourceError, match="not a folder"):
        kb.index_folder(docs / "shells.txt")

    bad = docs / "bad.txt"
    bad.write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(keel.SourceError) as err:
        kb.index_folder(docs)
    assert err.value.path == str(bad) and "not UTF-8" in (err.value.reason or "")
    assert kb.documents == 0  # nothing indexed: files are read before any is indexed

    with pytest.raises(keel.RagConfigError, match=r"k must be at least 1 \(got 0\)"):
        kb.search("x", k=0)
    with pytest.raises(keel.InvalidArgument, match="k"):
        kb.search("x", k=-1)
    with pytest.raises(keel.RagConfigError, match="rerank_top"):
        keel.KnowledgeBase(rerank_top=0)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(keel.RagConfigError, match="is not a directory"):
        keel.KnowledgeBase(file)


def test_hybrid_finds_what_bm25_alone_cannot(tmp_path: Path, embedder: keel.Embedder) -> None:
    folder = write(
        tmp_path / "docs",
        {
            "garage.txt": "How to repair a broken automobile engine at home.",
            "cake.txt": "Baking a chocolate cake with butter and sugar.",
            "meeting.txt": "The car park is full: move the meeting to Tuesday.",
            "wash.txt": "Car wash prices: a car, a van, a car with a trailer.",
            "motor.txt": "Electric motor windings overheat when damaged.",
        },
    )
    query = "mending a damaged car motor"
    bm25 = keel.KnowledgeBase()
    bm25.index_folder(folder)
    hybrid = keel.KnowledgeBase(tmp_path / "kb", embedder=embedder)
    assert hybrid.hybrid
    hybrid.index_folder(folder)
    lexical = bm25.search(query, k=5)
    # BM25 alone: only passages sharing a word, scored by BM25 itself.
    assert [h.doc_id for h in lexical] == ["motor.txt", "wash.txt", "meeting.txt"]
    assert all(h.score == h.sources[0][2] for h in lexical)
    # Hybrid: the same passages, then garage.txt, which shares no word with the query but is
    # dense retrieval's best; RRF scores are sum(1 / (60 + rank)) over both lists.
    fused = hybrid.search(query, k=5)
    assert [h.doc_id for h in fused] == [
        "motor.txt",
        "wash.txt",
        "meeting.txt",
        "garage.txt",
        "cake.txt",
    ]
    assert fused[3].sources == [("dense", 1, pytest.approx(fused[3].sources[0][2]))]
    for h in fused:
        assert h.score == pytest.approx(sum(1 / (60 + rank) for _, rank, _ in h.sources))
    # A passage both retrievers rank first is fused from both.
    both = hybrid.search("repair an automobile engine", k=1)[0]
    assert both.doc_id == "garage.txt"
    assert sorted(s[0] for s in both.sources) == ["bm25", "dense"]
    # Reopening a hybrid knowledge base needs its embedder, and keeps the dense index.
    with pytest.raises(keel.RagConfigError, match="with an embedder"):
        keel.KnowledgeBase(tmp_path / "kb")
    again = keel.KnowledgeBase(tmp_path / "kb", embedder=embedder)
    assert [h.doc_id for h in again.search(query, k=5)] == [h.doc_id for h in fused]
    assert again.index_folder(folder).chunks == 0
    keel.KnowledgeBase(tmp_path / "bm25-only").index_folder(folder)
    with pytest.raises(keel.RagConfigError, match="without an embedder"):
        keel.KnowledgeBase(tmp_path / "bm25-only", embedder=embedder)


def test_cross_encoder_reranks_the_fused_hits(
    docs: Path, embedder: keel.Embedder, cross_encoder: keel.CrossEncoder
) -> None:
    kb = keel.KnowledgeBase(embedder=embedder, cross_encoder=cross_encoder, rerank_top=5)
    assert kb.reranked
    kb.index_folder(docs)
    hits = kb.search("why do thin shells buckle", k=3)
    assert hits[0].sources[-1][0] == "rerank"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    want = cross_encoder.score("why do thin shells buckle", [f"{h.title} {h.text}" for h in hits])
    assert [h.score for h in hits] == pytest.approx(want, abs=1e-5)


def test_async_knowledge_base(docs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        akb = await keel.AsyncKnowledgeBase.open(tmp_path / "kb")
        report = await akb.index_folder(docs)
        assert report.added == 4
        hits, direct = await asyncio.gather(
            akb.search("lift of a wing", k=2), asyncio.to_thread(akb.sync.search, "lift", 2)
        )
        assert hits[0].doc_id == direct[0].doc_id == "wings.md"
        assert await akb.add("x", "flutter") == 1
        assert await akb.delete("x")
        await akb.save()
        with pytest.raises(keel.RagConfigError):
            await akb.search("x", k=0)

    asyncio.run(main())
    assert keel.AsyncKnowledgeBase(keel.KnowledgeBase()).sync.documents == 0
