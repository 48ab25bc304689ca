"""Deprecated free functions of the first async API: each is one line over the ``Async<Name>``
wrappers of ``keel._aio`` (``AsyncEmbedder``, ``AsyncDenseIndex``, ``AsyncCrossEncoder``), which
are the one async shape of every I/O- or model-bound class."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ._aio import AsyncCrossEncoder, AsyncDenseIndex, AsyncEmbedder
from ._native import CrossEncoder, DenseIndex, Embedder, Hit


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"keel.{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


async def embed_async(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    """Deprecated: ``await keel.AsyncEmbedder(embedder).embed(texts)``."""
    _deprecated("embed_async", "await keel.AsyncEmbedder(embedder).embed(texts)")
    return await AsyncEmbedder(embedder).embed(texts)


async def dense_search_async(
    index: DenseIndex, query: str, k: int = 10, filter: dict[str, Any] | None = None
) -> list[Hit]:
    """Deprecated: ``await keel.AsyncDenseIndex(index).search(query, k, filter)``."""
    _deprecated("dense_search_async", "await keel.AsyncDenseIndex(index).search(query, k)")
    return await AsyncDenseIndex(index).search(query, k, filter)


async def rerank_async(
    cross_encoder: CrossEncoder, query: str, hits: Sequence[Hit], top: int | None = None
) -> list[Hit]:
    """Deprecated: ``await keel.AsyncCrossEncoder(cross_encoder).rerank(query, hits, top)``."""
    _deprecated("rerank_async", "await keel.AsyncCrossEncoder(cross_encoder).rerank(query, hits)")
    return await AsyncCrossEncoder(cross_encoder).rerank(query, hits, top)
