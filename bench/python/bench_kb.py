"""keel.KnowledgeBase (one call: folder in, cited hits out) beside the hand-assembled equivalent a
Python user writes today, on the same files in the same run.

Data: ../shared/data/cranfield (1400 abstracts, 225 judged queries), written once to a temporary
folder as one .txt file per document (read there by both sides; nothing is copied into the repo).

- BM25 alone: keel.KnowledgeBase().index_folder(folder) vs reading the files + bm25s (Lucene
  BM25, k1 1.2, b 0.75, English stopwords + Snowball stemmer, as keel's analyzer).
- Hybrid: keel.KnowledgeBase(embedder=keel.Embedder(minilm)) vs reading the files + bm25s +
  MiniLM in onnxruntime (tokenizers, mean pooling, length-sorted batches of 32) + numpy matrix,
  search = bm25s top 100 + query embedding + numpy top 100 + RRF (k = 60) in Python.
- Same unit of retrieval on both sides: keel runs with chunk_size=5000 (no Cranfield abstract is
  longer, so one passage per file, as the anchor indexes whole files); keel's default chunking
  (1000 chars) is reported as an extra BM25 row.
- Hybrid runs on the first --hybrid-docs files (200): embedding is the cost, and the anchor
  embeds everything again on each rebuild.
- Re-index after one file changed: keel re-reads and hashes every file but re-indexes only that
  one; the anchor has no incremental index and rebuilds.
- Quality (nDCG@10 by keel.evaluate) shows that both sides compute the same thing.

Times: indexing is the median of --rounds fresh builds (hybrid: --hybrid-rounds), search the
median and p95 of one query per call over the queries. Threads: both sides use --threads for the
model. Run: .venv/bin/python bench/python/bench_kb.py [--rounds 3] [--hybrid-rounds 1]
[--threads 2] [--queries 225]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
sys.path.insert(0, str(ROOT / "scripts"))

import neural_reference as ref  # noqa: E402

DEPTH = 100
K = 10


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def latencies(fn: Callable[[str], Any], queries: list[str]) -> tuple[float, float]:
    fn(queries[0])  # warm
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return statistics.median(ts), ts[int(0.95 * (len(ts) - 1))]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_folder(dest: Path, limit: int | None = None) -> dict[str, str]:
    """One <id>.txt per Cranfield document (the first `limit`); returns {file id: text}."""
    texts = {}
    lines = (CRANFIELD / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    for line in lines[:limit]:
        doc = json.loads(line)
        name = f"{doc['_id']}.txt"
        (dest / name).write_text(doc["text"], encoding="utf-8")
        texts[name] = doc["text"]
    return texts


def read_folder(folder: Path) -> tuple[list[str], list[str]]:
    """What the hand-assembled version does first: read every file."""
    ids, texts = [], []
    for path in sorted(folder.glob("*.txt")):
        ids.append(path.name)
        texts.append(path.read_text(encoding="utf-8"))
    return ids, texts


class Bm25sAnchor:
    def __init__(self, folder: Path) -> None:
        self.stemmer = Stemmer.Stemmer("english")
        self.ids, texts = read_folder(folder)
        self.bm25 = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        self.bm25.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False),
            show_progress=False,
        )

    def search(self, query: str, k: int = K) -> list[tuple[str, float]]:
        tok = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False)
        k = min(k, len(self.ids))
        docs, scores = self.bm25.retrieve(tok, k=k, show_progress=False)
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]


class HybridAnchor(Bm25sAnchor):
    def __init__(self, folder: Path, threads: int) -> None:
        super().__init__(folder)
        path = MODELS / "minilm"
        self.sess, self.tok = ref.session(path, threads), ref.tokenizer(path)
        _, texts = read_folder(folder)
        self.vecs = ref.embed(self.sess, self.tok, texts, batch_size=32)

    def search(self, query: str, k: int = K) -> list[tuple[str, float]]:
        lexical = super().search(query, DEPTH)
        q = ref.embed(self.sess, self.tok, [query])[0]
        sims = self.vecs @ q
        top = np.argpartition(-sims, DEPTH)[:DEPTH]
        dense = [self.ids[int(j)] for j in top[np.argsort(-sims[top], kind="stable")]]
        fused: dict[str, float] = {}
        for ranked in ([d for d, _ in lexical], dense):
            for rank, doc in enumerate(ranked, 1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (60 + rank)
        return sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:k]


def ndcg(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    return keel.evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hybrid-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=225)
    ap.add_argument(
        "--hybrid-docs",
        type=int,
        default=200,
        help="documents in the hybrid folder (embedding the whole corpus three times is minutes "
        "of CPU per pass on a loaded machine)",
    )
    args = ap.parse_args()

    _, queries, qrels = keel.load_beir(CRANFIELD)
    qids = list(queries)[: args.queries]
    qtexts = [queries[q] for q in qids]
    qrels = {q: {f"{d}.txt": g for d, g in rel.items()} for q, rel in qrels.items() if q in qids}

    def run_of(search: Callable[[str], list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
        return {q: dict(search(queries[q])) for q in qids}

    def keel_pairs(kb: keel.KnowledgeBase) -> Callable[[str], list[tuple[str, float]]]:
        return lambda q: [(h.doc_id, h.score) for h in kb.search(q, k=K)]

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cranfield"
        folder.mkdir()
        write_folder(folder)
        hfolder = Path(tmp) / "cranfield-hybrid"
        hfolder.mkdir()
        write_folder(hfolder, args.hybrid_docs)

        def reindex_one(changed: Path, index: Callable[[], Any], rounds: int) -> float:
            original = changed.read_text(encoding="utf-8")
            times = []
            for i in range(rounds):
                changed.write_text(original + f" revision {i}", encoding="utf-8")
                gc.collect()
                t0 = time.perf_counter()
                index()
                times.append(time.perf_counter() - t0)
            changed.write_text(original, encoding="utf-8")
            return statistics.median(times)

        rows = []

        # BM25 alone.
        def keel_bm25(**kw: Any) -> keel.KnowledgeBase:
            kb = keel.KnowledgeBase(**kw)
            kb.index_folder(folder)
            return kb

        log("BM25: indexing")
        t_keel, kb = timed(lambda: keel_bm25(chunk_size=5000), args.rounds)
        t_anchor, anchor = timed(lambda: Bm25sAnchor(folder), args.rounds)
        t_keel_default, kb_default = timed(keel_bm25, args.rounds)
        log("BM25: searching")
        s_keel = latencies(lambda q: kb.search(q, k=K), qtexts)
        s_anchor = latencies(lambda q: anchor.search(q), qtexts)
        s_default = latencies(lambda q: kb_default.search(q, k=K), qtexts)
        log("BM25: re-indexing")
        changed = folder / "700.txt"
        r_keel = reindex_one(changed, lambda: kb.index_folder(folder), args.rounds)
        r_anchor = reindex_one(changed, lambda: Bm25sAnchor(folder), args.rounds)
        rows.append(
            (
                "BM25",
                "keel KnowledgeBase",
                t_keel,
                r_keel,
                s_keel,
                ndcg(run_of(keel_pairs(kb)), qrels),
            )
        )
        rows.append(
            (
                "BM25",
                "bm25s by hand",
                t_anchor,
                r_anchor,
                s_anchor,
                ndcg(run_of(anchor.search), qrels),
            )
        )
        rows.append(
            (
                "BM25",
                f"keel, default chunking ({kb_default.passages} passages)",
                t_keel_default,
                float("nan"),
                s_default,
                ndcg(run_of(keel_pairs(kb_default)), qrels),
            )
        )

        # Hybrid.
        embedder = keel.Embedder(MODELS / "minilm", threads=args.threads, batch_size=32)

        def keel_hybrid() -> keel.KnowledgeBase:
            kb = keel.KnowledgeBase(embedder=embedder, chunk_size=5000)
            kb.index_folder(hfolder)
            return kb

        log(f"hybrid: indexing {args.hybrid_docs} files")
        th_keel, hkb = timed(keel_hybrid, args.hybrid_rounds)
        log("hybrid: anchor indexing")
        th_anchor, hanchor = timed(lambda: HybridAnchor(hfolder, args.threads), args.hybrid_rounds)
        log("hybrid: searching")
        sh_keel = latencies(lambda q: hkb.search(q, k=K), qtexts)
        sh_anchor = latencies(lambda q: hanchor.search(q), qtexts)
        log("hybrid: re-indexing")
        hchanged = hfolder / "100.txt"
        rh_keel = reindex_one(hchanged, lambda: hkb.index_folder(hfolder), args.hybrid_rounds)
        rh_anchor = reindex_one(
            hchanged, lambda: HybridAnchor(hfolder, args.threads), args.hybrid_rounds
        )
        rows.append(
            (
                f"hybrid ({args.hybrid_docs} files)",
                "keel KnowledgeBase",
                th_keel,
                rh_keel,
                sh_keel,
                ndcg(run_of(keel_pairs(hkb)), qrels),
            )
        )
        rows.append(
            (
                f"hybrid ({args.hybrid_docs} files)",
                "bm25s + onnxruntime + numpy + RRF by hand",
                th_anchor,
                rh_anchor,
                sh_anchor,
                ndcg(run_of(hanchor.search), qrels),
            )
        )

    out.append(
        f"Cranfield as 1400 .txt files (hybrid: the first {args.hybrid_docs}, so its nDCG is not "
        f"comparable to BM25's); {len(qids)} queries, k = {K}; threads {args.threads}; indexing "
        f"median of {args.rounds} (hybrid {args.hybrid_rounds}) fresh builds."
    )
    out.append("")
    out.append(
        "| retrieval | system | index folder (s) | re-index, 1 file changed (s) | "
        "search p50 (ms) | search p95 (ms) | nDCG@10 |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for kind, name, t, r, (p50, p95), quality in rows:
        rs = "—" if r != r else f"{r:.3f}"
        out.append(
            f"| {kind} | {name} | {t:.3f} | {rs} | {p50 * 1e3:.3f} | {p95 * 1e3:.3f} | "
            f"{quality:.4f} |"
        )
    out.append("")
    out.append(
        f"Ratios (anchor / keel): BM25 index {t_anchor / t_keel:.2f}x, search p50 "
        f"{s_anchor[0] / s_keel[0]:.2f}x, re-index {r_anchor / r_keel:.2f}x; hybrid index "
        f"{th_anchor / th_keel:.2f}x, search p50 {sh_anchor[0] / sh_keel[0]:.2f}x, re-index "
        f"{rh_anchor / rh_keel:.2f}x."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
