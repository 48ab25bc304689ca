"""The voice bot's FastAPI application.

``create_app(settings)`` builds it; ``uvicorn --factory voicebot.app:create_app`` builds it from
the environment (``Settings.from_env``), once per worker. Every worker opens the same
``keel.Engine`` configuration (one SQLite file, one keyring, host-shared rate-limit state), so
keys, limits and memory hold across workers.

Routes (all but the page, the static files and the health probes need an API key; all but the
health probes and metrics are rate-limited per client IP and per key, with the ``RateLimit``
headers on every response):

=======================  =======  ======================================================
``/``                    page     the browser client (``static/``)
``/healthz``             none     liveness
``/readyz``              none     database, keyring, knowledge base, speech (503 if not)
``/metrics``             none     keel's and the process's metrics (Prometheus/OpenMetrics)
``/chat``                chat     POST; server-sent events: ``token``..., ``audio``...,
                                  ``citations``, ``done`` (or ``error``)
``/search``              search   GET ``?q=&k=``: passages
``/history``             chat     GET ``?session=``: the stored turns of the caller
``/ingest``              admin    POST: re-index the documents (+ uploaded ones)
``/admin/keys``          admin    GET list, POST create; ``/{id}/rotate`` POST;
                                  ``/{id}`` DELETE revokes
``/admin/audit``         admin    GET entries; ``/admin/audit/verify`` GET the hash chain
=======================  =======  ======================================================
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import keel
from keel.fastapi import (
    APIKeyAuth,
    EventSourceResponse,
    RateLimitMiddleware,
    by_api_key,
    by_ip,
    metrics_route,
)

from . import logs
from .answer import SYSTEM_PROMPT, ExtractiveResponder, OpenAIResponder, Responder, content_words
from .settings import SCOPES, Settings
from .speech import Speaker, SpeechError, speakable

log = logging.getLogger("voicebot")
STATIC = Path(__file__).resolve().parent / "static"
EXEMPT = ("/healthz", "/readyz", "/metrics")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}\.(md|txt|html)$")


class ChatRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    session: str = Field(default="default", min_length=1, max_length=64)


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=lambda: ["chat", "search"])
    rate_limit: tuple[int, float] | None = None
    expires_at: float | None = None


class Rotate(BaseModel):
    grace: float = Field(default=300.0, ge=0)


class UploadedDoc(BaseModel):
    name: str
    text: str = Field(max_length=1_000_000)


class Ingest(BaseModel):
    documents: list[UploadedDoc] = Field(default_factory=list, max_length=100)


def hit_dict(n: int, hit: Any, *, cited: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": n,
        "doc_id": hit.doc_id,
        "title": getattr(hit, "title", "") or hit.doc_id,
        "text": hit.text,
        "score": round(float(hit.score), 4),
        "char_start": getattr(hit, "char_start", None),
        "char_end": getattr(hit, "char_end", None),
    }
    if cited is not None:
        out["cited"] = cited
    return out


_MARKER = re.compile(r"\[(\d+)\]")


def citations(answer: str, hits: Sequence[Any]) -> list[dict[str, Any]]:
    """Every passage given to the responder, numbered as in the prompt, with ``cited`` telling
    whether the answer used its marker."""
    used = {int(m) for m in _MARKER.findall(answer)}
    return [hit_dict(n, hit, cited=n in used) for n, hit in enumerate(hits, 1)]


def session_id(user: str, session: str) -> str:
    """The stored session id of a caller's session name. Session ids are unique per tenant and
    belong to one user (another user's id behaves as unknown: ``keel.SessionNotFound``), so two
    keys of one tenant that both call their session "default" must not share the id."""
    return "s-" + hashlib.blake2b(f"{user}\0{session}".encode(), digest_size=16).hexdigest()


def search_query(question: str, history: list[dict[str, str]]) -> str:
    """The retrieval query: a short follow-up ("and at night?") carries the previous question
    of the (token-budgeted) history along, so the conversation feeds retrieval too."""
    if len(content_words(question)) >= 3:
        return question
    for message in reversed(history):
        if message.get("role") == "user":
            return f"{message['content']} {question}"
    return question


class Turn:
    """One /chat turn, run as its own task so that it completes (and is stored) even when the
    client goes away; the response reads its events from a queue."""

    def __init__(self, app: FastAPI, identity: keel.Identity, body: ChatRequest) -> None:
        self.state = app.state
        self.tenant = identity.tenant
        self.user = identity.name
        self.key_id = identity.key_id
        self.body = body
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._event_id = 0

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queues one event; ``EventSourceResponse`` encodes it (``keel.sse_event``; the data
        as JSON)."""
        self._event_id += 1
        self.queue.put_nowait({"event": event, "id": str(self._event_id), "data": data})

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, round((time.perf_counter() - self.start) * 1000, 1))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as err:  # noqa: BLE001 - reported to the client, logged without content
            log.exception("chat turn failed", extra={"key_id": self.key_id})
            self.emit("error", {"detail": f"the answer failed ({type(err).__name__})"})
        finally:
            self.queue.put_nowait(None)

    async def _run(self) -> None:
        st, body = self.state, self.body
        memory: keel.Memory = st.memory
        at = (self.tenant, self.user, session_id(self.user, body.session))
        history = await asyncio.to_thread(
            memory.llm_messages, *at, budget=st.settings.history_budget
        )
        hits = await st.kb.search(search_query(body.question, history), k=st.settings.top_k)
        messages = await asyncio.to_thread(
            memory.llm_messages,
            *at,
            budget=st.settings.history_budget,
            system=SYSTEM_PROMPT,
            passages=hits,
        )
        messages.append({"role": "user", "content": body.question})

        speech = SpeechStream(st.speaker, self) if st.speaker is not None else None
        segmenter = keel.SentenceSegmenter()
        parts: list[str] = []
        async for piece in st.responder.stream(body.question, hits, messages):
            self.mark("first_token_ms")
            parts.append(piece)
            self.emit("token", {"text": piece})
            if speech is not None:
                for sentence in segmenter.push(piece):
                    speech.say(sentence)
        if speech is not None:
            for sentence in segmenter.flush():
                speech.say(sentence)
        self.mark("full_answer_ms")
        answer = "".join(parts)
        cites = citations(answer, hits)
        self.emit("citations", {"citations": cites})
        # The turn is stored as one append (both messages or neither) before the audio tail.
        await asyncio.to_thread(
            memory.append_many,
            *at,
            [
                {"role": "user", "content": body.question},
                {
                    "role": "assistant",
                    "content": answer,
                    "metadata": {"cited": [c["doc_id"] for c in cites if c["cited"]]},
                },
            ],
        )
        if speech is not None:
            await speech.finish()
        self.mark("done_ms")
        self.emit("done", {"timings": self.marks, "responder": st.responder.name})
        log.info("chat", extra={"key_id": self.key_id, "hits": len(hits), **self.marks})


class SpeechStream:
    """Synthesizes each sentence as soon as it is complete (concurrently with the generation of
    the next ones) and emits the ``audio`` events strictly in sentence order."""

    def __init__(self, speaker: Speaker, turn: Turn) -> None:
        self.speaker = speaker
        self.turn = turn
        self.pending: asyncio.Queue[tuple[int, str, asyncio.Task[bytes]] | None] = asyncio.Queue()
        self.count = 0
        self.drain = asyncio.create_task(self._drain())

    def say(self, sentence: str) -> None:
        text = speakable(sentence)
        if not any(c.isalnum() for c in text):
            return
        task = asyncio.create_task(self.speaker.synthesize(text))
        self.pending.put_nowait((self.count, sentence.strip(), task))
        self.count += 1

    async def _drain(self) -> None:
        while (item := await self.pending.get()) is not None:
            seq, sentence, task = item
            try:
                wav = await task
            except SpeechError as err:
                log.warning("speech failed", extra={"error": str(err)})
                self.turn.emit("audio_error", {"seq": seq})
                continue
            self.turn.mark("first_audio_ms")
            self.turn.emit(
                "audio",
                {
                    "seq": seq,
                    "text": sentence,
                    "mime": "audio/wav",
                    "audio": base64.b64encode(wav).decode("ascii"),
                },
            )

    async def finish(self) -> None:
        self.pending.put_nowait(None)
        await self.drain


async def _chat_key(request: Request) -> keel.Identity:
    return await request.app.state.auth["chat"](request)


async def _search_key(request: Request) -> keel.Identity:
    return await request.app.state.auth["search"](request)


async def _admin_key(request: Request) -> keel.Identity:
    return await request.app.state.auth["admin"](request)


#: The caller's identity, authenticated by the app's ``keel.fastapi.APIKeyAuth`` for the scope.
ChatKey = Annotated[keel.Identity, Depends(_chat_key)]
SearchKey = Annotated[keel.Identity, Depends(_search_key)]
AdminKey = Annotated[keel.Identity, Depends(_admin_key)]


class Knowledge:
    """The app's ``keel.KnowledgeBase``, reopened when another process changed it.

    Every uvicorn worker opens the persisted knowledge base; ``/ingest`` served by one worker
    re-indexes and saves it (atomically, by renames in its directory). The others notice the
    directory's new modification time at their next search and reopen it, so all workers answer
    from the same documents without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._open()

    def _stamp(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _open(self) -> None:
        self.kb = keel.KnowledgeBase(str(self.path))
        self.stamp = self._stamp()

    async def current(self) -> keel.KnowledgeBase:
        if self._stamp() != self.stamp:
            async with self._lock:
                if self._stamp() != self.stamp:
                    await asyncio.to_thread(self._open)
        return self.kb

    async def search(self, query: str, k: int) -> list[keel.Hit]:
        return await keel.AsyncKnowledgeBase(await self.current()).search(query, k)

    async def index(self, settings: Settings) -> list[dict[str, Any]]:
        async with self._lock:
            reports = await asyncio.to_thread(index_documents, self.kb, settings)
            self.stamp = self._stamp()
        return reports


def _make_responder(settings: Settings) -> Responder:
    if settings.llm_base_url:
        return OpenAIResponder(
            settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key
        )
    return ExtractiveResponder(word_delay=settings.word_delay)


def _keel_error_status(err: keel.KeelError) -> int:
    if isinstance(err, keel.AuthError):
        return 404 if err.reason == "unknown_key" else 409
    if isinstance(err, keel.StoreBusy):
        return 503
    if isinstance(err, (keel.InvalidArgument, ValueError)):
        return 422
    return 500


def create_app(settings: Settings | None = None, *, responder: Responder | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    logs.configure()
    engine = keel.Engine(settings.config_path)
    keys = engine.api_keys
    limiters = engine.rate_limiters

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = app.state
        st.kb = await asyncio.to_thread(Knowledge, settings.kb_path)
        if settings.index_on_start:
            await st.kb.index(settings)
        yield
        if st.turns:
            await asyncio.gather(*st.turns, return_exceptions=True)
        aclose = getattr(st.responder, "aclose", None)
        if aclose is not None:
            await aclose()

    app = FastAPI(title="keel voice bot", lifespan=lifespan)
    st = app.state
    st.settings = settings
    st.engine = engine
    st.memory = engine.memory
    st.keys = keys
    st.audit = engine.audit
    st.turns = set()
    st.responder = responder or _make_responder(settings)
    st.speaker = (
        Speaker(
            voice=settings.voice,
            words_per_minute=settings.words_per_minute,
            max_concurrent=settings.tts_concurrency,
        )
        if settings.tts
        else None
    )

    app.add_middleware(
        RateLimitMiddleware,
        rules=[(limiters["per_ip"], by_ip), (limiters["per_key"], by_api_key)],
        exempt_paths=EXEMPT,
        api_keys=keys,
    )
    app.add_middleware(logs.AccessLog)

    st.auth = {scope: APIKeyAuth(keys, scopes=[scope]) for scope in SCOPES}

    @app.exception_handler(keel.KeelError)
    async def keel_error(request: Request, err: keel.KeelError) -> JSONResponse:
        status = _keel_error_status(err)
        if status == 500:
            log.error("keel error", extra={"error": type(err).__name__})
        return JSONResponse({"detail": str(err), "error": type(err).__name__}, status_code=status)

    # -- the page ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- probes --------------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # keel's metrics (memory, keys, rate limits, retrieval, store) and the process metrics, for
    # Prometheus; like the probes, no key and no rate limit: expose it on an internal network.
    app.add_route("/metrics", metrics_route, include_in_schema=False)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await asyncio.gather(
            _check("database", lambda: st.memory.sessions("voicebot", "readyz", 1)),
            _check("keyring", lambda: _keyring_ok(engine)),
            _check_async("knowledge_base", lambda: _kb_ok(st.kb)),
            _check_async("speech", lambda: _speech_ok(st.speaker)),
            _check("responder", lambda: st.responder.name),
        )
        ok = all(c["ok"] for c in checks)
        return JSONResponse(
            {
                "status": "ready" if ok else "not ready",
                "checks": {c.pop("name"): c for c in checks},
            },
            status_code=200 if ok else 503,
        )

    # -- chat, search, history, ingest ---------------------------------------------------------

    @app.post("/chat")
    async def chat(body: ChatRequest, identity: ChatKey) -> Response:
        turn = Turn(app, identity, body)
        task = asyncio.create_task(turn.run())
        st.turns.add(task)
        task.add_done_callback(st.turns.discard)
        return EventSourceResponse(turn.events(), ping=15.0)

    @app.get("/search")
    async def search(
        identity: SearchKey,
        q: str = Query(min_length=1, max_length=2000),
        k: int = Query(default=5, ge=1, le=50),
    ) -> dict[str, Any]:
        hits = await st.kb.search(q, k=k)
        return {"hits": [hit_dict(n, h) for n, h in enumerate(hits, 1)]}

    @app.get("/history")
    async def history(
        identity: ChatKey,
        session: str = Query(default="default", min_length=1, max_length=64),
    ) -> dict[str, Any]:
        try:
            messages = await asyncio.to_thread(
                st.memory.history,
                identity.tenant,
                identity.name,
                session_id(identity.name, session),
                1000,
            )
        except keel.SessionNotFound:
            messages = []
        return {
            "messages": [
                {"role": m.role, "content": m.content, "created_at_ms": m.created_at_ms}
                for m in reversed(messages)  # history() is newest first
            ]
        }

    @app.post("/ingest")
    async def ingest(identity: AdminKey, body: Ingest | None = None) -> dict[str, Any]:
        for doc in body.documents if body else ():
            if not _SAFE_NAME.match(doc.name):
                raise HTTPException(
                    422,
                    f"document name {doc.name!r}: use letters, digits, . _ - and .md/.txt/.html",
                )
        if body and body.documents:
            settings.uploads.mkdir(parents=True, exist_ok=True)
            for doc in body.documents:
                (settings.uploads / doc.name).write_text(doc.text)
        reports = await st.kb.index(settings)
        if st.audit is not None:
            st.audit.append(f"key:{identity.key_id}", "kb.ingest", "kb", "ok")
        return {"folders": reports}

    # -- admin: keys and audit -----------------------------------------------------------------

    def actor(identity: keel.Identity) -> str:
        return f"key:{identity.key_id}"

    @app.get("/admin/keys")
    async def list_keys(identity: AdminKey) -> dict[str, Any]:
        infos = await asyncio.to_thread(keys.list, identity.tenant)
        return {"keys": [i.to_dict() for i in infos]}

    @app.post("/admin/keys", status_code=201)
    async def create_key(body: NewKey, identity: AdminKey) -> dict[str, Any]:
        unknown = sorted(set(body.scopes) - set(SCOPES))
        if unknown:
            raise HTTPException(422, f"unknown scopes {unknown}; known: {list(SCOPES)}")
        window = limiters["per_key"].window
        if body.rate_limit is not None and body.rate_limit[1] != window:
            # The per-key limiter is host-shared (one budget across workers): a key's own limit
            # may change the number of requests, not the window.
            raise HTTPException(
                422,
                f"rate_limit window {body.rate_limit[1]:g} s: keys use the per_key window, "
                f"{window:g} s",
            )
        key, info = await asyncio.to_thread(
            lambda: keys.create(
                identity.tenant,
                body.name,
                scopes=body.scopes,
                expires_at=body.expires_at,
                rate_limit=body.rate_limit,
                actor=actor(identity),
            )
        )
        return {"key": key, "info": info.to_dict()}

    @app.post("/admin/keys/{key_id}/rotate")
    async def rotate_key(
        key_id: int, identity: AdminKey, body: Rotate | None = None
    ) -> dict[str, Any]:
        grace = (body or Rotate()).grace
        key, info = await asyncio.to_thread(
            lambda: keys.rotate(identity.tenant, key_id, grace=grace, actor=actor(identity))
        )
        return {"key": key, "info": info.to_dict()}

    @app.delete("/admin/keys/{key_id}", status_code=204)
    async def revoke_key(key_id: int, identity: AdminKey) -> Response:
        await asyncio.to_thread(lambda: keys.revoke(identity.tenant, key_id, actor=actor(identity)))
        return Response(status_code=204)

    @app.get("/admin/audit")
    async def audit_entries(
        identity: AdminKey,
        limit: int = Query(default=100, ge=1, le=10_000),
        actor_filter: str | None = Query(default=None, alias="actor"),
    ) -> dict[str, Any]:
        if st.audit is None:
            raise HTTPException(404, "the audit log is disabled ([api_keys] audit = false)")
        entries = await asyncio.to_thread(lambda: st.audit.query(actor=actor_filter, limit=limit))
        return {"entries": [e.to_dict() for e in entries]}

    @app.get("/admin/audit/verify")
    async def audit_verify(identity: AdminKey) -> JSONResponse:
        if st.audit is None:
            raise HTTPException(404, "the audit log is disabled ([api_keys] audit = false)")
        try:
            count, head = await asyncio.to_thread(st.audit.verify)
        except keel.AuditTampered as err:
            return JSONResponse({"ok": False, "detail": str(err)}, status_code=409)
        return JSONResponse({"ok": True, "entries": count, "head": head})

    return app


def index_documents(kb: Any, settings: Settings) -> list[dict[str, Any]]:
    """Indexes the documents folder and, when it exists, the uploads folder (incremental)."""
    reports = []
    for folder in (settings.docs, settings.uploads):
        if folder.is_dir():
            report = kb.index_folder(str(folder))
            reports.append(
                {
                    "folder": folder.name,
                    **{
                        name: getattr(report, name)
                        for name in ("added", "updated", "removed", "unchanged")
                    },
                }
            )
    return reports


async def _check(name: str, probe: Callable[[], Any]) -> dict[str, Any]:
    return await _check_async(name, lambda: asyncio.to_thread(probe))


async def _check_async(name: str, probe: Callable[[], Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), timeout=5.0)
    except Exception as err:  # noqa: BLE001 - a failed check is a report, not a crash
        return {"name": name, "ok": False, "error": type(err).__name__}
    out: dict[str, Any] = {"name": name, "ok": detail is not False}
    if isinstance(detail, (str, int)) and not isinstance(detail, bool):
        out["detail"] = detail
    out["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


def _keyring_ok(engine: keel.Engine) -> str:
    ring = engine.keyring
    return f"primary key {ring.primary_id} of {len(ring.key_ids)}"


async def _kb_ok(knowledge: Knowledge) -> str | bool:
    kb = await knowledge.current()
    return f"{kb.documents} documents, {kb.passages} passages" if kb.passages else False


_speech_verified: dict[int, bool] = {}


async def _speech_ok(speaker: Speaker | None) -> str | bool:
    if speaker is None:
        return "disabled"
    if shutil.which(speaker.binary) is None:
        return False
    if not _speech_verified.get(id(speaker)):
        await speaker.synthesize("ready")
        _speech_verified[id(speaker)] = True
    return speaker.binary
