"""keel's neural retrieval (Embedder, DenseIndex, CrossEncoder) side by side with the same models
run from Python with onnxruntime + tokenizers + numpy, in one run.

Quality on ../shared/data/cranfield (1400 docs, 225 judged queries), every run scored by
keel.evaluate: BM25 alone, dense alone, hybrid RRF (k=60, equal weights, depth 100), the best
hybrid setting chosen on the first half of the queries and reported on the second half, and
hybrid + rerank (plumbing only: the test cross-encoder is untrained). The Python anchor
(bm25s stemmed + MiniLM int8 in onnxruntime + numpy, RRF k=60) is scored by the same evaluator.

Speed (both sides with the same thread count, batch size, length-sorted batching and tokenizer
parallelism (none: TOKENIZERS_PARALLELISM=false, as keel); rounds and calls interleaved):
  embedding throughput on the Cranfield corpus (docs/s), and keel's overhead over the model call
    alone (the seconds Python spends inside InferenceSession.run on the same batches);
  query embedding latency (one query per call);
  exact search over 100k x 384 unit vectors vs numpy (M @ q + argpartition), f32 and int8, with
    the fraction of the measured memory-read bandwidth;
  rerank latency for 100 (query, passage) pairs vs onnxruntime on the same cross-encoder.

Run: .venv/bin/python bench/python/bench_neural.py [--rounds 3] [--threads 2] [--markdown]
Models: `make models` (.cache/models or $KEEL_TEST_MODELS).
"""

from __future__ import annotations

import argparse
import itertools
import os

# keel tokenizes each batch on the calling thread (src/rag/model.rs `encode`); HF tokenizers'
# `encode_batch` would otherwise tokenize on its own thread pool beside ONNX Runtime's threads.
# Same setting on both sides (set before tokenizers is imported).
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import bm25s
import numpy as np
import Stemmer
from benchutil import interleaved_samples

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
sys.path.insert(0, str(ROOT / "scripts"))

import neural_reference as ref  # noqa: E402

DEPTH = 100
METRICS = ["ndcg@10", "recall@100"]
Run = dict[str, dict[str, float]]


def doc_text(d: dict[str, Any]) -> str:
    # What keel's DenseIndex and CrossEncoder embed for a passage: title, a space, text.
    return f"{d['title']} {d['text']}" if d["title"] else d["text"]


def run_of(hits_per_query: dict[str, list[Any]]) -> Run:
    return {q: {h.doc_id: h.score for h in hits} for q, hits in hits_per_query.items()}


def scores(qrels: dict, run: Run, queries: list[str]) -> dict[str, float]:
    sub_q = {q: qrels[q] for q in queries if q in qrels}
    sub_r = {q: run[q] for q in queries if q in run}
    return keel.evaluate(sub_q, sub_r, METRICS)


def rrf_py(lists: list[dict[str, float]], k: float = 60.0, limit: int = DEPTH) -> dict[str, float]:
    fused: dict[str, float] = {}
    for lst in lists:
        ranked = sorted(lst.items(), key=lambda kv: -kv[1])
        for rank, (doc, _) in enumerate(ranked, 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return dict(sorted(fused.items(), key=lambda kv: -kv[1])[:limit])


def quality(args: argparse.Namespace, out: list[str]) -> None:
    corpus, queries, qrels = keel.load_beir(CRANFIELD)
    qids = list(queries)
    half = len(qids) // 2
    tune, test = qids[:half], qids[half:]
    texts = [doc_text(d) for d in corpus]
    ids = [d["id"] for d in corpus]

    embedder = keel.Embedder(MODELS / "minilm", threads=args.threads, batch_size=32)
    bm25 = keel.BM25Index()
    bm25.add_many(corpus)
    dense = keel.DenseIndex(embedder)
    dense.add_many(corpus)
    deep = 200
    bm25_hits = {q: bm25.search(queries[q], k=deep) for q in qids}
    dense_hits = {q: dense.search(queries[q], k=deep) for q in qids}

    def hybrid(q: str, depth: int, method: str, w: float, k: float) -> list[Any]:
        lists = {"bm25": bm25_hits[q][:depth], "dense": dense_hits[q][:depth]}
        rrf_k = k if method == "rrf" else None  # a weighted combination takes no k
        weights = {"bm25": 1.0, "dense": w}
        return keel.fuse(lists, method=method, k=rrf_k, weights=weights, limit=DEPTH)

    runs: dict[str, Run] = {
        "keel BM25": run_of({q: h[:DEPTH] for q, h in bm25_hits.items()}),
        "keel dense (MiniLM int8)": run_of({q: h[:DEPTH] for q, h in dense_hits.items()}),
        "keel hybrid RRF (k=60, w=1:1, depth 100)": run_of(
            {q: hybrid(q, DEPTH, "rrf", 1.0, 60.0) for q in qids}
        ),
    }

    # Best setting on the first half of the queries.
    grid = []
    for method, k in [
        ("rrf", 60.0),
        ("rrf", 30.0),
        ("rrf", 10.0),
        ("minmax", 0.0),
        ("zscore", 0.0),
    ]:
        for w, depth in itertools.product(
            [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0], [20, 50, 100, 200]
        ):
            run = run_of({q: hybrid(q, depth, method, w, k) for q in tune})
            grid.append((scores(qrels, run, tune)["ndcg@10"], method, k, w, depth))
    best = max(grid)
    _, method, k, w, depth = best
    label = f"{method}" + (f" k={k:g}" if method == "rrf" else "")
    best_name = f"keel hybrid best ({label}, w_dense={w:g}, depth {depth})"
    runs[best_name] = run_of({q: hybrid(q, depth, method, w, k) for q in qids})

    ce = keel.CrossEncoder(MODELS / "test-cross-encoder", threads=args.threads)
    hybrid_run = {q: hybrid(q, DEPTH, "rrf", 1.0, 60.0) for q in qids}
    t0 = time.perf_counter()
    reranked = {
        q: ce.rerank(queries[q], hits, top=args.rerank_top) for q, hits in hybrid_run.items()
    }
    rerank_s = time.perf_counter() - t0
    runs[f"keel hybrid RRF + rerank top {args.rerank_top} (untrained test model)"] = run_of(
        reranked
    )

    # Python anchor: bm25s stemmed + MiniLM int8 in onnxruntime + numpy, RRF k=60.
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False))
    qtok = bm25s.tokenize(
        [queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    docs_idx, doc_scores = retriever.retrieve(qtok, k=DEPTH, show_progress=False)
    py_bm25 = {
        q: {ids[int(d)]: float(s) for d, s in zip(docs_idx[i], doc_scores[i])}
        for i, q in enumerate(qids)
    }
    path = MODELS / "minilm"
    sess, tok = ref.session(path, args.threads), ref.tokenizer(path)
    doc_vecs = ref.embed(sess, tok, texts)
    q_vecs = ref.embed(sess, tok, [queries[q] for q in qids])
    sims = q_vecs @ doc_vecs.T
    py_dense = {}
    for i, q in enumerate(qids):
        top = np.argsort(-sims[i], kind="stable")[:DEPTH]
        py_dense[q] = {ids[j]: float(sims[i, j]) for j in top}
    runs["Python bm25s stemmed"] = py_bm25
    runs["Python dense (onnxruntime + numpy)"] = py_dense
    runs["Python hybrid RRF k=60"] = {q: rrf_py([py_bm25[q], py_dense[q]]) for q in qids}

    out.append(
        "| system | nDCG@10 (all) | Recall@100 (all) | nDCG@10 (2nd half) | Recall@100 (2nd half) |"
    )
    out.append("|---|---:|---:|---:|---:|")
    for name, run in runs.items():
        a, b = scores(qrels, run, qids), scores(qrels, run, test)
        out.append(
            f"| {name} | {a['ndcg@10']:.4f} | {a['recall@100']:.4f} | "
            f"{b['ndcg@10']:.4f} | {b['recall@100']:.4f} |"
        )
    out.append("")
    out.append(
        f"Tuning: {len(grid)} settings scored on the first {len(tune)} queries; best there "
        f"nDCG@10 {best[0]:.4f}. Rerank: {len(qids)} queries x top {args.rerank_top} in "
        f"{rerank_s:.1f} s."
    )
    out.append("")


def int8_quality(args: argparse.Namespace, out: list[str]) -> None:
    """Dense search with int8 vectors vs f32 on real MiniLM embeddings of Cranfield."""
    corpus, queries, qrels = keel.load_beir(CRANFIELD)
    qids = list(queries)
    ids = [d["id"] for d in corpus]
    embedder = keel.Embedder(MODELS / "minilm", threads=args.threads, batch_size=32)
    docs = embedder.embed_bytes([doc_text(d) for d in corpus])
    qvecs = embedder.embed([queries[q] for q in qids])
    exact, approx = keel.DenseIndex(dim=embedder.dim), keel.DenseIndex(dim=embedder.dim, int8=True)
    exact.add_vectors(ids, docs)
    approx.add_vectors(ids, docs)
    e_hits = {q: exact.search_vector(v, k=DEPTH) for q, v in zip(qids, qvecs)}
    a_hits = {q: approx.search_vector(v, k=DEPTH) for q, v in zip(qids, qvecs)}
    overlap = statistics.mean(
        len({h.doc_id for h in e_hits[q][:10]} & {h.doc_id for h in a_hits[q][:10]}) / 10
        for q in qids
    )
    se, sa = scores(qrels, run_of(e_hits), qids), scores(qrels, run_of(a_hits), qids)
    out.append("| dense vectors | nDCG@10 | Recall@100 | recall@10 vs f32 | vector bytes |")
    out.append("|---|---:|---:|---:|---:|")
    dim = embedder.dim
    out.append(
        f"| f32 | {se['ndcg@10']:.4f} | {se['recall@100']:.4f} | 1.000 | {len(ids) * dim * 4:,} |"
    )
    out.append(
        f"| int8 | {sa['ndcg@10']:.4f} | {sa['recall@100']:.4f} | {overlap:.3f} | "
        f"{len(ids) * (dim + 4):,} |"
    )
    out.append("")


def speed(args: argparse.Namespace, out: list[str]) -> None:
    corpus, queries, _ = keel.load_beir(CRANFIELD)
    texts = [doc_text(d) for d in corpus][: args.embed_docs]
    qtexts = list(queries.values())
    path = MODELS / "minilm"
    embedder = keel.Embedder(path, threads=args.threads, batch_size=32)
    sess, tok = ref.session(path, args.threads), ref.tokenizer(path)

    rows = []
    # Interleaved rounds (keel first in even rounds, Python first in odd ones) so that load
    # changes on the shared machine hit both alike.
    embedder.embed(texts[:32])
    ref.embed(sess, tok, texts[:32])
    model_times: list[float] = []

    def py_embed() -> None:
        mt: list[float] = []
        ref.embed(sess, tok, texts, model_time=mt)
        model_times.append(sum(mt))

    k_times, p_times = interleaved_samples([lambda: embedder.embed(texts), py_embed], args.rounds)
    k_time, p_time = statistics.median(k_times), statistics.median(p_times)
    model_only = statistics.median(model_times)
    n = len(texts)
    rows.append((f"embed {n} Cranfield docs (docs/s)", n / k_time, n / p_time, "higher"))
    overhead = k_time / model_only - 1

    def paired_ms(fns: list[Callable[[int], Any]], n: int) -> list[float]:
        """Median latency (ms) of each function over calls 0..n-1, alternating which one runs
        first on each call."""
        for fn in fns:
            fn(0)  # warm-up
        lat: list[list[float]] = [[] for _ in fns]
        for i in range(n):
            for j in range(len(fns)):
                f = (i + j) % len(fns)
                t0 = time.perf_counter()
                fns[f](i)
                lat[f].append(time.perf_counter() - t0)
        return [statistics.median(x) * 1e3 for x in lat]

    k_lat, p_lat = paired_ms(
        [lambda i: embedder.embed([qtexts[i]]), lambda i: ref.embed(sess, tok, [qtexts[i]])],
        len(qtexts),
    )
    rows.append(("embed one query, median latency (ms)", k_lat, p_lat, "lower"))

    # Exact search over 100k x 384.
    rng = np.random.default_rng(7)
    n_vec, dim = 100_000, 384
    m = rng.standard_normal((n_vec, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    vec_ids = [f"v{i}" for i in range(n_vec)]
    idx32 = keel.DenseIndex(dim=dim)
    idx32.add_vectors(vec_ids, m.tobytes())
    idx8 = keel.DenseIndex(dim=dim, int8=True)
    idx8.add_vectors(vec_ids, m.tobytes())
    qs = rng.standard_normal((50, dim), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    qlists = [q.tolist() for q in qs]

    def np_search(q: np.ndarray) -> np.ndarray:
        s = m @ q
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    k32, k8, npl = paired_ms(
        [
            lambda i: idx32.search_vector(qlists[i], k=10),
            lambda i: idx8.search_vector(qlists[i], k=10),
            lambda i: np_search(qs[i]),
        ],
        len(qs),
    )
    rows.append(("search 100k x 384 f32, k=10, median latency (ms)", k32, npl, "lower"))
    rows.append(("search 100k x 384 int8, k=10, median latency (ms)", k8, npl, "lower"))
    same = sum(
        [h.doc_id for h in idx32.search_vector(qlists[i], k=10)]
        == [vec_ids[j] for j in np_search(qs[i])]
        for i in range(len(qs))
    )
    recall8 = statistics.mean(
        len(
            {h.doc_id for h in idx8.search_vector(qlists[i], k=10)}
            & {vec_ids[j] for j in np_search(qs[i])}
        )
        / 10
        for i in range(len(qs))
    )

    # Memory-read bandwidth: numpy sums of a 1 GiB array on 1 and 2 threads, best of 3.
    big = np.ones(1 << 28, dtype=np.float32)
    halves = np.array_split(big, 2)
    bw = 0.0
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            t0 = time.perf_counter()
            big.sum()
            bw = max(bw, big.nbytes / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            list(pool.map(np.sum, halves))
            bw = max(bw, big.nbytes / (time.perf_counter() - t0))
    del big, halves
    f32_bytes, i8_bytes = n_vec * dim * 4, n_vec * (dim + 4)

    # Rerank 100 pairs.
    ce_path = MODELS / "test-cross-encoder"
    ce = keel.CrossEncoder(ce_path, threads=args.threads, batch_size=16)
    ce_sess, ce_tok = ref.session(ce_path, args.threads), ref.tokenizer(ce_path)
    passages = texts[:100]
    rq = qtexts[: args.rerank_queries]
    ce.score(rq[0], passages)
    kr_t, pr_t = interleaved_samples(
        [
            lambda: [ce.score(q, passages) for q in rq],
            lambda: [ref.rerank(ce_sess, ce_tok, q, passages) for q in rq],
        ],
        args.rounds,
    )
    kr, pr = statistics.median(kr_t), statistics.median(pr_t)
    rows.append(("rerank 100 pairs, latency (ms)", kr / len(rq) * 1e3, pr / len(rq) * 1e3, "lower"))

    out.append("| measurement | keel | Python anchor | keel advantage |")
    out.append("|---|---:|---:|---:|")
    for name, kv, pv, better in rows:
        ratio = kv / pv if better == "higher" else pv / kv
        out.append(f"| {name} | {kv:,.2f} | {pv:,.2f} | {ratio:.2f}x |")
    out.append("")
    out.append(
        f"- Embedding: keel {k_time:.2f} s for {n} docs; Python's time inside "
        f"InferenceSession.run alone on the same batches: {model_only:.2f} s, so keel's "
        f"whole path (tokenize, model, pool, normalise, return lists) is {overhead * 100:+.1f}% "
        f"over the model call."
    )
    out.append(
        f"- Search: keel f32 returned numpy's exact top-10 order for {same}/{len(qs)} queries; "
        f"int8 recall@10 vs exact: {recall8:.3f}. Measured read bandwidth {bw / 1e9:.1f} GB/s; "
        f"keel f32 scans {f32_bytes / 1e6:.0f} MB in {k32:.2f} ms = "
        f"{f32_bytes / (k32 / 1e3) / 1e9:.1f} GB/s ({f32_bytes / (k32 / 1e3) / bw:.0%}), int8 "
        f"{i8_bytes / 1e6:.0f} MB in {k8:.2f} ms = {i8_bytes / (k8 / 1e3) / 1e9:.1f} GB/s "
        f"({i8_bytes / (k8 / 1e3) / bw:.0%}); numpy {f32_bytes / (npl / 1e3) / 1e9:.1f} GB/s."
    )
    out.append("")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rerank-top", type=int, default=10)
    ap.add_argument("--embed-docs", type=int, default=400)
    ap.add_argument("--rerank-queries", type=int, default=1)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-int8", action="store_true")
    args = ap.parse_args()
    out: list[str] = []
    if not args.skip_quality:
        out.append("### Quality on Cranfield")
        out.append("")
        quality(args, out)
    if not args.skip_int8:
        out.append("### int8 vs f32 dense vectors on Cranfield (MiniLM embeddings)")
        out.append("")
        int8_quality(args, out)
    if not args.skip_speed:
        out.append(f"### Speed ({args.threads} threads, median of {args.rounds} rounds)")
        out.append("")
        speed(args, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
