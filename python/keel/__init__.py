"""keel: the production core for conversational and voice-bot backends.

One Rust engine; this package is its Python front door. See the README for a tour.
"""

from __future__ import annotations

from ._exceptions import (
    CacheConfigError,
    CacheError,
    InvalidArgument,
    KeelError,
    RecursiveLoadError,
)
from ._memo import cached
from ._native import Cache, CacheStats, __version__

__all__ = [
    "Cache",
    "CacheConfigError",
    "CacheError",
    "CacheStats",
    "InvalidArgument",
    "KeelError",
    "RecursiveLoadError",
    "__version__",
    "cached",
]
