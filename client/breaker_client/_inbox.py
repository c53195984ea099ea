"""Fast-path successes handed from any thread to the loop thread, which counts them into the success batcher.

One deque append per success; the loop is woken once per batch, not per call: waking it costs a system call,
several times the rest of the fast path.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from breaker_client._admission import Admission, Ticket
    from breaker_client._loop_thread import LoopThread

__all__ = ["SuccessInbox"]


class SuccessInbox:
    """Successes waiting for the loop thread. Lock-free: `deque.append` and `popleft` are atomic, and `drain`
    clears the wake flag before it empties the deque, so an append it misses has seen the flag cleared and wakes
    the loop again (at worst one drain too many, never a success left behind)."""

    def __init__(self, loop: LoopThread, admission: Admission) -> None:
        self._loop = loop
        self._admission = admission
        self._items: deque[tuple[Ticket, float]] = deque()
        self._woken = False

    def add(self, ticket: Ticket, duration_ms: float) -> None:
        """One fast-path success (any thread)."""
        self._items.append((ticket, duration_ms))
        if not self._woken:
            self._woken = True
            try:
                self._loop.call_soon(self.drain)
            except RuntimeError:  # the client closed meanwhile: nothing will send it
                return

    def drain(self) -> None:
        """Count every waiting success into the batcher (loop thread)."""
        self._woken = False
        items, count = self._items, self._admission.count_success
        while items:
            ticket, duration_ms = items.popleft()
            count(ticket, duration_ms)
