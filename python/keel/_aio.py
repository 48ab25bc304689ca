"""Awaitable faces of keel's I/O- and model-bound classes, for asyncio (FastAPI handlers).

One shape for every such class, the shape of ``keel.AsyncMemory``: ``AsyncX(x)`` wraps an
``X``; every call that blocks on the database, a file or a model is an ``async def`` with the
same name and arguments, run in a worker thread (``asyncio.to_thread``); ``await AsyncX.open(...)``
builds the wrapped object off the event loop where construction does I/O; ``.sync`` is the wrapped
object. The native calls release the GIL, so the event loop and other threads keep running. Cheap,
infallible reads (properties, ``len``) stay on ``.sync``.

Keyword options are forwarded as given, so their defaults stay those of the wrapped method (the
core's): nothing here restates a default. Not wrapped: ``Cache``, ``RateLimiter``, ``Keyring``
(in memory, microseconds per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from ._native import (
    ApiKeyInfo,
    ApiKeys,
    AuditEntry,
    AuditLog,
    BM25Index,
    CrossEncoder,
    DenseIndex,
    Embedder,
    Hit,
    Identity,
)
from ._types import AuditVerification

T = TypeVar("T")


class _Async(Generic[T]):
    __slots__ = ("_x",)

    def __init__(self, wrapped: T) -> None:
        self._x = wrapped

    @property
    def sync(self) -> T:
        """The wrapped synchronous object."""
        return self._x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._x!r})"


class AsyncApiKeys(_Async[ApiKeys]):
    """Awaitable wrapper over a ``keel.ApiKeys``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str, keyring: Any, **options: Any) -> AsyncApiKeys:
        """Opens an ``ApiKeys`` (which may run migrations) off the event loop."""
        return cls(await asyncio.to_thread(ApiKeys, path, keyring, **options))

    async def create(self, tenant: str, name: str, **options: Any) -> tuple[str, ApiKeyInfo]:
        return await asyncio.to_thread(self._x.create, tenant, name, **options)

    async def verify(self, key: str) -> Identity:
        return await asyncio.to_thread(self._x.verify, key)

    async def get(self, tenant: str, key_id: int) -> ApiKeyInfo:
        return await asyncio.to_thread(self._x.get, tenant, key_id)

    async def list(self, tenant: str) -> list[ApiKeyInfo]:
        return await asyncio.to_thread(self._x.list, tenant)

    async def revoke(self, tenant: str, key_id: int, **options: Any) -> None:
        await asyncio.to_thread(self._x.revoke, tenant, key_id, **options)

    async def rotate(self, tenant: str, key_id: int, **options: Any) -> tuple[str, ApiKeyInfo]:
        return await asyncio.to_thread(self._x.rotate, tenant, key_id, **options)


class AsyncAuditLog(_Async[AuditLog]):
    """Awaitable wrapper over a ``keel.AuditLog``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str, keyring: Any) -> AsyncAuditLog:
        """Opens an ``AuditLog`` (which may run migrations) off the event loop."""
        return cls(await asyncio.to_thread(AuditLog, path, keyring))

    async def append(self, actor: str, action: str, *args: Any, **options: Any) -> int:
        return await asyncio.to_thread(self._x.append, actor, action, *args, **options)

    async def query(self, **options: Any) -> list[AuditEntry]:
        return await asyncio.to_thread(self._x.query, **options)

    async def verify(self) -> AuditVerification:
        return await asyncio.to_thread(self._x.verify)


class AsyncEmbedder(_Async[Embedder]):
    """Awaitable wrapper over a ``keel.Embedder``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str, **options: Any) -> AsyncEmbedder:
        """Loads the model off the event loop."""
        return cls(await asyncio.to_thread(Embedder, path, **options))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._x.embed, list(texts))

    async def embed_bytes(self, texts: Sequence[str]) -> bytes:
        return await asyncio.to_thread(self._x.embed_bytes, list(texts))


class AsyncCrossEncoder(_Async[CrossEncoder]):
    """Awaitable wrapper over a ``keel.CrossEncoder``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str, **options: Any) -> AsyncCrossEncoder:
        """Loads the model off the event loop."""
        return cls(await asyncio.to_thread(CrossEncoder, path, **options))

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self._x.score, query, list(passages))

    async def rerank(
        self, query: str, hits: Sequence[Hit], *args: Any, **options: Any
    ) -> list[Hit]:
        return await asyncio.to_thread(self._x.rerank, query, list(hits), *args, **options)


class AsyncDenseIndex(_Async[DenseIndex]):
    """Awaitable wrapper over a ``keel.DenseIndex``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str, *args: Any, **options: Any) -> AsyncDenseIndex:
        """Reads a saved index off the event loop."""
        return cls(await asyncio.to_thread(DenseIndex.open, path, *args, **options))

    async def save(self, path: str) -> None:
        await asyncio.to_thread(self._x.save, path)

    async def add_many(self, docs: Iterable[Any]) -> None:
        await asyncio.to_thread(self._x.add_many, list(docs))

    async def add_vectors(self, *args: Any, **options: Any) -> None:
        await asyncio.to_thread(self._x.add_vectors, *args, **options)

    async def delete(self, id: str) -> bool:
        return await asyncio.to_thread(self._x.delete, id)

    async def search(self, query: str, *args: Any, **options: Any) -> list[Hit]:
        return await asyncio.to_thread(self._x.search, query, *args, **options)

    async def search_vector(self, vector: Sequence[float], *args: Any, **options: Any) -> list[Hit]:
        return await asyncio.to_thread(self._x.search_vector, list(vector), *args, **options)


class AsyncBM25Index(_Async[BM25Index]):
    """Awaitable wrapper over a ``keel.BM25Index``; same methods, same arguments."""

    __slots__ = ()

    @classmethod
    async def open(cls, path: str) -> AsyncBM25Index:
        """Reads a saved index off the event loop."""
        return cls(await asyncio.to_thread(BM25Index.open, path))

    async def save(self, path: str) -> None:
        await asyncio.to_thread(self._x.save, path)

    async def add(self, id: str, text: str, *args: Any, **options: Any) -> None:
        await asyncio.to_thread(self._x.add, id, text, *args, **options)

    async def add_many(self, docs: Iterable[Any], **options: Any) -> None:
        await asyncio.to_thread(self._x.add_many, list(docs), **options)

    async def update(self, id: str, text: str, *args: Any, **options: Any) -> None:
        await asyncio.to_thread(self._x.update, id, text, *args, **options)

    async def delete(self, id: str) -> bool:
        return await asyncio.to_thread(self._x.delete, id)

    async def search(self, query: str, *args: Any, **options: Any) -> list[Hit]:
        return await asyncio.to_thread(self._x.search, query, *args, **options)

    async def search_many(
        self, queries: Sequence[str], *args: Any, **options: Any
    ) -> list[list[Hit]]:
        return await asyncio.to_thread(self._x.search_many, list(queries), *args, **options)
