"""Awaitable faces of the neural retrieval classes, for asyncio (FastAPI handlers).

Embedding, dense search and reranking can take milliseconds to seconds; each helper runs the
native call in a worker thread (``asyncio.to_thread``). The native calls release the GIL, so the
event loop and other threads keep running meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ._native import CrossEncoder, DenseIndex, Embedder, Hit


async def embed_async(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    """``embedder.embed(texts)`` off the event loop."""
    return await asyncio.to_thread(embedder.embed, list(texts))


async def dense_search_async(
    index: DenseIndex, query: str, k: int = 10, filter: dict[str, Any] | None = None
) -> list[Hit]:
    """``index.search(query, k, filter)`` off the event loop."""
    return await asyncio.to_thread(index.search, query, k, filter)


async def rerank_async(
    cross_encoder: CrossEncoder, query: str, hits: Sequence[Hit], top: int | None = None
) -> list[Hit]:
    """``cross_encoder.rerank(query, hits, top)`` off the event loop."""
    return await asyncio.to_thread(cross_encoder.rerank, query, list(hits), top)
