"""Answer generation, pluggable.

``OpenAIResponder`` streams from any OpenAI-compatible ``/chat/completions`` endpoint
(``stream: true``), parsing the server-sent events with ``keel.SseParser``. ``ExtractiveResponder``
needs no model and no network: it composes the answer from the retrieved passages (the sentences
that share the most words with the question), streams it word by word and cites each sentence's
passage with its marker ``[n]``. Both yield text pieces as they are produced.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import httpx

import keel

SYSTEM_PROMPT = (
    "You are the Riverton Transit voice assistant. Answer in two to four short spoken sentences, "
    "using only the numbered passages. Put the passage's marker, like [1], after each sentence "
    "that uses it. If the passages do not answer the question, say so."
)

NOT_FOUND = "I could not find that in the Riverton Transit documents I know."

_WRAPPED = re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOPWORDS = frozenset(
    """a an and are as at be by can do does for from how i if in is it its me my of on or the
    there to what when where which who why will with you your""".split()
)


def content_words(text: str) -> set[str]:
    """Lower-case words minus stop words, with a crude plural fold ("trams" -> "tram")."""
    words = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOPWORDS:
            continue
        words.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return words


class ResponderError(RuntimeError):
    """The answer generator failed (the message never holds prompt or answer text)."""


class Responder(Protocol):
    name: str

    def stream(
        self, question: str, hits: Sequence[Any], messages: list[dict[str, str]]
    ) -> AsyncIterator[str]: ...


class ExtractiveResponder:
    """The offline responder: the best-matching sentences of the passages, cited, word by word.

    ``word_delay`` paces the words (seconds between two), like a model generating them; 0 streams
    as fast as the event loop goes."""

    name = "extractive"

    def __init__(self, *, max_sentences: int = 3, word_delay: float = 0.0) -> None:
        self.max_sentences = max_sentences
        self.word_delay = word_delay

    def compose(self, question: str, hits: Sequence[Any]) -> str:
        wanted = content_words(question)
        scored: list[tuple[float, int, int, str]] = []
        for rank, hit in enumerate(hits):
            # Headings are titles, not statements: leave them out of the answer. Lines wrapped
            # inside a paragraph are one text (the segmenter ends a sentence at a line break).
            body = "\n".join(
                line for line in hit.text.splitlines() if not line.lstrip().startswith("#")
            )
            body = _WRAPPED.sub(" ", body)
            seg = keel.SentenceSegmenter()
            sentences = [*seg.push(body), *seg.flush()]
            for pos, sentence in enumerate(sentences):
                sentence = " ".join(sentence.split())
                if not sentence or not sentence[0].isupper() and not sentence[0].isdigit():
                    continue  # empty, or the tail of a sentence cut at the passage's start
                overlap = len(wanted & content_words(sentence))
                if overlap:
                    # Earlier passages (better retrieval rank) win ties.
                    scored.append((overlap - 0.1 * rank, rank, pos, sentence))
        if not scored:
            return NOT_FOUND
        best = sorted(scored, key=lambda s: -s[0])[: self.max_sentences]
        best.sort(key=lambda s: (s[1], s[2]))  # read them in document order
        parts = []
        for _, rank, _, sentence in best:
            if sentence[-1] not in ".!?":
                sentence += "."
            parts.append(f"{sentence} [{rank + 1}]")
        return " ".join(parts)

    async def stream(
        self, question: str, hits: Sequence[Any], messages: list[dict[str, str]]
    ) -> AsyncIterator[str]:
        answer = self.compose(question, hits)
        for word in re.findall(r"\S+\s*", answer):
            if self.word_delay:
                await asyncio.sleep(self.word_delay)
            else:
                await asyncio.sleep(0)  # let the speech tasks and the response run
            yield word


class OpenAIResponder:
    """An OpenAI-compatible chat-completions endpoint, streamed.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://localhost:8080/v1``)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(
        self, question: str, hits: Sequence[Any], messages: list[dict[str, str]]
    ) -> AsyncIterator[str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "messages": messages, "stream": True}
        parser = keel.SseParser()
        try:
            async with self._client.stream("POST", self.url, json=body, headers=headers) as resp:
                if resp.status_code != 200:
                    raise ResponderError(f"the model endpoint answered HTTP {resp.status_code}")
                async for chunk in resp.aiter_bytes():
                    for event in parser.feed(chunk):
                        if event.is_done:  # data: [DONE]
                            return
                        if not event.data.strip():
                            continue
                        piece = _delta(event.data)
                        if piece:
                            yield piece
        except httpx.HTTPError as err:
            raise ResponderError(f"the model endpoint failed: {type(err).__name__}") from None


def _delta(data: str) -> str | None:
    try:
        obj = json.loads(data)
        choice = obj["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ResponderError("the model endpoint sent an event that is not a chat chunk") from None
    delta = choice.get("delta") or {}
    content = delta.get("content")
    return content if isinstance(content, str) else None
