"""The seed's fallbacks that keep state: a cache of last good answers, the Supabase write buffer, the review log."""

from __future__ import annotations

import collections
from typing import Any, Final

import structlog

__all__ = ["LastGood", "ReviewLog", "WriteBuffer", "template_reply"]

_log = structlog.get_logger("orchestrator")

REVIEW_LOG_SIZE: Final = 1000

_TEMPLATES: Final = {
    "plan": "Thanks for your message. A manager will contact you about a payment plan within one business day.",
    "paid": "Thanks for letting us know. We will confirm your payment as soon as it is recorded.",
}
_DEFAULT_TEMPLATE: Final = "Thanks for your message. A manager will get back to you within one business day."


def template_reply(text: str) -> str:
    """The seed's OpenAI fallback: a template chosen by keyword."""
    lowered = text.lower()
    return next((reply for keyword, reply in _TEMPLATES.items() if keyword in lowered), _DEFAULT_TEMPLATE)


class LastGood:
    """The last good answer per key: Collections Monitor's tenants, Supabase's conversations (local caching)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self._values[key] = value

    def get(self, key: str) -> Any | None:
        return self._values.get(key)


class WriteBuffer:
    """Supabase writes that could not be made, kept in order to be written later in batches."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)

    def take(self, limit: int) -> list[dict[str, Any]]:
        """The oldest `limit` rows, removed; give them back with `restore` if the write fails."""
        batch, self._rows = self._rows[:limit], self._rows[limit:]
        return batch

    def restore(self, rows: list[dict[str, Any]]) -> None:
        self._rows[:0] = rows


class ReviewLog:
    """The seed's Notification Service fallback: notifications logged for a manager to review by hand."""

    def __init__(self) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=REVIEW_LOG_SIZE)

    def add(self, notification: dict[str, Any]) -> None:
        self.entries.append(notification)
        _log.warning("notification.for_manual_review", **notification)
