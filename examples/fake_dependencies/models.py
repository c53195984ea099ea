"""The fakes' admin wire format, shared by the server and the demo that drives it."""

from __future__ import annotations

import enum
from typing import Final

import msgspec

__all__ = ["DEPENDENCIES", "DependencyStats", "Mode", "ModeChange", "Stats"]

DEPENDENCIES: Final = ("collections_monitor", "sms_agent", "notification_service", "supabase", "openai")
"""The seed's five dependencies, in the order the seed names them."""


class Mode(enum.StrEnum):
    """How a fake dependency answers."""

    HEALTHY = "healthy"  # 200 with a plausible body
    FAILING = "failing"  # 503 at once
    SLOW = "slow"  # 200 after `slow_s`: longer than the caller's timeout, so the caller gives up
    RATE_LIMITED = "rate_limited"  # 429 with `Retry-After: retry_after_s`


class ModeChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /_admin/{dependency}/mode`."""

    mode: Mode
    slow_s: float = 5.0
    retry_after_s: float = 1.0


class DependencyStats(msgspec.Struct, frozen=True):
    """One dependency's hits (health checks are not hits), by the mode they met."""

    mode: Mode
    hits: int
    by_mode: dict[str, int]
    without_correlation_id: int
    correlation_ids: list[str]
    """Every distinct `X-Correlation-ID` a hit carried."""
    delivered: list[str]
    """sms_agent: the `message_id` of every message it accepted (200), in order, repeats included."""
    rows_written: int
    """supabase: rows it accepted (200)."""


class Stats(msgspec.Struct, frozen=True):
    """`GET /_admin/stats`."""

    dependencies: dict[str, DependencyStats]
