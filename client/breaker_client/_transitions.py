"""`on_transition` callbacks: the state changes this process sees, from the service (stream, answers) or from its
own local breakers while the service is away.

Changes are found by comparing each breaker's effective state after every change of knowledge, so a callback
sees what this process learned, in order, at most once per change (two changes learned at once show as one).
A callback may be sync or async; one that raises is logged and the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from breaker_client._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from breaker_client._views import Views
    from breaker_client.protocol.models import State

__all__ = ["StateChange", "TransitionWatch"]

_log = get_logger()
_IDLE_S: Final = 3600.0


@dataclass(frozen=True, kw_only=True)
class StateChange:
    """A breaker's effective state changed; `local` when this process's local breaker decided it (degraded)."""

    name: str
    from_state: State
    to_state: State
    local: bool = False


class TransitionWatch:
    """Runs the callbacks on the client's event loop."""

    def __init__(self, views: Views) -> None:
        self._views = views
        self._callbacks: list[Callable[[StateChange], object]] = []
        self._known: dict[str, State] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._started = False

    def add(self, callback: Callable[[StateChange], object]) -> None:
        """Call `callback(change)` for every change from now on (must run on the client's loop once started)."""
        self._callbacks.append(callback)
        if self._started:
            self._ensure_task()

    def start(self) -> None:
        """Start watching (only while some callback is registered)."""
        self._started = True
        if self._callbacks:
            self._ensure_task()

    async def stop(self) -> None:
        """Stop watching; callbacks under way finish."""
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def local(self, name: str, from_state: State, to_state: State) -> None:
        """A transition of the local breaker (the service is away)."""
        if self._callbacks:
            self._emit(StateChange(name=name, from_state=from_state, to_state=to_state, local=True))

    def _ensure_task(self) -> None:
        if self._task is None:
            self._remember()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="breaker-client-transitions")

    async def _run(self) -> None:
        views = self._views
        while True:
            seen = views.version
            with contextlib.suppress(TimeoutError):
                await views.wait_for(functools.partial(_moved, views, seen), _IDLE_S)
            self._compare()

    def _remember(self) -> None:
        self._known = {name: view.effective_state for name in self._views.names() if (view := self._views.get(name))}

    def _compare(self) -> None:
        before, self._known = self._known, {}
        for name in self._views.names():
            view = self._views.get(name)
            if view is None:
                continue
            state = self._known[name] = view.effective_state
            old = before.get(name)
            if old is not None and old is not state:
                self._emit(StateChange(name=name, from_state=old, to_state=state))

    def _emit(self, change: StateChange) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(change)
            except Exception as exc:
                _log.exception("breaker.on_transition_failed", breaker=change.name, error=repr(exc))
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._guard(result, change))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    @staticmethod
    async def _guard(result: Awaitable[object], change: StateChange) -> None:
        try:
            await result
        except Exception as exc:
            _log.exception("breaker.on_transition_failed", breaker=change.name, error=repr(exc))


def _moved(views: Views, seen: int) -> bool:
    return views.version != seen
