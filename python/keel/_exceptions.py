"""The exception hierarchy of keel.

Every error raised by keel is a ``KeelError``; each area has its own subclass, which also derives
from the built-in exception that fits, so ``except ValueError`` keeps working for bad arguments.
The native module looks these classes up by name, so renaming one is a breaking change.

Errors a caller acts on carry their data as attributes, set by the native module (one mapping,
``bindings/python/src/errors.rs``) and ``None`` when an exception is raised without them:
``AuditTampered.seq``, ``StoreBusy.waited`` (seconds), ``KeyInUseError.key_id`` and ``.rows``,
``ContentTooLarge.size`` and ``.max``... Durations are in seconds, as everywhere in ``keel``.
"""

from __future__ import annotations

__all__ = [
    "KeelError",
    "InvalidArgument",
    "CacheError",
    "CacheConfigError",
    "RecursiveLoadError",
    "AuthError",
    "AuditTampered",
    "MissingScope",
    "RateLimitError",
    "RateLimitConfigError",
    "RateLimitStateError",
    "RateLimitStateBusy",
    "RateLimited",
    "StoreError",
    "StoreBusy",
    "StoreUnavailable",
    "CryptoError",
    "DecryptionError",
    "KeyringError",
    "KeyInUseError",
    "KeyMismatchError",
    "ConversationError",
    "MemoryTampered",
    "SessionNotFound",
    "ContentTooLarge",
    "InvalidMetadata",
    "BudgetTooSmall",
    "RagError",
    "RagConfigError",
    "DuplicateDocumentError",
    "MetadataFilterError",
    "IndexFileError",
    "EvalDataError",
    "ModelError",
    "OnnxRuntimeUnavailable",
    "SourceError",
    "IndexingCancelled",
    "ConfigError",
    "BackendUnavailable",
    "UnknownComponent",
    "TelemetryError",
    "StreamError",
    "StreamConfigError",
    "SseFieldError",
    "SseTooLarge",
    "RedisError",
    "RedisUnavailable",
    "RedisUrlError",
]


class KeelError(Exception):
    """Base class of every error raised by keel."""


class InvalidArgument(KeelError, ValueError):
    """An argument was outside the accepted range or malformed."""


class CacheError(KeelError):
    """A cache operation failed."""


class CacheConfigError(CacheError, ValueError):
    """Bad cache settings: zero capacity (``field`` names the limit), a TTL that is not positive
    and finite, an entry heavier than the cache can hold (``weight`` above ``max``)."""

    field: str | None = None
    weight: int | None = None
    max: int | None = None


class RecursiveLoadError(CacheError, RuntimeError):
    """``get_or_set`` was called for a key from inside the computation of that same key."""


for _cls in (KeelError, InvalidArgument, CacheError, CacheConfigError, RecursiveLoadError):
    _cls.__module__ = "keel"


class AuthError(KeelError):
    """An API key was refused. ``reason`` is one of ``"malformed"``, ``"bad_checksum"``,
    ``"wrong_environment"`` (a key of an environment the registry does not accept, e.g. a
    ``keel_test_`` key in a live app), ``"unknown_key"``, ``"revoked"``, ``"expired"``,
    ``"tampered"`` (the key's stored record was edited without the keyring),
    ``"missing_scope"``.

    For ``"wrong_environment"``, ``env`` is the key's environment and ``accepted`` the list the
    registry accepts."""

    env: str | None = None
    accepted: list[str] | None = None

    def __init__(self, message: str, reason: str = "invalid", scope: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.scope = scope


class MissingScope(AuthError):
    """A valid key lacks the required scope (``scope`` names it): HTTP 403, not 401."""


class RateLimitError(KeelError):
    """A rate-limiting failure."""


class RateLimitConfigError(RateLimitError, ValueError):
    """A bad policy (limit, window, name, algorithm) or a cost that can never be allowed (then
    ``cost``, the policy's ``limit`` and ``policy`` name are set)."""

    cost: int | None = None
    limit: int | None = None
    policy: str | None = None


class RateLimitStateError(RateLimitError, OSError):
    """The host-shared state file could not be created, opened or mapped (the message names it),
    or its header disagrees with its name."""


class RateLimitStateBusy(RateLimitStateError, TimeoutError):
    """A host-shared decision waited longer than its bound (2 s) for a stripe lock that other
    processes keep taking. A lock left by a dead process is taken over after its lease instead.
    ``path`` is the state file, ``waited`` the time waited in seconds, ``holder_pid`` the pid in
    the lock word."""

    path: str | None = None
    waited: float | None = None
    holder_pid: int | None = None


class RateLimited(RateLimitError):
    """A request was denied by a rate limit. ``retry_after`` is in seconds; ``decision`` is the
    ``keel.Decision`` (its ``headers()`` belong on the 429 response)."""

    def __init__(self, decision: object, message: str = "rate limit exceeded") -> None:
        super().__init__(message)
        self.decision = decision
        self.retry_after: float | None = getattr(decision, "retry_after", None)


for _cls in (
    AuthError,
    MissingScope,
    RateLimitError,
    RateLimitConfigError,
    RateLimitStateError,
    RateLimitStateBusy,
    RateLimited,
):
    _cls.__module__ = "keel"


class StoreError(KeelError, OSError):
    """The store failed: the file or database cannot be opened, a migration or a statement
    failed (``sqlite_code`` is SQLite's extended result code when SQLite reported the failure,
    ``sqlstate`` PostgreSQL's SQLSTATE when PostgreSQL did)."""

    sqlite_code: int | None = None
    sqlstate: str | None = None


class StoreUnavailable(StoreError, ConnectionError):
    """The database server (PostgreSQL) could not be reached, or the connection was lost before
    the operation was known to commit. Nothing was acknowledged: retry later (the next call
    reconnects). ``location`` is the database URL without its password."""

    location: str | None = None


class StoreBusy(StoreError, TimeoutError):
    """The database stayed locked by other connections or processes longer than keel waits;
    ``waited`` is how long this call waited, in seconds. Nothing was written: retry later."""

    waited: float | None = None


class CryptoError(KeelError):
    """A keyring or encryption operation failed."""


class AuditTampered(CryptoError):
    """The audit log's chain does not verify: an entry was edited, deleted, inserted, reordered,
    or the log was truncated. ``seq`` is the first entry (sequence number) that does not verify.
    (A ``CryptoError``, and still a ``KeelError`` as before.)"""

    seq: int | None = None


class DecryptionError(CryptoError, ValueError):
    """A ciphertext failed to decrypt: altered, moved to another row, or the key is wrong or
    retired (then ``key_id`` names the key the keyring lacks)."""

    key_id: int | None = None


class KeyringError(CryptoError, ValueError):
    """Keyring material is malformed, or its source (env var, key file) is missing."""


class KeyInUseError(CryptoError, RuntimeError):
    """A key cannot be retired while data is still encrypted under it; rotate first. ``key_id``
    is the key, ``rows`` how many encrypted fields still use it."""

    key_id: int | None = None
    rows: int | None = None


class KeyMismatchError(KeyringError, DecryptionError):
    """A key of the keyring differs from the key of the same id the database was written with:
    the wrong keyring. Raised when a ``Memory`` opens (and by reads after ``set_keyring`` with such
    a key). Also a ``DecryptionError``, which is what a wrong key raised before it was checked at
    open. ``key_id`` names the key that differs."""


class ConversationError(KeelError):
    """A conversation-memory operation failed."""


class SessionNotFound(ConversationError, KeyError):
    """No such session for this tenant and user."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class ContentTooLarge(ConversationError, ValueError):
    """A message's content is larger than the configured limit: ``size`` bytes, ``max``
    allowed."""

    size: int | None = None
    max: int | None = None


class InvalidMetadata(ConversationError, ValueError):
    """Message metadata is not JSON or is too large."""


class BudgetTooSmall(ConversationError, ValueError):
    """A token budget (``Memory.llm_messages``) cannot hold the system prompt and the passages:
    ``budget`` tokens asked for, ``needed`` tokens they take alone."""

    budget: int | None = None
    needed: int | None = None


class MemoryTampered(ConversationError, DecryptionError):
    """Stored memory failed its integrity check: a message or one of its clear columns (role,
    tokens, time, session) was altered, a message was deleted, or a session's owner, times or
    count were edited. Nothing is returned. ``message_id`` names the message when one failed,
    ``reason`` says what does not verify. Also a ``DecryptionError``, which is what an altered
    message raised before."""

    reason: str | None = None

    def __init__(self, message: str, message_id: int | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id


for _cls in (
    StoreError,
    StoreBusy,
    StoreUnavailable,
    CryptoError,
    AuditTampered,
    DecryptionError,
    KeyringError,
    KeyInUseError,
    KeyMismatchError,
    ConversationError,
    SessionNotFound,
    ContentTooLarge,
    InvalidMetadata,
    BudgetTooSmall,
    MemoryTampered,
):
    _cls.__module__ = "keel"


class RagError(KeelError):
    """A retrieval failure: chunking, indexing, search, fusion or evaluation."""


class RagConfigError(RagError, ValueError):
    """A bad retrieval setting: chunk size, overlap, k1, b, language, fusion weight or metric."""


class DuplicateDocumentError(RagError, ValueError):
    """A document with this id is already indexed; use ``update`` to replace it."""


class MetadataFilterError(RagError, ValueError):
    """Document metadata that is not a JSON object, or a malformed metadata filter."""


class IndexFileError(RagError, OSError):
    """An index file could not be read or written, or is damaged or of another version."""


class EvalDataError(RagError, ValueError):
    """An evaluation data set (BEIR directory, qrels, run) is missing or malformed."""


class ModelError(RagError, ValueError):
    """A model directory is missing, incomplete or malformed (model.onnx, tokenizer.json), or
    inference failed."""


class OnnxRuntimeUnavailable(RagError, RuntimeError):
    """ONNX Runtime could not be found or loaded; the message says how to install it
    (``pip install "onnxruntime>=1.31,<2"`` or ``ORT_DYLIB_PATH``)."""


class SourceError(RagError, OSError):
    """A folder or file given to ``KnowledgeBase.index_folder`` cannot be used: the folder is
    missing or not a folder, or a file cannot be read or is not UTF-8. ``path`` names it,
    ``reason`` says what is wrong."""

    path: str | None = None
    reason: str | None = None


class IndexingCancelled(RagError):
    """``KnowledgeBase.index_folder`` was stopped by its progress hook (from C: a nonzero return;
    from Python the hook's own exception propagates instead) after ``done`` of ``total`` files;
    what was indexed before is kept."""

    done: int | None = None
    total: int | None = None


for _cls in (
    RagError,
    RagConfigError,
    DuplicateDocumentError,
    MetadataFilterError,
    IndexFileError,
    EvalDataError,
    ModelError,
    OnnxRuntimeUnavailable,
    SourceError,
    IndexingCancelled,
):
    _cls.__module__ = "keel"


class ConfigError(KeelError, ValueError):
    """The engine configuration is unreadable, malformed, has an unknown field, or a value out of
    range; the message names the field (``ratelimit.per_ip.limit``), its value and its source.
    ``field`` and ``value`` carry them when one field is at fault."""

    field: str | None = None
    value: str | None = None


class BackendUnavailable(ConfigError):
    """The database URL names a scheme that is no database backend of this build
    (``redis://``: Redis is configured under ``[redis]``; ``postgres://`` in a build without the
    ``postgres`` feature). The message names the scheme, never the URL's password."""

    scheme: str | None = None


class UnknownComponent(ConfigError, KeyError):
    """No rate limiter or cache of that name is configured; the message lists the configured
    ones."""

    name: str | None = None

    def __str__(self) -> str:
        # KeyError's str() would quote the message.
        return str(self.args[0]) if self.args else ""


class TelemetryError(KeelError, RuntimeError):
    """Telemetry could not be turned on: a bad ``OTEL_*`` variable or option (named, never a
    header value), an exporter that cannot be built, or another global ``tracing`` subscriber in
    the process."""


TelemetryError.__module__ = "keel"


class StreamError(KeelError):
    """A streaming failure: segmenter options, an SSE field, an SSE stream too large."""


class StreamConfigError(StreamError, ValueError):
    """Segmenter options out of range (``max_chars`` below 8, ``min_chars`` above ``max_chars``)
    or an SSE parser limit of 0."""


class SseFieldError(StreamError, ValueError):
    """An SSE ``event`` or ``id`` the wire format cannot carry (a line break; NUL in an id).
    ``field`` names it."""

    field: str | None = None


class SseTooLarge(StreamError, ValueError):
    """An SSE line or event grew past the parser's ``max_event_bytes`` (``limit``). The parser
    dropped it and carries on at the next event."""

    limit: int | None = None


for _cls in (StreamError, StreamConfigError, SseFieldError, SseTooLarge):
    _cls.__module__ = "keel"


class RedisError(KeelError):
    """A Redis backend failed: Redis refused a command (a script error, a wrong type under one of
    keel's keys). ``endpoint`` is ``host:port`` (never the password)."""

    endpoint: str | None = None


class RedisUnavailable(RedisError, ConnectionError):
    """Redis could not be reached or did not answer within ``[redis] timeout``: down, restarting,
    loading. A rate limiter with ``on_redis_error = "closed"`` raises it (one with ``"open"``
    allows and flags the decision ``degraded``). Connections recover by themselves once Redis
    is back."""


class RedisUrlError(RedisError, ValueError):
    """The Redis URL does not parse (the message masks the password)."""


for _cls in (RedisError, RedisUnavailable, RedisUrlError):
    _cls.__module__ = "keel"
