"""The exception hierarchy of keel.

Every error raised by keel is a ``KeelError``; each area has its own subclass, which also derives
from the built-in exception that fits, so ``except ValueError`` keeps working for bad arguments.
The native module looks these classes up by name, so renaming one is a breaking change.
"""

from __future__ import annotations

__all__ = [
    "KeelError",
    "InvalidArgument",
    "CacheError",
    "CacheConfigError",
    "RecursiveLoadError",
]


class KeelError(Exception):
    """Base class of every error raised by keel."""


class InvalidArgument(KeelError, ValueError):
    """An argument was outside the accepted range or malformed."""


class CacheError(KeelError):
    """A cache operation failed."""


class CacheConfigError(CacheError, ValueError):
    """Bad cache settings: zero capacity, a TTL that is not positive and finite, an entry
    heavier than the cache can hold."""


class RecursiveLoadError(CacheError, RuntimeError):
    """``get_or_set`` was called for a key from inside the computation of that same key."""


for _cls in (KeelError, InvalidArgument, CacheError, CacheConfigError, RecursiveLoadError):
    _cls.__module__ = "keel"
