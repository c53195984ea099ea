"""A millisecond clock that moves only when a test moves it (the memory store's `clock`)."""

from __future__ import annotations

import math
from typing import Final

T0_MS: Final = 1_700_000_000_000


class ManualClock:
    """Unix milliseconds, starting at `start_ms`."""

    def __init__(self, start_ms: int = T0_MS) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        """Move `seconds` on."""
        self.now_ms += math.ceil(seconds * 1000)
