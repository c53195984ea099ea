"""Local breakers: the reference machine per breaker, used while the service cannot be reached."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from breaker_client._correlation import current_correlation_id
from breaker_client._logging import get_logger
from breaker_client.protocol.machine import BreakerMachine, Event
from breaker_client.protocol.models import BreakerConfig, Decision, Outcome, State, Transition

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaker_client._views import BreakerView

__all__ = ["LocalBreakers"]

_log = get_logger()


class LocalBreakers:
    """One `BreakerMachine` per breaker, seeded from the last known view (or the default config when never seen)."""

    def __init__(self, default_config: BreakerConfig, clock_ms: Callable[[], int]) -> None:
        self._default_config = default_config
        self._clock_ms = clock_ms
        self._machines: dict[str, BreakerMachine] = {}
        self.listener: Callable[[str, State, State], None] | None = None
        """Told of every local transition: (name, from, to)."""

    def acquire(self, name: str, view: BreakerView | None, now_s: float) -> Decision:
        """Ask the local machine; `now_s` is the views' clock, to carry a known deadline over."""
        now_ms = self._clock_ms()
        machine = self._machines.get(name) or self._seed(name, view, now_s, now_ms)
        decision, events = machine.acquire(now_ms, lease=True)  # as the client asks the service: leases
        self._log(events)
        return decision

    def record(self, name: str, outcome: Outcome, view: BreakerView | None, now_s: float) -> None:
        """Report an outcome to the local machine."""
        now_ms = self._clock_ms()
        machine = self._machines.get(name) or self._seed(name, view, now_s, now_ms)
        self._log(machine.record(outcome, now_ms))

    def clear(self) -> None:
        """Forget every local machine (the service answers again)."""
        self._machines.clear()

    def _seed(self, name: str, view: BreakerView | None, now_s: float, now_ms: int) -> BreakerMachine:
        if view is None:
            machine = BreakerMachine(name=name, config=self._default_config)
        else:
            machine = BreakerMachine(
                name=name,
                config=view.config,
                state=view.state,
                forced=view.forced,
                generation=view.generation,
                consecutive_failures=view.consecutive_failures,
                consecutive_successes=view.consecutive_successes,
            )
            left = view.retry_after_s(now_s)
            left_ms = None if left is None else math.ceil(left * 1000)
            if view.forced is State.OPEN and left_ms is not None:
                machine.forced_until_ms = now_ms + left_ms
            if view.state is State.OPEN:
                machine.opened_at_ms = now_ms
                if left_ms is None:
                    left_ms = math.floor(view.config.open_timeout_s * 1000)
                machine.open_until_ms = now_ms + left_ms
        self._machines[name] = machine
        return machine

    def _log(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Transition):
                _log.warning(
                    "breaker.transition",
                    breaker=event.name,
                    from_state=str(event.from_state),
                    to_state=str(event.to_state),
                    reason=event.reason,
                    local=True,
                    correlation_id=current_correlation_id(),
                )
                if self.listener is not None:
                    self.listener(event.name, event.from_state, event.to_state)
