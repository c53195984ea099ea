"""Plain successes and local refusals, counted and sent as one outcome with `count`, every 100 ms at most.

Successes are counted per (breaker, generation, failures seen, slow): each batch says what its calls knew when they
were admitted (`failures_seen`), so a batch that arrives after failures it did not see does not end their streak.
Refusals (calls this process refused without asking, the breaker being known OPEN) go as `rejected` outcomes.
Every batch carries its own `report_id`, sent again unchanged if the request is retried, so it counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from breaker_client.protocol.models import Outcome

__all__ = ["SuccessBatcher", "new_report_id"]

Send = Callable[[str, Outcome], Awaitable[None]]
REPORT_ID_BYTES = 12


def new_report_id() -> str:
    """96 random bits, URL-safe (16 characters of `[A-Za-z0-9_-]`)."""
    return secrets.token_urlsafe(REPORT_ID_BYTES)


@dataclass
class _Tally:
    count: int = 0
    max_duration_ms: float = 0.0


class SuccessBatcher:
    """Slow and fast successes are kept apart, so a batch's `duration_ms` (its slowest call) counts them right."""

    def __init__(self, send: Send, *, interval_s: float) -> None:
        self._send = send
        self._interval_s = interval_s
        self._pending: dict[tuple[str, int, int | None, bool], _Tally] = {}
        self._rejected: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None

    def add(self, name: str, generation: int, duration_ms: float, *, slow: bool, failures_seen: int | None) -> None:
        """Count one success; it goes out with the next flush."""
        tally = self._pending.setdefault((name, generation, failures_seen, slow), _Tally())
        tally.count += 1
        tally.max_duration_ms = max(tally.max_duration_ms, duration_ms)
        self._wake.set()

    def add_rejected(self, name: str) -> None:
        """Count one call refused here; it goes out with the next flush."""
        self._rejected[name] = self._rejected.get(name, 0) + 1
        self._wake.set()

    def start(self) -> None:
        """Flush in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="breaker-client-flusher")

    async def flush(self) -> None:
        """Send everything counted so far (the sender never raises)."""
        pending, self._pending = self._pending, {}
        rejected, self._rejected = self._rejected, {}
        self._wake.clear()
        outcomes = [
            (
                name,
                Outcome(
                    outcome="success",
                    count=tally.count,
                    duration_ms=tally.max_duration_ms,
                    generation=generation,
                    failures_seen=failures_seen,
                    report_id=new_report_id(),
                ),
            )
            for (name, generation, failures_seen, _), tally in pending.items()
        ]
        outcomes += [
            (name, Outcome(outcome="rejected", count=count, report_id=new_report_id()))
            for name, count in rejected.items()
        ]
        await asyncio.gather(*(self._send(name, outcome) for name, outcome in outcomes))

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
