"""``keel.AsyncKnowledgeBase``: ``keel.KnowledgeBase`` for asyncio (FastAPI handlers).

Each method runs the matching ``KnowledgeBase`` method in a worker thread
(``asyncio.to_thread``). The native calls release the GIL for indexing, embedding and search, so
the event loop and other threads keep running meanwhile. One ``KnowledgeBase`` is shared by the
sync and async faces: ``AsyncKnowledgeBase(kb).sync is kb``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ._native import Hit, IndexReport, KnowledgeBase


class AsyncKnowledgeBase:
    """Awaitable wrapper over a ``keel.KnowledgeBase``; same methods, same arguments."""

    __slots__ = ("_kb",)

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str] | None = None, **options: Any
    ) -> AsyncKnowledgeBase:
        """Opens a ``KnowledgeBase`` (which may read its indexes) off the event loop."""
        return cls(await asyncio.to_thread(KnowledgeBase, path, **options))

    @property
    def sync(self) -> KnowledgeBase:
        """The underlying synchronous ``KnowledgeBase``."""
        return self._kb

    async def search(self, query: str, k: int = 5, filter: Any = None) -> list[Hit]:
        return await asyncio.to_thread(self._kb.search, query, k, filter)

    async def index_folder(
        self, folder: str | os.PathLike[str], *, progress: Any = None
    ) -> IndexReport:
        return await asyncio.to_thread(self._kb.index_folder, folder, progress=progress)

    async def add(self, id: str, text: str, title: str = "", metadata: Any = None) -> int:
        return await asyncio.to_thread(self._kb.add, id, text, title, metadata)

    async def delete(self, id: str) -> bool:
        return await asyncio.to_thread(self._kb.delete, id)

    async def save(self) -> None:
        await asyncio.to_thread(self._kb.save)
