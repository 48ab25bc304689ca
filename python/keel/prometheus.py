"""keel's metrics in the host's ``prometheus_client`` registry.

``keel.prometheus.register()`` adds a collector to ``prometheus_client.REGISTRY`` (or the
registry given): every scrape of the host's existing ``/metrics`` then carries keel's metrics
next to its own. The collector reads the core's registry at scrape time (``keel.metrics_text``)
and hands the families to ``prometheus_client`` as they are; the ``process_*`` metrics are left
to ``prometheus_client``'s own process collector (``process=True`` adds keel's, for a registry
that has none).

Requires ``prometheus_client`` (``pip install prometheus-client``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._native import metrics_text

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["KeelCollector", "register"]


class KeelCollector:
    """A ``prometheus_client`` collector of keel's metrics (read at each scrape)."""

    def __init__(self, *, process: bool = False) -> None:
        self.process = process

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        yield from text_string_to_metric_families(metrics_text(process=self.process))

    def describe(self) -> Iterator[Any]:
        """The families, so that the registry refuses a second keel collector (duplicates)."""
        return self.collect()


def register(registry: CollectorRegistry | None = None, *, process: bool = False) -> KeelCollector:
    """Registers a :class:`KeelCollector` with ``registry`` (default ``prometheus_client.REGISTRY``)
    and returns it (``registry.unregister(collector)`` removes it). Registering twice with one
    registry is refused by ``prometheus_client`` (duplicated timeseries)."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    collector = KeelCollector(process=process)
    registry.register(collector)
    return collector
