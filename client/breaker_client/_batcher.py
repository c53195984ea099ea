"""Plain successes, counted per (breaker, generation) and sent as one outcome with `count`, every 100 ms at most."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from breaker_client.protocol.models import Outcome

__all__ = ["SuccessBatcher"]

Send = Callable[[str, Outcome], Awaitable[None]]


@dataclass
class _Tally:
    count: int = 0
    max_duration_ms: float = 0.0


class SuccessBatcher:
    """Slow and fast successes are kept apart, so a batch's `duration_ms` (its slowest call) counts them right."""

    def __init__(self, send: Send, *, interval_s: float) -> None:
        self._send = send
        self._interval_s = interval_s
        self._pending: dict[tuple[str, int, bool], _Tally] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None

    def add(self, name: str, generation: int, duration_ms: float, *, slow: bool) -> None:
        """Count one success; it goes out with the next flush."""
        tally = self._pending.setdefault((name, generation, slow), _Tally())
        tally.count += 1
        tally.max_duration_ms = max(tally.max_duration_ms, duration_ms)
        self._wake.set()

    def start(self) -> None:
        """Flush in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="breaker-client-flusher")

    async def flush(self) -> None:
        """Send everything counted so far (the sender never raises)."""
        pending, self._pending = self._pending, {}
        self._wake.clear()
        await asyncio.gather(
            *(
                self._send(name, Outcome(outcome="success", count=t.count, duration_ms=t.max_duration_ms, generation=g))
                for (name, g, _), t in pending.items()
            )
        )

    async def drain(self) -> None:
        """Send everything counted so far, after any send under way: those successes reach the service before
        whatever the caller sends next (a failure must not be followed by older successes that reset its count)."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
        await self.flush()

    async def aclose(self) -> None:
        """Stop the background flusher and send what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:
            await self._inflight
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._interval_s)
            # Shielded: closing the client must not cut a batch that is on its way.
            self._inflight = asyncio.ensure_future(self.flush())
            await asyncio.shield(self._inflight)
