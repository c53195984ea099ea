"""What this process knows of each breaker, kept current by the event stream and by the service's answers.

State flows one way: the service sends each transition (`state`) followed by the snapshot its writer left behind
(`breaker`), and every answer to acquire or record says what it saw; nothing here asks for a breaker again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from breaker_client.protocol.models import (
    BreakerConfig,
    Decision,
    FailureSignal,
    Snapshot,
    State,
    Transition,
    WhenUnknown,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["BreakerView", "Epoch", "Views"]

Epoch = tuple[int, int]
"""(client-wide, per-breaker) counters; one moves whenever the breaker stops being known healthy (it went strict)."""

DEFAULT_CONFIG: Final = BreakerConfig()


@dataclass(frozen=True, kw_only=True)
class BreakerView:
    """One breaker as last known; `deadline` is a local monotonic time (seconds) when OPEN or a forced OPEN ends.

    `state` is the machine's own state (under a force, too); `failures` the breaker's `counts.failure` last seen,
    which successes report back as `failures_seen`.
    """

    name: str
    state: State
    forced: State | None
    generation: int
    consecutive_failures: int
    consecutive_successes: int = 0
    config: BreakerConfig = DEFAULT_CONFIG
    deadline: float | None = None
    failures: int = 0

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, now: float) -> BreakerView:
        """The view of a snapshot read at monotonic time `now`."""
        deadline = None if snapshot.retry_after_s is None else now + snapshot.retry_after_s
        return cls(
            name=snapshot.name,
            state=snapshot.machine_state,
            forced=snapshot.forced,
            generation=snapshot.generation,
            consecutive_failures=snapshot.consecutive_failures,
            consecutive_successes=snapshot.consecutive_successes,
            config=snapshot.config,
            deadline=deadline,
            failures=snapshot.counts.failure,
        )

    @property
    def effective_state(self) -> State:
        """The forced state while forced, else the breaker's own."""
        return self.forced if self.forced is not None else self.state

    @property
    def healthy(self) -> bool:
        """Known to be CLOSED with no failure in a row (or forced CLOSED)."""
        return self.forced is State.CLOSED or (
            self.forced is None and self.state is State.CLOSED and self.consecutive_failures == 0
        )

    def retry_after_s(self, now: float) -> float | None:
        """Seconds until the known deadline, if any."""
        return None if self.deadline is None else max(0.0, self.deadline - now)


class Views:
    """Per-breaker views plus the liveness of the event stream; every change wakes `wait_for`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._views: dict[str, BreakerView] = {}
        self._epochs: dict[str, int] = {}
        self._global_epoch = 0
        self._live = False
        # name -> when_unknown of the last config read: kept after the view goes (see `learnt_when_unknown`).
        self._when_unknown: dict[str, WhenUnknown] = {}
        self._changed = asyncio.Event()
        self.version = 0
        """Moves on every change: what was decided from the views stays valid while it stands still."""

    @property
    def live(self) -> bool:
        """Whether the event stream is connected and its snapshot was received."""
        return self._live

    def get(self, name: str) -> BreakerView | None:
        """The view of `name`, None while unknown."""
        return self._views.get(name)

    def learnt_when_unknown(self, name: str) -> WhenUnknown | None:
        """The `when_unknown` of the last config this process read for `name` (None: none read), kept after its
        view is gone (deleted, missing from a later snapshot): what the service said to do when in doubt."""
        return self._when_unknown.get(name)

    def names(self) -> list[str]:
        """Names of the breakers known now."""
        return sorted(self._views)

    def epoch(self, name: str) -> Epoch:
        """Changes whenever `name` may have been unhealthy since it was last read."""
        return self._global_epoch, self._epochs.get(name, 0)

    def now(self) -> float:
        """The monotonic clock the deadlines are measured on."""
        return self._clock()

    # -- updates --------------------------------------------------------------------------------------------------

    def set_live(self, live: bool) -> None:
        """The stream connected (after its snapshot) or dropped."""
        if live != self._live:
            self._live = live
            if not live:
                self._global_epoch += 1
            self._notify()

    def invalidate_all(self) -> None:
        """Every breaker must be re-earned (the client went degraded or came back)."""
        self._global_epoch += 1
        self._notify()

    def replace_all(self, snapshots: Iterable[Snapshot]) -> None:
        """The stream's first event: everything known before is replaced."""
        now = self._clock()
        fresh = {s.name: BreakerView.from_snapshot(s, now) for s in snapshots}
        self._when_unknown.update((name, view.config.when_unknown) for name, view in fresh.items())
        for name in set(self._views) - set(fresh):
            self._bump(name)
        self._views = {}
        for view in fresh.values():
            self._put(view)
        self._notify()

    def apply_snapshot(self, snapshot: Snapshot, *, from_stream: bool) -> None:
        """A `config` event (always applied) or an HTTP answer (applied unless older than what is known)."""
        known = self._views.get(snapshot.name)
        if not from_stream and known is not None and snapshot.generation < known.generation:
            return
        self._put(BreakerView.from_snapshot(snapshot, self._clock()))
        self._when_unknown[snapshot.name] = snapshot.config.when_unknown
        self._notify()

    def apply_transition(self, transition: Transition) -> bool:
        """A `state` event: the new (effective) state. The snapshot the writer left behind follows at once as a
        `breaker` event with the rest (a force, a deadline); until then no deadline is known, so an OPEN breaker
        is asked about rather than refused here. Returns whether it was news."""
        known = self._views.get(transition.name)
        if known is not None and known.generation >= transition.generation:
            return False
        base = known or BreakerView(
            name=transition.name, state=transition.to_state, forced=None, generation=0, consecutive_failures=0
        )
        self._put(
            replace(
                base,
                state=transition.to_state,
                forced=None,
                generation=transition.generation,
                consecutive_failures=0,
                consecutive_successes=0,
                deadline=None,
            )
        )
        # Whatever the new state, the machine under it is new (a reset or a force starts an unproven one): trust
        # through this breaker is earned again, as after any change that made it strict.
        self._bump(transition.name)
        self._notify()
        return True

    def apply_failures(self, signal: FailureSignal) -> None:
        """A `failures` event: the consecutive failure count left zero or returned to it."""
        known = self._views.get(signal.name)
        if known is None or signal.generation < known.generation:
            return
        self._put(replace(known, consecutive_failures=signal.consecutive_failures, generation=signal.generation))
        self._notify()

    def apply_decision(self, name: str, decision: Decision) -> None:
        """An acquire's answer: the state now, and when a denial ends."""
        known = self._views.get(name)
        if known is None or decision.generation < known.generation:
            return
        deadline = known.deadline if decision.generation == known.generation else None
        if not decision.allowed and decision.retry_after_s is not None and decision.state is State.OPEN:
            deadline = self._clock() + decision.retry_after_s
        if decision.generation > known.generation or decision.state is not known.effective_state:
            # A transition this process has not heard of yet (its events follow): only a force has no end.
            forced = State.OPEN if decision.state is State.OPEN and decision.retry_after_s is None else None
            known = replace(
                known,
                state=State.CLOSED if forced is not None else decision.state,
                forced=forced,
                consecutive_failures=0,
                consecutive_successes=0,
            )
        self._put(replace(known, generation=decision.generation, deadline=deadline))
        self._notify()

    def remove(self, name: str) -> None:
        """A `deleted` event, or a 404 from the service."""
        if self._views.pop(name, None) is not None:
            self._bump(name)
            self._notify()

    # -- waiting --------------------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once `predicate()` holds, re-checked after every change; TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    def notify(self) -> None:
        """Wake the waiters (something outside the views changed, e.g. the degraded flag)."""
        self._notify()

    def _put(self, view: BreakerView) -> None:
        known = self._views.get(view.name)
        if not view.healthy and (known is None or known.healthy):
            self._bump(view.name)  # the breaker went strict: successes seen before no longer count
        self._views[view.name] = view

    def _bump(self, name: str) -> None:
        self._epochs[name] = self._epochs.get(name, 0) + 1

    def _notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
