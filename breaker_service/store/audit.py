"""The audit trail: one entry per admin action on a breaker (configure, delete, force-open, force-close, reset).

On Redis it is the capped stream `brk:audit` (every replica appends to it, `GET /audit` reads it newest first); the
memory store keeps the same entries in a capped deque.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from msgspec import Struct

from breaker_service.store.keys import AUDIT_MAXLEN

AUDIT_DEFAULT_LIMIT: Final = 100


class AuditEntry(Struct, frozen=True, kw_only=True):
    """One admin action: when (Unix seconds), on which breaker, what, by whom (the token's name), and why."""

    at: float
    name: str
    action: str
    actor: str | None
    reason: str | None


class AuditTrail(Struct, frozen=True, kw_only=True):
    """`GET /audit`: newest first."""

    entries: list[AuditEntry]


def entry_from_stream(entry_id: bytes, fields: dict[bytes, bytes]) -> AuditEntry:
    """A `brk:audit` stream entry; its time is the stream ID's (Redis time, milliseconds)."""
    at_ms = int(entry_id.partition(b"-")[0])

    def text(key: bytes) -> str | None:
        return fields.get(key, b"").decode() or None

    return AuditEntry(
        at=at_ms / 1000,
        name=text(b"name") or "",
        action=text(b"action") or "",
        actor=text(b"actor"),
        reason=text(b"reason"),
    )


class AuditLog:
    """The memory store's audit trail, capped like the stream."""

    def __init__(self, maxlen: int = AUDIT_MAXLEN) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=maxlen)

    def append(self, name: str, action: str, actor: str | None, reason: str | None, at: float) -> None:
        """Record one admin action."""
        self._entries.appendleft(AuditEntry(at=at, name=name, action=action, actor=actor, reason=reason))

    def newest(self, limit: int) -> list[AuditEntry]:
        """Up to `limit` entries, newest first."""
        return [entry for _, entry in zip(range(limit), self._entries, strict=False)]
