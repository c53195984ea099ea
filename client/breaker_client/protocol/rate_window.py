"""The rolling window of the rate mode: calls, failures and slow calls in buckets, and when their rates open a breaker.

The window is `WINDOW_BUCKETS` buckets of `window_s / WINDOW_BUCKETS` each, keyed by `now_ms // bucket_ms`, as
`lua/record.lua` keeps them; a bucket that has slid out of the window is dropped when the next call is counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from breaker_client.protocol.models import BreakerConfig, Outcome

WINDOW_BUCKETS: Final = 10


@dataclass
class WindowBucket:
    """The calls counted in one bucket of the window."""

    calls: int = 0
    failures: int = 0
    slow: int = 0


def bucket_ms(window_s: float) -> int:
    """The width of one of the window's buckets."""
    return max(1, math.floor(window_s * 1000) // WINDOW_BUCKETS)


def add_to_window(
    window: dict[int, WindowBucket], config: BreakerConfig, outcome: Outcome, failed: bool, now_ms: int
) -> dict[int, WindowBucket]:
    """The window with `outcome` counted in the current bucket (`window` itself when the rate mode is off)."""
    if config.window_s is None:
        return window
    current = now_ms // bucket_ms(config.window_s)
    window = {index: b for index, b in window.items() if index > current - WINDOW_BUCKETS}
    bucket = window.setdefault(current, WindowBucket())
    bucket.calls += outcome.count
    if failed:
        bucket.failures += outcome.count
    slow_call_ms = config.slow_call_ms
    if slow_call_ms is not None and outcome.duration_ms is not None and outcome.duration_ms >= slow_call_ms:
        bucket.slow += outcome.count
    return window


def rate_exceeded(config: BreakerConfig, window: dict[int, WindowBucket]) -> str | None:
    """Why the window's rates open the breaker (the transition's reason), or None while they stay below."""
    if config.window_s is None or config.min_calls is None:
        return None
    calls = sum(b.calls for b in window.values())
    if calls < config.min_calls:
        return None
    if config.failure_rate is not None and sum(b.failures for b in window.values()) >= config.failure_rate * calls:
        return "failure rate exceeded"
    if config.slow_call_rate is not None and sum(b.slow for b in window.values()) >= config.slow_call_rate * calls:
        return "slow call rate exceeded"
    return None
