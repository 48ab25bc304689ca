"""Small record types the native module returns."""

from __future__ import annotations

from typing import NamedTuple


class AuditVerification(NamedTuple):
    """The result of ``AuditLog.verify()``: a tuple ``(entries, head)`` with named fields, as the
    Rust ``AuditVerification { entries, head }`` (``head`` as lowercase hex)."""

    entries: int
    head: str
