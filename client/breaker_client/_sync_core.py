"""One process's half of a `SyncBreakerClient`: an async `BreakerClient` on a private loop thread.

The sync client decides with the async client's own admission, views and local breakers (one decision logic
for both); only the fast path runs in the caller's thread: it reads what the loop thread wrote and leaves its
successes in the inbox, which the loop collects on its flush tick. Everything else (acquire, record, the event
stream) runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from breaker_client._client import BreakerClient
from breaker_client._inbox import SuccessInbox
from breaker_client._loop_thread import LoopThread

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from breaker_client._admission import Ticket
    from breaker_client._transitions import StateChange
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["SyncCore"]


class SyncCore:
    """The loop thread, the async client on it, and the inbox of fast-path successes."""

    def __init__(self, bases: Sequence[str], options: dict[str, Any]) -> None:
        self.loop = LoopThread("breaker-client-loop")
        self.client = BreakerClient(bases, **options)
        # Package-internal: the sync client shares the async client's decision logic, not a copy of it.
        self.admission = self.client._admission
        self.views = self.client._views
        self.inbox = SuccessInbox(self.admission, interval_s=options.get("flush_interval_s", 0.1))
        self._collector: asyncio.Task[None] | None = None
        self.loop.run(self._start())

    async def _start(self) -> None:
        self.client.start()
        self._collector = asyncio.create_task(self.inbox.run(), name="breaker-client-inbox")

    def admit(self, name: str, when_unknown: WhenUnknown | None = None) -> Ticket:
        """A ticket from the strict path (or `CircuitOpenError`), decided on the loop."""
        return self.loop.run(self.admission.admit(name, when_unknown))

    def report(self, ticket: Ticket, *, failed: bool, duration_ms: float) -> None:
        """Report an outcome (never raises); successes counted before it go first."""
        self.loop.run(self._report(ticket, failed, duration_ms))

    async def _report(self, ticket: Ticket, failed: bool, duration_ms: float) -> None:
        self.inbox.drain()
        await self.admission.report(ticket, failed=failed, duration_ms=duration_ms)

    def flush(self) -> None:
        """Send the successes counted so far."""
        self.loop.run(self._flush())

    async def _flush(self) -> None:
        self.inbox.drain()
        await self.client.flush()

    def on_transition(self, callback: Callable[[StateChange], object]) -> None:
        """Register on the loop (the watch starts a task there)."""
        self.loop.run(self._on_transition(callback))

    async def _on_transition(self, callback: Callable[[StateChange], object]) -> None:
        self.client.on_transition(callback)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Block until `predicate()` (evaluated on the loop) holds after some change, or TimeoutError."""
        self.loop.run(self.client.wait_for(lambda _: predicate(), timeout_s=timeout_s))

    def close(self) -> None:
        """Send pending successes, stop the client and the loop thread."""
        try:
            self.loop.run(self._close())
        finally:
            self.loop.stop()

    async def _close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        self.inbox.drain()
        await self.client.aclose()
