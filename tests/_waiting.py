"""Bounded polling for integration tests that wait on a change they can observe."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WAIT_TIMEOUT_S: Final = 20.0
POLL_INTERVAL_S: Final = 0.02


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    what: str,
    *,
    timeout_s: float = WAIT_TIMEOUT_S,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Poll an observable change, bounded: `AssertionError` naming `what` once `timeout_s` have passed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


def poll_until(
    predicate: Callable[[], bool],
    what: str,
    *,
    timeout_s: float = WAIT_TIMEOUT_S,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """`wait_until` for code without an event loop (fleet controllers, subprocess checks)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
