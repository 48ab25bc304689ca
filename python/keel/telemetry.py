"""Traces and logs: keel's spans exported with OpenTelemetry (OTLP over HTTP/protobuf) as
children of the web request's span, and keel's log events in ``logging``.

Turn on::

    import keel.telemetry
    keel.telemetry.configure(endpoint="http://collector:4318", service_name="voicebot")

or with an Engine's ``[telemetry.traces] enabled = true`` (docs/observability.md). Unset options
fall back to the standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER(_ARG)``,
``OTEL_BSP_*``). Off by default; when off, keel's calls do not look for a trace context at all.

The host's context. While traces are on, every keel call that does I/O picks up the caller's
current OpenTelemetry span (``opentelemetry-api``, e.g. the span of
``opentelemetry-instrumentation-fastapi``) by itself, so keel's spans are its children. Without
``opentelemetry-api``, or to use an incoming header as is, pass it explicitly::

    with keel.telemetry.context(request.headers["traceparent"]):
        memory.append(...)

``shutdown()`` flushes queued spans; it is registered with ``atexit`` by ``configure``. Forked
workers (gunicorn ``--preload``, ``os.fork``) build their own exporter on their first span.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

from . import _native

__all__ = ["configure", "context", "current_traceparent", "enabled", "flush", "shutdown"]

# Read by the native module on each call while traces are on (see `context`).
_traceparent: ContextVar[str | None] = ContextVar("keel_traceparent", default=None)

_LEVELS = {
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": 5,
}

_atexit_registered = False


def configure(
    *,
    traces: bool = True,
    endpoint: str | None = None,
    headers: dict[str, str] | None = None,
    service_name: str | None = None,
    sample_ratio: float | None = None,
    level: str | None = None,
    exporter: str | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    scheduled_delay: float | None = None,
    export_timeout: float | None = None,
    logs: bool = False,
    log_level: str | None = None,
    log_sink: str | None = None,
) -> None:
    """Turns traces (and, with ``logs=True``, logs) on, or reconfigures them.

    ``endpoint``: the OTLP/HTTP base URL (``/v1/traces`` is appended). ``headers``: sent with
    each export (e.g. a vendor's API key). ``sample_ratio``: parent-based, 0.0 to 1.0.
    ``level``: the most detailed span level exported (``"info"``). ``exporter``: ``"otlp"`` or
    ``"none"`` (spans made but not sent). Batch settings in spans and seconds. ``log_sink``:
    ``"logging"`` (loggers ``keel.*``, records carry ``trace_id`` / ``span_id``) or
    ``"stderr"`` (JSON lines); ``log_level`` defaults to ``"warn"``. ``None`` means the core's
    default, after the ``OTEL_*`` variables.

    Raises ``keel.InvalidArgument`` or ``keel.TelemetryError`` naming the bad option.
    """
    global _atexit_registered
    _native.telemetry_configure(
        traces=traces,
        endpoint=endpoint,
        headers=list(headers.items()) if headers else None,
        service_name=service_name,
        sample_ratio=sample_ratio,
        level=level,
        exporter=exporter,
        max_queue_size=max_queue_size,
        max_export_batch_size=max_export_batch_size,
        scheduled_delay=scheduled_delay,
        export_timeout=export_timeout,
        logs=logs,
        log_level=log_level,
        log_sink=log_sink,
    )
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def flush() -> None:
    """Sends every finished span now (waits for the exporter)."""
    _native.telemetry_flush()


def shutdown() -> None:
    """Flushes queued spans, stops the exporter, turns traces and logs off (idempotent)."""
    _native.telemetry_shutdown()


def enabled() -> bool:
    """Whether keel's spans are being exported."""
    return _native.trace_enabled()


def current_traceparent() -> str | None:
    """The parent keel's spans would get on a call made here, as a ``traceparent``."""
    return _native.current_traceparent()


@contextlib.contextmanager
def context(traceparent: str | None) -> Iterator[None]:
    """Makes ``traceparent`` (a W3C header value) the parent of keel's spans inside the block,
    in this thread or asyncio task (a ``ContextVar``); it wins over the current
    ``opentelemetry`` span. ``None`` is accepted and changes nothing (a missing header).
    Raises ``keel.InvalidArgument`` for a malformed value."""
    if traceparent is None:
        yield
        return
    _native.check_traceparent(traceparent)
    token = _traceparent.set(traceparent)
    try:
        yield
    finally:
        _traceparent.reset(token)


def _emit(
    level: str,
    target: str,
    message: str,
    fields: dict[str, str],
    trace_id: str | None,
    span_id: str | None,
) -> None:
    # Called by the native module for each keel log record while logs go to `logging`.
    logger = logging.getLogger(target.replace("::", "."))
    lvl = _LEVELS.get(level, logging.INFO)
    if not logger.isEnabledFor(lvl):
        return
    text = message
    if fields:
        text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
    logger.log(
        lvl,
        text,
        extra={"trace_id": trace_id, "span_id": span_id, "keel_fields": fields},
    )
