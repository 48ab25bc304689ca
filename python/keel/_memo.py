"""``keel.cached``: memoize a function (sync or async) in a ``keel.Cache``.

Concurrent callers that miss the same arguments compute once: threads through
``Cache.get_or_set``, coroutines through one shared future per key and event loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import warnings
from collections.abc import Hashable
from typing import Any, Callable, TypeVar

from ._native import Cache

F = TypeVar("F", bound=Callable[..., Any])

_MISSING = object()
_KWARGS_MARK = object()


def _default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    if not kwargs:
        return args
    return (*args, _KWARGS_MARK, *sorted(kwargs.items()))


def cached(
    max_entries: int = 1024,
    ttl: float | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    maxsize: int | None = None,
) -> Callable[[F], F]:
    """Memoize the decorated function's results in a ``keel.Cache(max_entries, ttl)``.

    ``key(*args, **kwargs)`` builds the cache key (default: the arguments themselves, which must
    be hashable). The wrapper exposes ``.cache`` (the ``keel.Cache``) and ``.cache_clear()``.
    Exceptions are not cached. ``maxsize=`` is the deprecated old name of ``max_entries``.
    """
    if maxsize is not None:
        warnings.warn(
            "cached(maxsize=...) is deprecated: use max_entries=...",
            DeprecationWarning,
            stacklevel=2,
        )
        max_entries = maxsize

    def decorate(fn: F) -> F:
        cache = Cache(max_entries, ttl)

        def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
            return key(*args, **kwargs) if key is not None else _default_key(args, kwargs)

        if inspect.iscoroutinefunction(fn):
            inflight: dict[tuple[int, Hashable], asyncio.Future[Any]] = {}

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                k = make_key(args, kwargs)
                value = cache.get(k, _MISSING)
                if value is not _MISSING:
                    return value
                loop = asyncio.get_running_loop()
                slot = (id(loop), k)
                pending = inflight.get(slot)
                if pending is not None:
                    return await asyncio.shield(pending)
                future: asyncio.Future[Any] = loop.create_future()
                inflight[slot] = future
                try:
                    value = await fn(*args, **kwargs)
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except BaseException as exc:
                    future.set_exception(exc)
                    future.exception()  # mark retrieved: waiters re-raise it, none may exist
                    raise
                else:
                    cache.set(k, value)
                    future.set_result(value)
                    return value
                finally:
                    del inflight[slot]

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return cache.get_or_set(make_key(args, kwargs), lambda: fn(*args, **kwargs))

            wrapper = sync_wrapper

        wrapper.cache = cache
        wrapper.cache_clear = cache.clear
        return wrapper  # type: ignore[no-any-return]

    return decorate
