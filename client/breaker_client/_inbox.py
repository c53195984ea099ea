"""Fast-path successes handed from any thread to the loop thread, which counts them into the success batcher.

One deque append per success, and nothing else: the loop thread collects them on its own tick (every flush
interval), and before anything that must follow them (a failure's report, a flush, closing). Waking the loop per
success, or even per batch, costs a system call and a GIL handover that the caller would feel.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from breaker_client._admission import Admission, Ticket

__all__ = ["SuccessInbox"]


class SuccessInbox:
    """Successes waiting for the loop thread (`deque.append` and `popleft` are atomic: no lock)."""

    def __init__(self, admission: Admission, *, interval_s: float) -> None:
        self._admission = admission
        self._interval_s = interval_s
        self._items: deque[tuple[Ticket, float]] = deque()

    def add(self, ticket: Ticket, duration_ms: float) -> None:
        """One fast-path success (any thread)."""
        self._items.append((ticket, duration_ms))

    def drain(self) -> None:
        """Count every waiting success into the batcher (loop thread)."""
        items, count = self._items, self._admission.count_success
        while items:
            ticket, duration_ms = items.popleft()
            count(ticket, duration_ms)

    async def run(self) -> None:
        """Drain on every tick (loop thread), until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.drain()
