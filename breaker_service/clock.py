"""The service's one clock type: Unix time in milliseconds, injectable so tests of the memory stores never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeAlias

Clock: TypeAlias = Callable[[], int]
"""Answers Unix time in milliseconds."""


def wall_clock_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000
