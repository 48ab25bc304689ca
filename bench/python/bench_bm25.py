"""keel.BM25Index side by side with the BM25 libraries a Python service would otherwise use.

Two corpora, same process, same evaluator:
  cranfield  ../shared/data/cranfield (BEIR layout, title + text, 225 judged queries): nDCG@10,
             Recall@100 and MAP (keel.evaluate, trec_eval definitions; agreement with ranx is
             tested in tests/python/test_rag.py), then single-thread queries/s.
  debian     the descriptions of every package apt knows (`apt-cache dumpavail`, ~60k documents;
             runs `apt-get update` first if the list is empty): indexing docs/s and queries/s with
             1 and 2 threads (keel: `add_many(threads=2)`, `search_many(threads=2)`), for 2000
             queries made from package short descriptions.

Anchors: bm25s (method="lucene", k1=1.2, b=0.75; PyStemmer English stemmer + its English
stopwords, and unstemmed), rank_bm25 (BM25Okapi over the same stemmed tokens), tantivy (NLTK
stopwords + English stemmer, ids from a fast field, in-RAM index). Every timing is the median of
--rounds rounds and covers the whole Python-level path: text in, (doc id, score) lists out (query
tokenization included). Rounds are interleaved: round r times every system once, in an order
that rotates with r, so load drifting on a shared machine falls on every system alike.

Run: .venv/bin/python bench/python/bench_bm25.py [--rounds 5] [--markdown] [--skip-debian]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import bm25s
import numpy as np
import rank_bm25
import Stemmer
import tantivy
from benchutil import interleaved

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()
K_SPEED = 10
K_QUALITY = 100

Doc = tuple[str, str, str]  # id, title, text
Results = list[list[tuple[str, float]]]


# --- systems --------------------------------------------------------------------------------


class Keel:
    name = "keel"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def build(self, docs: list[Doc]) -> None:
        self.index = keel.BM25Index(1.2, 0.75)
        self.index.add_many(
            [keel.Document(id, text, title) for id, title, text in docs], threads=self.threads
        )

    def search(self, queries: list[str], k: int) -> Results:
        if self.threads == 1:
            s = self.index.search
            return [[(h.doc_id, h.score) for h in s(q, k)] for q in queries]
        hits = self.index.search_many(queries, k, threads=self.threads)
        return [[(h.doc_id, h.score) for h in r] for r in hits]


class Bm25s:
    def __init__(self, stem: bool, threads: int = 1) -> None:
        self.stemmer = Stemmer.Stemmer("english") if stem else None
        self.name = "bm25s (stemmed)" if stem else "bm25s (unstemmed)"
        self.threads = threads

    def build(self, docs: list[Doc]) -> None:
        self.ids = [d[0] for d in docs]
        tokens = bm25s.tokenize(
            [f"{d[1]} {d[2]}" for d in docs],
            stopwords="en",
            stemmer=self.stemmer,
            show_progress=False,
        )
        self.retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        self.retriever.index(tokens, show_progress=False)

    def search(self, queries: list[str], k: int) -> Results:
        tokens = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
        k = min(k, len(self.ids))
        docs, scores = self.retriever.retrieve(
            tokens, k=k, show_progress=False, n_threads=self.threads
        )
        ids = self.ids
        return [
            [(ids[i], float(s)) for i, s in zip(row, srow) if s > 0]
            for row, srow in zip(docs, scores)
        ]


WORD = re.compile(r"(?u)\b\w\w+\b")


class RankBm25:
    name = "rank_bm25 (Okapi, stemmed)"

    def __init__(self) -> None:
        self.stemmer = Stemmer.Stemmer("english")
        self.stop = set(bm25s.stopwords.STOPWORDS_EN)

    def tok(self, text: str) -> list[str]:
        words = [w for w in WORD.findall(text.lower()) if w not in self.stop]
        return self.stemmer.stemWords(words)

    def build(self, docs: list[Doc]) -> None:
        self.ids = [d[0] for d in docs]
        self.bm25 = rank_bm25.BM25Okapi([self.tok(f"{d[1]} {d[2]}") for d in docs], k1=1.2, b=0.75)

    def search(self, queries: list[str], k: int) -> Results:
        out = []
        for q in queries:
            scores = self.bm25.get_scores(self.tok(q))
            top = np.argsort(-scores, kind="stable")[:k]
            out.append([(self.ids[i], float(scores[i])) for i in top if scores[i] > 0])
        return out


# keel's analyzer drops the NLTK English stopwords (the `stop-words` crate's list, copied here):
# tantivy gets the same list, so both sides index and score the same terms.
NLTK_EN = (Path(__file__).parent / "stopwords_nltk_en.txt").read_text().split()


class Tantivy:
    name = "tantivy (NLTK stopwords + English stemmer)"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def build(self, docs: list[Doc]) -> None:
        sb = tantivy.SchemaBuilder()
        # The id is read back from a fast (columnar) field, as keel returns its ids, not by
        # fetching each stored document.
        sb.add_integer_field("idx", stored=False, fast=True, indexed=False)
        sb.add_text_field("body", stored=False, tokenizer_name="keel_like")
        self.index = tantivy.Index(sb.build())
        analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.custom_stopword(NLTK_EN))
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )
        self.index.register_tokenizer("keel_like", analyzer)
        self.ids = [d[0] for d in docs]
        writer = self.index.writer(heap_size=200_000_000, num_threads=self.threads)
        for i, d in enumerate(docs):
            writer.add_document(tantivy.Document(idx=i, body=f"{d[1]} {d[2]}"))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()

    def one(self, q: str, k: int) -> list[tuple[str, float]]:
        query, _errors = self.index.parse_query_lenient(q, ["body"])
        searcher = self.searcher
        hits = searcher.search(query, k).hits
        idx = searcher.fast_field_values("idx", [addr for _, addr in hits])
        ids = self.ids
        return [(ids[i], score) for (score, _), i in zip(hits, idx)]

    def search(self, queries: list[str], k: int) -> Results:
        if self.threads == 1:
            return [self.one(q, k) for q in queries]
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda q: self.one(q, k), queries))


# --- data -----------------------------------------------------------------------------------


def load_cranfield() -> tuple[list[Doc], list[str], list[str], dict[str, dict[str, int]]]:
    assert (CRANFIELD / "corpus.jsonl").is_file(), f"Cranfield missing at {CRANFIELD}"
    corpus, queries, qrels = keel.load_beir(CRANFIELD)
    docs = [(d["id"], d["title"], d["text"]) for d in corpus]
    qids = list(queries)
    return docs, qids, [queries[q] for q in qids], qrels


def debian_docs() -> list[Doc]:
    def dump() -> str:
        return subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, check=False
        ).stdout

    text = dump()
    if "Package:" not in text:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        text = dump()
    docs: dict[str, Doc] = {}
    for stanza in text.split("\n\n"):
        pkg, desc, in_desc = None, [], False
        for line in stanza.splitlines():
            if line.startswith("Package: "):
                pkg = line[9:].strip()
            elif line.startswith("Description: "):
                desc, in_desc = [line[13:].strip()], True
            elif in_desc and line.startswith(" "):
                desc.append("" if line.strip() == "." else line.strip())
            else:
                in_desc = False
        if pkg and desc and pkg not in docs:
            docs[pkg] = (pkg, desc[0], "\n".join(desc[1:]))
    return list(docs.values())


def debian_queries(docs: list[Doc], n: int) -> list[str]:
    rng = random.Random(42)
    return [rng.choice(docs)[1] for _ in range(n)]


# --- runs -----------------------------------------------------------------------------------


def quality(systems: list[Any], rounds: int) -> list[dict[str, Any]]:
    docs, qids, queries, qrels = load_cranfield()
    rows = []
    for s in systems:
        s.build(docs)
        results = s.search(queries, K_QUALITY)
        run = {q: dict(r) for q, r in zip(qids, results)}
        metrics = keel.evaluate(qrels, run, ["ndcg@10", "recall@100", "map"])
        rows.append({"system": s.name, **metrics})
    times = interleaved([lambda s=s: s.search(queries, K_SPEED) for s in systems], rounds)
    for row, t in zip(rows, times):
        row["qps"] = len(queries) / t
        print(f"  cranfield {row['system']:<28} {json.dumps(row)}", flush=True)
    return rows


def speed(
    factories: list[tuple[str, Callable[[], Any]]], docs: list[Doc], queries: list[str], rounds: int
) -> list[dict[str, Any]]:
    systems = [make() for _, make in factories]
    t_index = interleaved([lambda s=s: s.build(docs) for s in systems], rounds)
    qsets = [queries[:100] if isinstance(s, RankBm25) else queries for s in systems]
    t_query = interleaved(
        [lambda s=s, qs=qs: s.search(qs, K_SPEED) for s, qs in zip(systems, qsets)], rounds
    )
    rows = []
    for (name, _), ti, tq, qs in zip(factories, t_index, t_query, qsets):
        rows.append({"system": name, "docs_per_s": len(docs) / ti, "qps": len(qs) / tq})
        print(f"  debian {name:<34} {json.dumps(rows[-1])}", flush=True)
    return rows


def markdown(cran: list[dict[str, Any]], deb: list[dict[str, Any]], n_docs: int, n_q: int) -> str:
    keel_q = cran[0]
    best_anchor_ndcg = max(r["ndcg@10"] for r in cran[1:])
    fastest = max(r["qps"] for r in cran[1:])
    out = [
        "Cranfield (1400 docs, 225 queries; quality at depth 100, speed at k=10, 1 thread):",
        "",
        "| system | nDCG@10 | Recall@100 | MAP | queries/s | keel q/s ÷ this |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in cran:
        out.append(
            f"| {r['system']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['map']:.4f} "
            f"| {r['qps']:,.0f} | {keel_q['qps'] / r['qps']:.2f}x |"
        )
    out += [
        "",
        f"keel nDCG@10 {keel_q['ndcg@10']:.4f} vs best anchor {best_anchor_ndcg:.4f}; "
        f"queries/s {keel_q['qps'] / fastest:.2f}x the fastest anchor.",
        "",
    ]
    if deb:
        out += [
            f"Debian package descriptions ({n_docs:,} docs, {n_q} queries, k=10):",
            "",
            "| system | indexing docs/s | queries/s |",
            "|---|---:|---:|",
        ]
        for r in deb:
            out.append(f"| {r['system']} | {r['docs_per_s']:,.0f} | {r['qps']:,.0f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--skip-debian", action="store_true")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    cran = quality([Keel(), Bm25s(True), Bm25s(False), RankBm25(), Tantivy()], args.rounds)
    deb: list[dict[str, Any]] = []
    n_docs = 0
    if not args.skip_debian:
        docs = debian_docs()
        n_docs = len(docs)
        queries = debian_queries(docs, args.queries)
        deb = speed(
            [
                ("keel (1 thread)", lambda: Keel(1)),
                ("keel (2 threads)", lambda: Keel(2)),
                ("bm25s stemmed (1 thread)", lambda: Bm25s(True, 1)),
                ("bm25s stemmed (2 threads)", lambda: Bm25s(True, 2)),
                ("tantivy (1 thread)", lambda: Tantivy(1)),
                ("tantivy (2 threads)", lambda: Tantivy(2)),
                ("rank_bm25 (100 queries)", RankBm25),
            ],
            docs,
            queries,
            max(1, args.rounds // 2),
        )
    if args.markdown:
        print(markdown(cran, deb, n_docs, args.queries))


if __name__ == "__main__":
    main()
