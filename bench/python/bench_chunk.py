"""keel.Chunker side by side with the text splitters a Python RAG service would otherwise use.

Same texts, same process, same chunk size (in characters; `len` as the length function for the
anchors), medians over --rounds interleaved rounds (each round times every
splitter once, in an order that rotates); prints MB/s and the ratio keel / anchor:
  - semchunk.chunk (offsets=True, so it also returns offsets like keel), with and without overlap;
  - langchain_text_splitters.RecursiveCharacterTextSplitter (add_start_index=False), same sizes.
Inputs: the Cranfield abstracts one by one ("many small"), and all of them joined by blank lines
("one large", ~1.5 MB). keel's offsets are checked (`text[start:end] == chunk`) outside the timing.

Run: .venv/bin/python bench/python/bench_chunk.py [--size 512] [--rounds 5] [--markdown]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import semchunk
from benchutil import interleaved
from langchain_text_splitters import RecursiveCharacterTextSplitter

import keel

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    corpus, _, _ = keel.load_beir(CRANFIELD)
    small = [d["text"] for d in corpus]
    large = "\n\n".join(small)
    mb = len(large.encode()) / 1e6

    for ov in (0, args.overlap):
        chunker = keel.Chunker(args.size, ov)
        for c in chunker.chunks(large):
            assert large[c.char_start : c.char_end] == c.text

    rows = []
    for ov in (0, args.overlap):
        kc = keel.Chunker(args.size, ov)
        sc = semchunk.chunkerify(len, args.size)
        lc = RecursiveCharacterTextSplitter(chunk_size=args.size, chunk_overlap=ov)
        sem_overlap = ov if ov else None
        systems: dict[str, Callable[[str], object]] = {
            "keel.Chunker": kc.chunks,
            "semchunk": lambda t, sc=sc, o=sem_overlap: sc(t, offsets=True, overlap=o),
            "langchain RecursiveCharacterTextSplitter": lc.split_text,
        }
        for inp_name, texts in (("many small", small), ("one large", [large])):
            fns = list(systems.items())
            times = interleaved(
                [lambda fn=fn, texts=texts: [fn(x) for x in texts] for _, fn in fns], args.rounds
            )
            base = times[0]
            for (name, fn), t in zip(fns, times):
                n_chunks = sum(len(fn(x)) if name != "semchunk" else len(fn(x)[0]) for x in texts)
                rows.append((ov, inp_name, name, mb / t, t / base, n_chunks))
                print(
                    f"overlap {ov:>3}  {inp_name:<10} {name:<42} {mb / t:8.1f} MB/s  "
                    f"keel is {t / base:6.1f}x faster  ({n_chunks} chunks)",
                    flush=True,
                )
    if args.markdown:
        print()
        print(f"Chunk size {args.size} chars; input {mb:.2f} MB (Cranfield abstracts).")
        print()
        print("| overlap | input | splitter | MB/s | keel speed-up | chunks |")
        print("|---:|---|---|---:|---:|---:|")
        for ov, inp, name, mbs, ratio, n in rows:
            print(f"| {ov} | {inp} | {name} | {mbs:.1f} | {ratio:.1f}x | {n} |")


if __name__ == "__main__":
    main()
