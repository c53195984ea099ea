"""Per-attempt timeouts that cost a set insertion each, instead of a loop timer per call.

`asyncio.timeout` schedules (and cancels) one timer per use: about 4 us, more than the rest of the fast path.
Attempts whose deadlines fall in the same `RESOLUTION_S` slot share one timer here; when it fires it cancels the
attempts of that slot still running, and each turns its cancellation into `TimeoutError` the way
`asyncio.timeout` does. A timeout therefore fires up to `RESOLUTION_S` late, never early.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Deadlines"]

RESOLUTION_S: Final = 0.02


class Deadlines:
    """The timer slots of one event loop."""

    def __init__(self) -> None:
        self._slots: dict[int, set[_Deadline]] = {}

    def limit(self, timeout_s: float | None) -> _Deadline:
        """`with deadlines.limit(30.0):` cancels the current task's block after `timeout_s` with `TimeoutError`;
        `None` sets no limit."""
        return _Deadline(self, timeout_s)

    def _join(self, deadline: _Deadline, loop: asyncio.AbstractEventLoop, timeout_s: float) -> int:
        slot = math.ceil((loop.time() + timeout_s) / RESOLUTION_S)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            loop.call_at(slot * RESOLUTION_S, self._expire, slot)
        members.add(deadline)
        return slot

    def _leave(self, deadline: _Deadline, slot: int) -> None:
        members = self._slots.get(slot)
        if members is not None:
            members.discard(deadline)

    def _expire(self, slot: int) -> None:
        for deadline in self._slots.pop(slot, ()):
            deadline.expire()


class _Deadline:
    __slots__ = ("_cancelling", "_deadlines", "_expired", "_slot", "_task", "_timeout_s")

    def __init__(self, deadlines: Deadlines, timeout_s: float | None) -> None:
        self._deadlines = deadlines
        self._timeout_s = timeout_s
        self._expired = False
        self._slot: int | None = None

    def __enter__(self) -> None:
        if self._timeout_s is None:
            return
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        self._slot = self._deadlines._join(self, task.get_loop(), self._timeout_s)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._slot is None:
            return
        self._deadlines._leave(self, self._slot)
        # As asyncio.timeout: only a cancellation this deadline caused, and no other pending, becomes a timeout.
        if self._expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()
