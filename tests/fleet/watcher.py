"""A watcher process for the propagation benchmark: one `BreakerClient` following `/events`, reporting each change
of what it knows of one breaker (generation, force) with the monotonic time it learned it (system-wide on Linux, so
the controller can compare it with its own)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from breaker_client import BreakerClient

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["Seen", "watcher_main"]

Seen = tuple[float, int, str | None]
"""(monotonic time, generation, forced state or None) of one change the watcher saw."""
POLL_S = 0.2
READY_TIMEOUT_S = 30.0


def watcher_main(conn: Connection, service_url: str, token: str | None, name: str) -> None:
    """Sends "ready" once the stream is live and the breaker known, then a `Seen` per change, until told to stop."""
    try:
        asyncio.run(_watch(conn, service_url, token, name))
    finally:
        conn.close()


async def _watch(conn: Connection, service_url: str, token: str | None, name: str) -> None:
    async with BreakerClient(service_url, token=token) as client:

        def known(c: BreakerClient) -> tuple[int, str | None] | None:
            view = c.view(name)
            return None if view is None else (view.generation, None if view.forced is None else view.forced.value)

        await client.wait_for(lambda c: c.live and known(c) is not None, timeout_s=READY_TIMEOUT_S)
        conn.send("ready")
        last = known(client)
        while True:
            try:
                await client.wait_for(lambda c, seen=last: known(c) != seen, timeout_s=POLL_S)  # type: ignore[misc]
            except TimeoutError:
                if conn.poll():
                    return
                continue
            now = time.monotonic()
            last = known(client)
            if last is not None:
                conn.send((now, *last))
