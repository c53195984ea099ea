"""Fast-path successes handed from any thread to the loop thread, which counts them into the success batcher.

A lock and a list append per success; the loop is woken once per batch (when the list was empty), not per call:
waking it costs a system call, several times the rest of the fast path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from breaker_client._admission import Admission, Ticket
    from breaker_client._loop_thread import LoopThread

__all__ = ["SuccessInbox"]


class SuccessInbox:
    """Successes waiting for the loop thread."""

    def __init__(self, loop: LoopThread, admission: Admission) -> None:
        self._loop = loop
        self._admission = admission
        self._lock = threading.Lock()
        self._items: list[tuple[Ticket, float]] = []

    def add(self, ticket: Ticket, duration_ms: float) -> None:
        """One fast-path success (any thread)."""
        with self._lock:
            items = self._items
            items.append((ticket, duration_ms))
            first = len(items) == 1
        if first:
            try:
                self._loop.call_soon(self.drain)
            except RuntimeError:  # the client closed meanwhile: nothing will send it
                return

    def drain(self) -> None:
        """Count every waiting success into the batcher (loop thread)."""
        with self._lock:
            items, self._items = self._items, []
        for ticket, duration_ms in items:
            self._admission.count_success(ticket, duration_ms)
