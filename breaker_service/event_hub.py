"""One subscription to the store's events per replica, fanned out to every listener in the process.

A Redis subscription holds a connection from the pool the scripts also use; one per `/events` stream would let a
few hundred orchestrator replicas exhaust the pool and stall acquire and record. The hub subscribes once and hands
each event to every listener's queue. It only passes on what the writers published: after a transition the script
(or the memory store) that made it publishes the snapshot it left behind as a `breaker` event, so nothing here
reads a breaker back. A listener that falls more than `backlog` events behind is cut off (it gets `None` and
should end: an SSE client reconnects and takes a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from breaker_service.events import StoreEvent
    from breaker_service.store.breaker_base import BreakerStore

BACKLOG: Final = 10_000
RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 5.0

Listener = asyncio.Queue["StoreEvent | None"]

log = structlog.get_logger("breaker_service.events")


class EventHub:
    """Fans the store's event feed out to in-process listeners."""

    def __init__(self, *, backlog: int = BACKLOG) -> None:
        self._backlog = backlog
        self._listeners: set[Listener] = set()
        self.live = asyncio.Event()
        """Set once the store's subscription is live: a snapshot read after it misses no change."""

    @contextlib.asynccontextmanager
    async def running(self, store: BreakerStore) -> AsyncIterator[None]:
        """Feed the listeners from `store` for the body of the block."""
        task = asyncio.create_task(self._feed(store), name="event-hub")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def listening(self) -> Iterator[Listener]:
        """A queue of every event from now on; `None` means the feed ended for this listener."""
        listener: Listener = asyncio.Queue()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    async def _feed(self, store: BreakerStore) -> None:
        delay_s = RETRY_MIN_S
        while True:
            try:
                async for event in store.events(self.live):
                    delay_s = RETRY_MIN_S
                    self._hand_out(event)
                return  # the store closed its feed
            except Exception as exc:
                # Events may have been missed: listeners end (SSE clients reconnect for a fresh snapshot).
                log.error("event feed failed; subscribing again", error=repr(exc), retry_in_s=delay_s)
            finally:
                self.live.clear()
                self._cut_off_all()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, RETRY_MAX_S)

    def _hand_out(self, event: StoreEvent) -> None:
        for listener in list(self._listeners):
            if listener.qsize() >= self._backlog:
                log.warning("event listener cut off: it fell behind", backlog=self._backlog)
                self._listeners.discard(listener)
                listener.put_nowait(None)
            else:
                listener.put_nowait(event)

    def _cut_off_all(self) -> None:
        for listener in self._listeners:
            listener.put_nowait(None)
        self._listeners.clear()
