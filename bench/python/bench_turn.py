"""One voice-bot turn through the Python front door, end to end, at 1, 8 and 32 concurrent turns:
keel beside the same turn built from the anchors a team would use today, in one run.

The turn (the same work on both sides; everything a turn needs is loaded before the clock starts):
1. verify the caller's API key.
   keel: `keel.ApiKeys.verify` with its cache on (cache_ttl 60 s).
   anchor: SHA-256 of the key looked up in a stdlib sqlite3 table (WAL, one connection per
   thread), behind a `cachetools.TTLCache` (60 s) guarded by a lock (`cachetools.cached(...,
   lock=...)`: TTLCache is not thread-safe), the usual hand-written scheme. Both caches are warm
   (every key verified once in the warm-up), as on a server that has seen its callers before.
2. rate limit, one decision per turn keyed by the user.
   keel: `keel.RateLimiter.check` (in-process; the core's default algorithm, printed).
   anchor: `limits` MemoryStorage + MovingWindowRateLimiter (`hit`, exact sliding log).
   Limit 100k per minute: every decision is "allowed" (asserted), the common path.
3. load the conversation's history within a token budget (--budget tokens, 600).
   keel: `Memory.llm_messages(tenant, user, session, budget=...)` (decrypts and authenticates
   every message it returns).
   anchor: LangChain `SQLChatMessageHistory.messages` (loads the whole session), then
   `langchain_core.messages.trim_messages(strategy="last")`. LangChain's table has no index
   on session_id (each load would scan every stored conversation): the anchor adds one.
   Same token rule on both sides: ceil(chars / 4), keel's default counter; the anchor passes it
   as a per-message `token_counter`. Both return the same number of messages (asserted).
4. hybrid search + rerank top 20 (returns 20 passages, asserted).
   keel: `keel.KnowledgeBase(embedder=, cross_encoder=, chunk_size=5000, candidates=100,
   rerank_top=20).search(q, k=20)`: BM25 + dense (exact, f32) fused by RRF (k = 60), the best 20
   reranked, in one call.
   anchor: bm25s (Lucene BM25, k1 1.2, b 0.75, English stopwords + PyStemmer Snowball) top 100
   + the query embedded with MiniLM int8 in onnxruntime (tokenizers, mean pooling, L2 norm) +
   numpy dot product over the corpus matrix, top 100 + RRF (k = 60) in Python + the best 20
   scored by the cross-encoder in onnxruntime and sorted.
   Same model files (.cache/models: MiniLM int8, the test cross-encoder, both int8 MiniLM-L6,
   pairs truncated to 256 tokens), same onnxruntime intra-op threads (--threads, 1: N
   concurrent turns on 2 cores), same batch sizes (keel's defaults: 32 to embed, 16 pairs to
   rerank, length-sorted), TOKENIZERS_PARALLELISM=false on both sides. One InferenceSession
   per model, shared by all threads (its `run` releases the GIL), as keel shares one Embedder
   and one CrossEncoder (whose pool of sessions is sized by the core: printed).
   Corpus: Cranfield (../shared/data/cranfield, BEIR layout, read there; 1400 abstracts, one
   passage each: chunk_size 5000 is longer than any abstract); queries: Cranfield's own.
   Each side's embedded corpus is kept in .cache/bench-turn (keel: the KnowledgeBase saved at a
   path and reopened; the anchor: its vectors as .npy), named by corpus size and model file, so
   only the first run pays the embedding. `--search hybrid` (no rerank) and `--search bm25`
   run the same turn with less of step 4, to show the turn's cost outside the models.
5. append the turn's two messages (user + assistant).
   keel: `Memory.append_many` (one transaction, AES-256-SIV encrypted).
   anchor: `SQLChatMessageHistory.add_messages` (plaintext).
Both memories are SQLite files in one temporary folder at the same durability: WAL +
synchronous=NORMAL (keel's default; set on every SQLAlchemy connection by a connect event, as in
bench_memory.py), printed as read back.

Load shape: threads on both sides (no asyncio: keel's async wrappers are `asyncio.to_thread`
around the same calls, so a thread per in-flight turn is what a FastAPI app does underneath).
At concurrency c, c threads start together (barrier) and each runs its share of the round's
turns back to back (closed loop). Every turn is one turn of its own conversation, pre-loaded
with --history messages (so every turn does the same work at every level), and each thread
is its own user (its own API key and rate-limit key). The LangChain history objects are built
before the clock starts (generous to the anchor: apps often build one per request).
Per round and level the two sides run one after the other, the order alternating by round
(benchutil's rotation), with a gc.collect() before each; the garbage collector stays on.

Reported per level: turns/s (median over rounds of turns / wall time) and p50/p95/p99 turn
latency (ms, over every turn of every round: with few turns, p99 is close to the maximum); the
turns/s ratio is the median of same-round ratios. Every per-round sample is printed.
Run: .venv/bin/python bench/python/bench_turn.py [--rounds 3] [--turns 32] [--quick]
     [--search rerank|hybrid|bm25] [--markdown] [--side keel] (keel alone, for a profile: see
     docs/bench-turn.md)
"""

from __future__ import annotations

import os

# Tokenizers (keel's and HF's) tokenize on the calling thread: same setting on both sides, set
# before `tokenizers` is imported.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import gc
import hashlib
import math
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import bm25s
import cachetools
import numpy as np
import sqlalchemy
import Stemmer
from limits import RateLimitItemPerMinute, storage, strategies

import keel

warnings.filterwarnings("ignore", category=DeprecationWarning)
from langchain_community.chat_message_histories import SQLChatMessageHistory  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = (ROOT / ".." / "shared" / "data" / "cranfield").resolve()
MODELS = Path(os.environ.get("KEEL_TEST_MODELS", ROOT / ".cache" / "models"))
sys.path.insert(0, str(ROOT / "scripts"))

import neural_reference as ref  # noqa: E402

TENANT = "acme"
TOP = 20  # passages returned (and reranked) per turn
DEPTH = 100  # candidates per retriever
RRF_K = 60.0
EMBED_BATCH = 32  # keel's Embedder default (src/rag/embed.rs), given to both sides
RERANK_BATCH = 16  # keel's CrossEncoder default (src/rag/rerank.rs), given to both sides
CACHE = ROOT / ".cache" / "bench-turn"
RATE = 100_000  # per user per minute: every decision is allowed
KEY_TTL = 60.0
ANSWER = (
    "According to the sources, the lift increase due to the slipstream depends on the angle of "
    "attack and on the thrust coefficient; the measured spanwise distribution agrees with "
    "theory at small angles [1]. "
)


def model_tag() -> str:
    """Identifies the embedding model file (size and mtime) in the names of cached vectors."""
    st = (MODELS / "minilm" / "model.onnx").stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def tokens(text: str) -> int:
    """keel's default token counter (src/memory/token.rs): ceil(chars / 4)."""
    return math.ceil(len(text) / 4)


def history_text(conv: int, i: int) -> tuple[str, str]:
    """Message i of a pre-loaded conversation: (role, content), a voice-bot sized turn."""
    if i % 2 == 0:
        return "user", (
            f"Conversation {conv:06d}, question {i // 2:03d}: how does the lift of a wing change "
            "in a propeller slipstream at higher angles of attack, and what did the experiments "
            "show? "
        )
    return "assistant", (
        f"Answer {i // 2:03d} for conversation {conv:06d}: the experiments measured the spanwise "
        "distribution of the lift increase due to the slipstream at several angles of attack "
        "and thrust coefficients; the increase grows with thrust and falls off near the tip [1]."
    )


def expected_window(history: int, budget: int) -> int:
    """How many of the newest pre-loaded messages fit the budget (the same on both sides)."""
    used, n = 0, 0
    for i in reversed(range(history)):
        used += tokens(history_text(0, i)[1])  # fixed-width numbers: same length in every one
        if used > budget:
            break
        n += 1
    return n


def read_pragmas(path: Path) -> str:
    """The file's journal_mode, read from another process (keel links its own SQLite; two
    SQLite copies must not open one file in one process)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    return out.stdout.strip()


SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Turn:
    """One side: the constructor loads its state, `prepare` pre-loads conversations,
    `verify_key` warms the key cache, `turn` is the timed turn."""

    name = ""

    def user(self, worker: int) -> str:
        return f"user-{worker}"

    def session(self, conv: int) -> str:
        return f"conv-{conv}"


class Keel(Turn):
    name = "keel"

    def __init__(self, root: Path, corpus: list[dict[str, Any]], args: argparse.Namespace) -> None:
        keyring = keel.Keyring.generate()
        self.keys_db = root / "keel-keys.db"
        self.keys = keel.ApiKeys(self.keys_db, keyring, cache_ttl=KEY_TTL)
        self.api_keys = [
            self.keys.create(TENANT, f"user-{w}", scopes=["chat"])[0] for w in range(args.max_c)
        ]
        self.limiter = keel.RateLimiter(RATE, 60.0)
        self.mem_db = root / "keel-memory.db"
        self.memory = keel.Memory(self.mem_db, keyring)
        embedder = ce = None
        if args.search != "bm25":
            embedder = keel.Embedder(
                MODELS / "minilm", threads=args.threads, batch_size=EMBED_BATCH
            )
        if args.search == "rerank":
            ce = keel.CrossEncoder(
                MODELS / "test-cross-encoder", threads=args.threads, batch_size=RERANK_BATCH
            )
        self.pool = ", ".join(
            f"{name} {m.sessions} session(s) x {m.threads} thread(s)"
            for name, m in (("embedder", embedder), ("cross-encoder", ce))
            if m is not None
        )
        # The built index is kept in .cache/bench-turn (embedding the corpus is minutes of CPU
        # on a loaded 2-core machine); a re-run opens it. Not part of the timed turn.
        path = CACHE / f"keel-kb-{args.docs}-{'bm25' if embedder is None else model_tag()}"
        fresh = not (path / "manifest.kb").is_file()
        self.kb = keel.KnowledgeBase(
            path,
            embedder=embedder,
            cross_encoder=ce,
            chunk_size=5000,
            candidates=DEPTH,
            rerank_top=TOP,
        )
        if fresh:
            for d in corpus:
                self.kb.add(d["id"], d["text"], d["title"])
            self.kb.save()
        assert self.kb.passages == len(corpus), (self.kb.passages, len(corpus))
        self.budget = args.budget

    def durability(self) -> str:
        return f"journal_mode={read_pragmas(self.mem_db)}, synchronous=NORMAL (keel default)"

    def prepare(self, convs: range, worker: int, history: int) -> None:
        for c in convs:
            msgs = []
            for i in range(history):
                role, content = history_text(c, i)
                msgs.append({"role": role, "content": content})
            self.memory.append_many(TENANT, self.user(worker), self.session(c), msgs)

    def turn(self, worker: int, conv: int, query: str) -> tuple[int, list[str]]:
        ident = self.keys.verify(self.api_keys[worker])
        assert ident.tenant == TENANT
        user = self.user(worker)
        assert self.limiter.check(user).allowed
        session = self.session(conv)
        history = self.memory.llm_messages(TENANT, user, session, budget=self.budget)
        hits = self.kb.search(query, k=TOP)
        self.memory.append_many(
            TENANT,
            user,
            session,
            [{"role": "user", "content": query}, {"role": "assistant", "content": ANSWER}],
        )
        return len(history), [h.doc_id for h in hits]

    def verify_key(self, worker: int) -> None:
        self.keys.verify(self.api_keys[worker])

    def stored(self, worker: int, conv: int) -> int:
        return len(self.memory.history(TENANT, self.user(worker), self.session(conv), limit=1000))


class Anchors(Turn):
    name = "anchors"

    def __init__(self, root: Path, corpus: list[dict[str, Any]], args: argparse.Namespace) -> None:
        # 1. API keys: sha256 -> sqlite3 row, TTLCache in front.
        self.keys_db = root / "anchor-keys.db"
        con = sqlite3.connect(self.keys_db)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(
            "CREATE TABLE keys (hash BLOB PRIMARY KEY, tenant TEXT, user TEXT, scopes TEXT)"
        )
        self.api_keys = [f"sk_live_{os.urandom(24).hex()}" for _ in range(args.max_c)]
        con.executemany(
            "INSERT INTO keys VALUES (?, ?, ?, 'chat')",
            [
                (hashlib.sha256(k.encode()).digest(), TENANT, f"user-{w}")
                for w, k in enumerate(self.api_keys)
            ],
        )
        con.commit()
        con.close()
        self.local = threading.local()

        @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=KEY_TTL), lock=threading.Lock())
        def verify(key: str) -> tuple[str, str, str]:
            row = (
                self._keys_con()
                .execute(
                    "SELECT tenant, user, scopes FROM keys WHERE hash = ?",
                    (hashlib.sha256(key.encode()).digest(),),
                )
                .fetchone()
            )
            if row is None:
                raise PermissionError("unknown key")
            return row

        self.verify = verify
        # 2. Rate limit.
        self.limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self.rate = RateLimitItemPerMinute(RATE)
        # 3 + 5. Memory: SQLChatMessageHistory on one engine, WAL + NORMAL on every connection.
        self.mem_db = root / "anchor-memory.db"
        engine = sqlalchemy.create_engine(f"sqlite:///{self.mem_db}")

        @sqlalchemy.event.listens_for(engine, "connect")
        def _pragmas(dbapi_con: Any, _record: Any) -> None:
            dbapi_con.execute("PRAGMA journal_mode = WAL")
            dbapi_con.execute("PRAGMA synchronous = NORMAL")

        self.engine = engine
        self.histories: dict[str, SQLChatMessageHistory] = {}
        # LangChain's message_store has no index on session_id, so every `.messages` scans the
        # whole table (slower with every conversation stored). Add the index a team would add
        # once it noticed: generous to the anchor.
        SQLChatMessageHistory(session_id="probe", connection=engine)  # creates the table
        with engine.begin() as c:
            c.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS message_store_session ON message_store (session_id)"
            )
        self.budget = args.budget
        # 4. Retrieval: bm25s + onnxruntime + numpy.
        self.ids = [d["id"] for d in corpus]
        self.texts = [d["text"] for d in corpus]
        passages = [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in corpus]
        self.stemmer = Stemmer.Stemmer("english")
        self.bm25 = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        self.bm25.index(
            bm25s.tokenize(passages, stopwords="en", stemmer=self.stemmer, show_progress=False),
            show_progress=False,
        )
        self.mode = args.search
        minilm, ce = MODELS / "minilm", MODELS / "test-cross-encoder"
        if self.mode != "bm25":
            self.sess, self.tok = ref.session(minilm, args.threads), ref.tokenizer(minilm)
            cached = CACHE / f"anchor-vectors-{args.docs}-{model_tag()}.npy"
            if cached.is_file():
                self.vecs = np.load(cached)
            else:
                self.vecs = ref.embed(self.sess, self.tok, passages, batch_size=EMBED_BATCH)
                CACHE.mkdir(parents=True, exist_ok=True)
                np.save(cached, self.vecs)
        if self.mode == "rerank":
            self.ce_sess, self.ce_tok = ref.session(ce, args.threads), ref.tokenizer(ce)
        self.passages = passages

    def _keys_con(self) -> sqlite3.Connection:
        con = getattr(self.local, "con", None)
        if con is None:
            con = self.local.con = sqlite3.connect(self.keys_db)
        return con

    def durability(self) -> str:
        with self.engine.connect() as c:
            jm = c.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = c.exec_driver_sql("PRAGMA synchronous").scalar()
        return f"journal_mode={jm}, synchronous={SYNC.get(sync, sync)} (set on connect)"

    def _history(self, conv: int) -> SQLChatMessageHistory:
        s = self.session(conv)
        h = self.histories.get(s)
        if h is None:
            h = self.histories[s] = SQLChatMessageHistory(session_id=s, connection=self.engine)
        return h

    def prepare(self, convs: range, worker: int, history: int) -> None:
        for c in convs:
            msgs: list[BaseMessage] = []
            for i in range(history):
                role, content = history_text(c, i)
                msgs.append(HumanMessage(content) if role == "user" else AIMessage(content))
            self._history(c).add_messages(msgs)

    def search(self, query: str) -> list[str]:
        qtok = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False)
        docs, scores = self.bm25.retrieve(qtok, k=DEPTH, show_progress=False)
        # Only passages sharing a term with the query, as keel's BM25 returns.
        lexical = [int(d) for d, sc in zip(docs[0], scores[0]) if sc > 0]
        if self.mode == "bm25":
            return [self.ids[d] for d in lexical[:TOP]]
        q = ref.embed(self.sess, self.tok, [query], batch_size=EMBED_BATCH)[0]
        sims = self.vecs @ q
        top = np.argpartition(-sims, DEPTH)[:DEPTH]
        dense = [int(j) for j in top[np.argsort(-sims[top], kind="stable")]]
        fused: dict[int, float] = {}
        for ranked in (lexical, dense):
            for rank, doc in enumerate(ranked, 1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda d: -fused[d])[:TOP]
        if self.mode == "hybrid":
            return [self.ids[d] for d in best]
        scores = ref.rerank(
            self.ce_sess,
            self.ce_tok,
            query,
            [self.passages[d] for d in best],
            batch_size=RERANK_BATCH,
        )
        order = np.argsort(-scores, kind="stable")
        return [self.ids[best[int(i)]] for i in order]

    def turn(self, worker: int, conv: int, query: str) -> tuple[int, list[str]]:
        tenant, user, _ = self.verify(self.api_keys[worker])
        assert tenant == TENANT
        assert self.limiter.hit(self.rate, user)
        h = self._history(conv)
        history = trim_messages(
            h.messages, max_tokens=self.budget, token_counter=count, strategy="last"
        )
        ids = self.search(query)
        h.add_messages([HumanMessage(query), AIMessage(ANSWER)])
        return len(history), ids

    def verify_key(self, worker: int) -> None:
        self.verify(self.api_keys[worker])

    def stored(self, worker: int, conv: int) -> int:
        return len(self._history(conv).messages)


def count(messages: list[BaseMessage]) -> int:
    """The anchor's token counter (trim_messages calls it on lists of messages): keel's rule,
    summed over the messages."""
    return sum(tokens(str(m.content)) for m in messages)


def run_level(
    side: Turn, c: int, convs: range, queries: list[str], expect_history: int, bm25: bool
) -> tuple[float, list[float], list[list[str]]]:
    """c threads run the turns of `convs` (its i-th conversation on thread i mod c, that
    thread's user); returns (wall
    seconds, per-turn latencies, retrieved ids per turn)."""
    lat: list[list[float]] = [[] for _ in range(c)]
    got: list[list[list[str]]] = [[] for _ in range(c)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(c + 1)
    done = [0.0] * c

    def worker(w: int) -> None:
        mine = convs[w::c]
        barrier.wait()
        try:
            for conv in mine:
                t0 = time.perf_counter()
                n, ids = side.turn(w, conv, queries[conv % len(queries)])
                lat[w].append(time.perf_counter() - t0)
                assert n == expect_history, (side.name, n, expect_history)
                # BM25 alone returns only passages sharing a term with the query.
                assert len(ids) == TOP or (bm25 and 0 < len(ids) <= TOP), (side.name, len(ids))
                got[w].append(ids)
        except BaseException as err:  # noqa: BLE001 - re-raised on the main thread
            errors.append(err)
        done[w] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(c)]
    for t in threads:
        t.start()
    gc.collect()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    wall = max(done) - t0
    return wall, [x for xs in lat for x in xs], [ids for g in got for ids in g]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def num(x: float) -> str:
    """A rate with three significant digits at least (0.234, 23.4, 2,345)."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--rounds", type=int, default=3, help="0: only build the cached indexes and exit"
    )
    ap.add_argument("--levels", default="1,8,32", help="concurrent turns, comma-separated")
    ap.add_argument(
        "--turns",
        type=int,
        default=32,
        help="turns per side, level and round (at least the level's concurrency)",
    )
    ap.add_argument("--docs", type=int, default=1400, help="Cranfield documents indexed")
    ap.add_argument("--history", type=int, default=20, help="messages pre-loaded per conversation")
    ap.add_argument("--budget", type=int, default=600, help="history token budget")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--side", choices=["both", "keel", "anchors"], default="both")
    ap.add_argument(
        "--search",
        choices=["rerank", "hybrid", "bm25"],
        default="rerank",
        help="step 4: hybrid + rerank top 20 (the turn), hybrid without rerank, or BM25 alone "
        "(the last two show the turn's cost outside the models)",
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.turns, args.docs = 1, 8, 200
    levels = [int(x) for x in args.levels.split(",")]
    assert args.docs > DEPTH, f"--docs must exceed the {DEPTH} candidates per retriever"
    args.max_c = max(levels)

    corpus, queries_by_id, _ = keel.load_beir(CRANFIELD)
    corpus = [d for d in corpus if d["text"].strip()][: args.docs]  # two Cranfield docs are empty
    queries = list(queries_by_id.values())
    expect = expected_window(args.history, args.budget)
    assert 0 < expect < args.history, "the budget must cut the pre-loaded history"

    root = Path(tempfile.mkdtemp(prefix="keel-bench-turn-", dir=os.getcwd()))
    try:
        t0 = time.perf_counter()
        makers: list[type[Turn]] = {"both": [Keel, Anchors], "keel": [Keel], "anchors": [Anchors]}[
            args.side
        ]
        sides = []
        for make in makers:
            t1 = time.perf_counter()
            sides.append(make(root, corpus, args))  # type: ignore[call-arg]
            log(f"{sides[-1].name}: state loaded in {time.perf_counter() - t1:.1f} s")
        print(
            f"keel {keel.__version__}; {os.cpu_count()} cpus; {len(corpus)} Cranfield docs; "
            f"set-up {time.perf_counter() - t0:.1f} s; files in {root}"
        )
        for s in sides:
            print(f"- {s.name} memory: {s.durability()}")
        if isinstance(sides[0], Keel):
            print(f"- keel rate limiter algorithm: {sides[0].limiter.algorithm}")
            if sides[0].pool:
                print(f"- keel ONNX session pools (the core's sizing): {sides[0].pool}")
        print(
            f"{args.rounds} rounds x max({args.turns}, c) turns per side and level c; search: "
            f"{args.search}; history "
            f"{args.history} messages, budget {args.budget} tokens ({expect} fit); top {TOP}; "
            f"onnxruntime threads {args.threads}; TOKENIZERS_PARALLELISM=false\n"
        )

        if args.rounds == 0:
            return  # the embedded corpus is now in .cache/bench-turn
        # Conversations: a block of `turns` fresh ones per (round, level), plus a warm-up block.
        plan: list[tuple[int, int, range]] = []
        nxt = 0
        warm = range(nxt, nxt + 2)
        nxt += 2
        for r in range(args.rounds):
            for c in levels:
                n = max(args.turns, c)
                plan.append((r, c, range(nxt, nxt + n)))
                nxt += n
        t0 = time.perf_counter()
        for s in sides:
            for _, c, convs in [(0, 1, warm), *plan]:
                for w in range(c):
                    s.prepare(convs[w::c], w, args.history)
        print(f"pre-loaded {nxt} conversations per side in {time.perf_counter() - t0:.1f} s")
        for s in sides:  # warm-up: every key verified once (caches warm), two turns
            for w in range(args.max_c):
                s.verify_key(w)
            run_level(s, 1, warm, queries, expect, args.search == "bm25")

        samples: dict[tuple[str, int], list[float]] = {}
        lats: dict[tuple[str, int], list[float]] = {}
        results: dict[tuple[str, int], list[list[str]]] = {}
        for i, (r, c, convs) in enumerate(plan):
            order = sides[i % len(sides) :] + sides[: i % len(sides)]
            line = []
            for s in order:
                wall, lat, ids = run_level(s, c, convs, queries, expect, args.search == "bm25")
                samples.setdefault((s.name, c), []).append(len(convs) / wall)
                lats.setdefault((s.name, c), []).extend(lat)
                results.setdefault((s.name, c), []).extend(ids)
                line.append(
                    f"{s.name} {num(len(convs) / wall):>7} turns/s p50 "
                    f"{statistics.median(lat) * 1e3:7.1f} ms p99 {pct(lat, 99) * 1e3:7.1f} ms"
                )
            print(f"round {r} c={c:>2}: " + " | ".join(line), flush=True)
        # Every conversation now holds its history plus the turn's two messages.
        for s in sides:
            for _, _, convs in plan:
                assert s.stored(0, convs.start) == args.history + 2, s.name

        rows = []
        for c in levels:
            for s in sides:
                xs, lat = samples[(s.name, c)], lats[(s.name, c)]
                rows.append(
                    (
                        c,
                        s.name,
                        statistics.median(xs),
                        statistics.median(lat) * 1e3,
                        pct(lat, 95) * 1e3,
                        pct(lat, 99) * 1e3,
                        len(lat),
                    )
                )
        print()
        print("per-round turns/s:")
        for (name, c), xs in samples.items():
            print(f"  {name:8} c={c:>2}: " + " ".join(num(x) for x in xs))
        print()
        md = [
            "| concurrent turns | side | turns/s | p50 (ms) | p95 (ms) | p99 (ms) | turns |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for c, name, tps, p50, p95, p99, n in rows:
            md.append(f"| {c} | {name} | {num(tps)} | {p50:,.1f} | {p95:,.1f} | {p99:,.1f} | {n} |")
        print("\n".join(md) if args.markdown else "\n".join(md[:1] + md[2:]))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of the process (both sides): {rss:,.0f} MiB")
        if len(sides) == 2:
            print("\nkeel / anchors (turns/s: median of same-round ratios; p99: anchors / keel):")
            for c in levels:
                k, a = samples[("keel", c)], samples[("anchors", c)]
                ratio = statistics.median(x / y for x, y in zip(k, a))
                p99 = pct(lats[("anchors", c)], 99) / pct(lats[("keel", c)], 99)
                ks, as_ = results[("keel", c)], results[("anchors", c)]
                overlap = statistics.mean(len(set(x) & set(y)) / TOP for x, y in zip(ks, as_))
                print(
                    f"  c={c:>2}: turns/s x{ratio:.2f}, p99 x{p99:.2f} lower; top-{TOP} overlap "
                    f"between the sides {overlap:.2f}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
