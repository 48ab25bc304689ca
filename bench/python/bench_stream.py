"""Sentence segmentation for TTS: keel.SentenceSegmenter against the anchors a voice team uses.

Agreement with the hand-labelled set bench/data/stream_sentences.json (assistant answers with
the hard cases), measured on sentence boundaries, and streaming throughput, in one run:

- keel.SentenceSegmenter (Python door), defaults;
- pysbd 0.3.4 (``clean=False``) on the whole text (its best case), and streamed the way voice
  code uses it (re-segment the buffer after every token, emit all but the last segment);
- Pipecat 1.14 ``SimpleTextAggregator`` (its TTS sentence aggregation, ``match_endofsentence``);
- LiveKit Agents 1.8 ``tokenize.basic.SentenceTokenizer`` streamed (defaults: short sentences
  are merged up to 20 chars; and with ``min_sentence_len=1``), and ``tokenize.blingfire``.

Texts are cut into LLM-like tokens (a word with its leading space, or a punctuation run).
Boundaries are compared in non-whitespace character offsets, so systems that strip or rejoin
whitespace are judged on where they cut, not on spacing. "Delay" is how many tokens after the
token that ends a sentence the system handed that sentence over (streamed systems, correct
boundaries only): 1 means "on the next token".

Run: ``make bench-stream`` (installs the anchors into .cache/bench-stream-venv), or
``python bench/python/bench_stream.py --markdown`` in a venv with keel and the anchors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from benchutil import interleaved

ROOT = Path(__file__).resolve().parents[2]
try:
    import keel
except ImportError:  # the bench venv: use the module `make dev` built in place
    sys.path.insert(0, str(ROOT / "python"))
    import keel

TOKEN = re.compile(r"\s*[\w'’]+|\s*[^\w\s]|\s+")

# (sentences, index of the token at whose push each was emitted; len(tokens) = at the end)
Emitted = tuple[list[str], list[int]]


def tokens_of(text: str) -> list[str]:
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == text
    return tokens


def nonws_len(s: str) -> int:
    return sum(1 for c in s if not c.isspace())


def boundaries(pieces: list[str]) -> list[int]:
    """Where each piece but the last ends, in non-whitespace chars."""
    out, total = [], 0
    for p in pieces[:-1]:
        total += nonws_len(p)
        out.append(total)
    return out


# --- systems -------------------------------------------------------------------------------


def run_keel(tokens: list[str]) -> Emitted:
    seg = keel.SentenceSegmenter()
    out, when = [], []
    for i, t in enumerate(tokens):
        for s in seg.push(t):
            out.append(s)
            when.append(i)
    for s in seg.flush():
        out.append(s)
        when.append(len(tokens))
    return out, when


def pysbd_segmenter():  # noqa: ANN201
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def run_pysbd_whole(text: str) -> list[str]:
    return pysbd_segmenter().segment(text)


def run_pysbd_stream(tokens: list[str]) -> Emitted:
    seg = pysbd_segmenter()
    out, when, buf = [], [], ""
    for i, t in enumerate(tokens):
        buf += t
        if not buf.strip():
            continue
        parts = seg.segment(buf)
        if len(parts) > 1:
            for p in parts[:-1]:
                out.append(p)
                when.append(i)
            buf = buf[buf.rfind(parts[-1]) :] if parts[-1] in buf else parts[-1]
    if buf.strip():
        out.append(buf)
        when.append(len(tokens))
    return out, when


def run_pipecat(tokens: list[str]) -> Emitted:
    from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

    async def main() -> Emitted:
        agg = SimpleTextAggregator()
        out, when = [], []
        for i, t in enumerate(tokens):
            async for a in agg.aggregate(t):
                out.append(a.text)
                when.append(i)
        last = await agg.flush()
        if last is not None and last.text:
            out.append(last.text)
            when.append(len(tokens))
        return out, when

    return asyncio.run(main())


def livekit_stream(make: Callable[[], object]) -> Callable[[list[str]], Emitted]:
    def run(tokens: list[str]) -> Emitted:
        async def main() -> Emitted:
            stream = make().stream()  # type: ignore[attr-defined]
            out, when = [], []
            pushed = 0

            async def reader() -> None:
                async for ev in stream:
                    out.append(ev.token)
                    when.append(pushed)

            task = asyncio.create_task(reader())
            for i, t in enumerate(tokens):
                pushed = i
                stream.push_text(t)
                for _ in range(3):  # let the tokenizer task and the reader take what is ready
                    await asyncio.sleep(0)
            pushed = len(tokens)
            stream.end_input()
            await task
            return out, when

        return asyncio.run(main())

    return run


def livekit_basic(**kwargs: int) -> Callable[[], object]:
    def make() -> object:
        from livekit.agents.tokenize import basic

        return basic.SentenceTokenizer(**kwargs)

    return make


def livekit_blingfire() -> object:
    from livekit.agents.tokenize import blingfire

    return blingfire.SentenceTokenizer()


STREAMED: dict[str, Callable[[list[str]], Emitted]] = {
    "keel.SentenceSegmenter": run_keel,
    "pysbd, streamed (re-segment per token)": run_pysbd_stream,
    "Pipecat SimpleTextAggregator": run_pipecat,
    "LiveKit basic (default, min 20 chars)": livekit_stream(livekit_basic()),
    "LiveKit basic (min_sentence_len=1)": livekit_stream(livekit_basic(min_sentence_len=1)),
    "LiveKit blingfire": livekit_stream(livekit_blingfire),
}


# --- evaluation ----------------------------------------------------------------------------


def load() -> list[tuple[str, list[str]]]:
    data = json.loads((ROOT / "bench/data/stream_sentences.json").read_text(encoding="utf-8"))
    return [(d["sep"].join(d["sentences"]), d["sentences"]) for d in data]


def score(gold: list[list[int]], got: list[list[int]]) -> tuple[float, float, float, float]:
    tp = fp = fn = exact = 0
    for g, s in zip(gold, got):
        gs, ss = set(g), set(s)
        tp += len(gs & ss)
        fp += len(ss - gs)
        fn += len(gs - ss)
        exact += gs == ss
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, exact / len(gold)


def delays(tokens: list[str], gold: list[int], emitted: Emitted) -> list[int]:
    pieces, when = emitted
    ends, total = [], 0
    for t in tokens:
        total += nonws_len(t)
        ends.append(total)
    out = []
    for b, w in zip(boundaries(pieces), when):
        if b in gold:
            last = next(i for i, e in enumerate(ends) if e >= b)
            out.append(w - last)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    docs = load()
    all_tokens = [tokens_of(text) for text, _ in docs]
    gold = [boundaries(sentences) for _, sentences in docs]
    n_sent = sum(len(s) for _, s in docs)
    n_tok = sum(len(t) for t in all_tokens)

    def whole_set(run: Callable[[list[str]], Emitted]) -> Callable[[], None]:
        return lambda: [run(toks) for toks in all_tokens]

    # Rounds interleave the systems (benchutil), so load drifting on a shared machine falls on
    # every system alike.
    medians = interleaved([whole_set(run) for run in STREAMED.values()], args.rounds)
    rows = []
    for (name, run), seconds in zip(STREAMED.items(), medians):
        results = [run(toks) for toks in all_tokens]
        # Nothing lost: same non-whitespace text back.
        for (text, _), (pieces, _) in zip(docs, results):
            assert nonws_len("".join(pieces)) == nonws_len(text), (name, text, pieces)
        p, r, f, exact = score(gold, [boundaries(pieces) for pieces, _ in results])
        d = [x for toks, g, res in zip(all_tokens, gold, results) for x in delays(toks, g, res)]
        rate = n_tok / seconds
        rows.append((name, p, r, f, exact, statistics.mean(d) if d else float("nan"), rate))

    whole = [boundaries(run_pysbd_whole(text)) for text, _ in docs]
    p, r, f, exact = score(gold, whole)
    rows.append(("pysbd, whole text (not streamed)", p, r, f, exact, float("nan"), float("nan")))

    keel_rate = rows[0][6]
    head = (
        f"{len(docs)} texts, {n_sent} gold sentences, {n_tok} tokens; "
        f"throughput = median of {args.rounds} interleaved rounds over the whole set"
    )
    if args.markdown:
        print(head + "\n")
        print(
            "| system | boundary precision | recall | F1 | texts exactly right | delay (tokens) "
            "| tokens/s streamed | keel is x faster |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, p, r, f, exact, d, rate in rows:
            ds = "—" if d != d else f"{d:.2f}"
            rs = "—" if rate != rate else f"{rate:,.0f}"
            xs = "—" if rate != rate else f"{keel_rate / rate:.1f}"
            print(f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {exact:.0%} | {ds} | {rs} | {xs} |")
    else:
        print(head)
        for row in rows:
            print(row)


if __name__ == "__main__":
    main()
