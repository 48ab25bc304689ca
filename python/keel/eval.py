"""Evaluate keel's BM25 on a BEIR data set: ``python -m keel.eval <beir_dir>``.

Loads the corpus, indexes title + text, runs every judged query, and prints nDCG@10, Recall@100,
MAP, MRR and P@10 (trec_eval definitions) with the time spent loading, indexing and searching.
BEIR's habit of dropping a hit whose document id equals the query id is ``--drop-self-hits``,
off by default (it is only right for data sets whose queries are corpus documents).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from ._native import BM25Index, evaluate, load_beir


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keel.eval", description=__doc__.splitlines()[0])
    p.add_argument("beir_dir", help="directory with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--k1", type=float, default=1.2)
    p.add_argument("--b", type=float, default=0.75)
    p.add_argument("--language", default="en", help="ISO 639-1 code of the analyzer (default en)")
    p.add_argument("--no-stemming", action="store_true", help="disable Snowball stemming")
    p.add_argument("--no-stopwords", action="store_true", help="keep stopwords")
    p.add_argument("--top-k", type=int, default=1000, help="hits retrieved per query")
    p.add_argument(
        "--metrics",
        help="comma-separated (default: ndcg@10, recall@100, map, mrr, precision@10)",
    )
    p.add_argument("--drop-self-hits", action="store_true", help="drop hits whose id = query id")
    p.add_argument("--threads", type=int, default=1, help="search threads (0 = all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    corpus, queries, qrels = load_beir(args.beir_dir, args.split)
    t1 = time.perf_counter()
    index = BM25Index(
        args.k1,
        args.b,
        language=args.language,
        stemming=not args.no_stemming,
        stopwords=not args.no_stopwords,
    )
    index.add_many(corpus)
    t2 = time.perf_counter()
    qids = list(queries)
    results = index.search_many([queries[q] for q in qids], args.top_k, threads=args.threads)
    t3 = time.perf_counter()
    run = {
        q: {h.doc_id: h.score for h in hits if not (args.drop_self_hits and h.doc_id == q)}
        for q, hits in zip(qids, results)
    }
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    scores = evaluate(qrels, run, metrics)
    t4 = time.perf_counter()

    report = {
        "dataset": args.beir_dir,
        "documents": len(corpus),
        "queries": len(qids),
        "metrics": scores,
        "seconds": {
            "load": t1 - t0,
            "index": t2 - t1,
            "search": t3 - t2,
            "evaluate": t4 - t3,
        },
        "index_docs_per_s": len(corpus) / max(t2 - t1, 1e-9),
        "queries_per_s": len(qids) / max(t3 - t2, 1e-9),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.beir_dir}: {len(corpus)} documents, {len(qids)} queries ({args.split})")
    for name in metrics:
        print(f"  {name:<14} {scores[name]:.4f}")
    s = report["seconds"]
    print(
        f"  load {s['load']:.3f}s"
        f"  index {s['index']:.3f}s ({report['index_docs_per_s']:,.0f} docs/s)"
        f"  search {s['search']:.3f}s ({report['queries_per_s']:,.0f} q/s)"
        f"  evaluate {s['evaluate']:.3f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
