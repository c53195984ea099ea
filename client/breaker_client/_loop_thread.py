"""A private event loop on a daemon thread: the sync client runs the async client's machinery there."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop, running until `stop()`; `run()` a coroutine on it from any other thread and wait."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and return its result (or raise its exception) in the calling thread.

        The calling thread's context (correlation id) is copied to the coroutine, as `call_soon_threadsafe`
        copies it."""
        if threading.get_ident() == self._thread.ident:
            coroutine.close()
            # From the loop's own thread (an on_transition callback calling the client) it would wait forever.
            raise RuntimeError("the sync client cannot be called from its own background thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Schedule `callback(*args)` on the loop; from any thread."""
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """Stop the loop, wait for its thread, close it."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
