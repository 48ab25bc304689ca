"""``keel.AsyncMemory``: ``keel.Memory`` for asyncio (FastAPI handlers).

Each method runs the matching ``Memory`` method in a worker thread (``asyncio.to_thread``). The
native calls release the GIL for all database and encryption work, so the event loop and other
threads keep running meanwhile. One ``Memory`` (and its connection pool) is shared by the sync
and async faces: ``AsyncMemory(memory).sync is memory``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from ._native import Keyring, Memory, Message, SessionInfo


class AsyncMemory:
    """Awaitable wrapper over a ``keel.Memory``; same methods, same arguments."""

    __slots__ = ("_m",)

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    @classmethod
    async def open(cls, path: str, keyring: Keyring, **options: Any) -> AsyncMemory:
        """Opens a ``Memory`` (which may run migrations) off the event loop."""
        return cls(await asyncio.to_thread(Memory, path, keyring, **options))

    @property
    def sync(self) -> Memory:
        """The underlying synchronous ``Memory``."""
        return self._m

    async def append(
        self,
        tenant: str,
        user: str,
        session: str,
        role: str,
        content: str,
        metadata: Any = None,
        tokens: int | None = None,
    ) -> int:
        return await asyncio.to_thread(
            self._m.append, tenant, user, session, role, content, metadata, tokens
        )

    async def append_many(
        self, tenant: str, user: str, session: str, messages: Iterable[Mapping[str, Any]]
    ) -> list[int]:
        return await asyncio.to_thread(self._m.append_many, tenant, user, session, list(messages))

    async def history(
        self, tenant: str, user: str, session: str, limit: int = 50, offset: int = 0
    ) -> list[Message]:
        return await asyncio.to_thread(self._m.history, tenant, user, session, limit, offset)

    async def window(self, tenant: str, user: str, session: str, budget: int) -> list[Message]:
        return await asyncio.to_thread(self._m.window, tenant, user, session, budget)

    async def sessions(
        self, tenant: str, user: str, limit: int = 100, offset: int = 0
    ) -> list[SessionInfo]:
        return await asyncio.to_thread(self._m.sessions, tenant, user, limit, offset)

    async def export(self, tenant: str, user: str, session: str) -> str:
        return await asyncio.to_thread(self._m.export, tenant, user, session)

    async def delete_session(self, tenant: str, user: str, session: str) -> None:
        await asyncio.to_thread(self._m.delete_session, tenant, user, session)

    async def delete_user(self, tenant: str, user: str) -> int:
        return await asyncio.to_thread(self._m.delete_user, tenant, user)

    async def purge_idle(self, idle: float) -> int:
        return await asyncio.to_thread(self._m.purge_idle, idle)

    async def rotate(self, batch: int = 1000) -> int:
        return await asyncio.to_thread(self._m.rotate, batch)

    async def llm_messages(
        self,
        tenant: str,
        user: str,
        session: str,
        *,
        budget: int,
        system: str | None = None,
        passages: Iterable[Any] | None = None,
    ) -> list[dict[str, str]]:
        return await asyncio.to_thread(
            lambda: self._m.llm_messages(
                tenant,
                user,
                session,
                budget=budget,
                system=system,
                passages=None if passages is None else list(passages),
            )
        )
