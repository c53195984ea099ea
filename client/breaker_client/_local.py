"""Local breakers: the reference machine per breaker, used while the service cannot be reached.

A breaker this process has a view of runs a machine seeded from that view. A breaker it has no view of (it cannot
know its shared state) follows its `when_unknown`, the protocol's rule (`refusal_when_unknown`): "allow" runs a
fresh machine with the default config, "deny" refuses the call as an OPEN breaker would, and no machine is made.
The `when_unknown` that applies is the first known of:

1. the one learnt from the service: the last config this process read for the breaker (it outlives the view, so
   a breaker deleted or missing from a later snapshot keeps it);
2. the one the application declared where it made the breaker, `client.breaker(name, when_unknown=...)`;
3. the client's default, `BreakerClient(when_unknown=...)`, "allow" unless told.

A refusal is logged (`breaker.unknown_denied`, WARNING) once per breaker per outage: every call is refused alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from breaker_client._correlation import current_correlation_id
from breaker_client._logging import get_logger
from breaker_client.protocol.machine import BreakerMachine, Event, refusal_when_unknown
from breaker_client.protocol.models import BreakerConfig, Decision, Outcome, State, Transition, WhenUnknown

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaker_client._views import BreakerView

__all__ = ["LocalBreakers", "checked_when_unknown"]

_log = get_logger()


def checked_when_unknown(value: object) -> WhenUnknown:
    """`value` when it is "allow" or "deny"; TypeError or ValueError otherwise (a typo must not quietly allow)."""
    if not isinstance(value, str):
        raise TypeError(f"when_unknown must be 'allow' or 'deny', not {type(value).__name__} {value!r}")
    if value == "allow":
        return "allow"
    if value == "deny":
        return "deny"
    raise ValueError(f"when_unknown must be 'allow' or 'deny', not {value!r}")


class LocalBreakers:
    """One `BreakerMachine` per breaker, seeded from the last known view, or, for a breaker never seen, from the
    default config when its `when_unknown` allows. `unknown_retry_after_s` is what a "deny" refusal says."""

    def __init__(
        self,
        default_config: BreakerConfig,
        clock_ms: Callable[[], int],
        *,
        when_unknown: WhenUnknown = "allow",
        unknown_retry_after_s: float | None = None,
    ) -> None:
        self._default_config = default_config
        self._clock_ms = clock_ms
        self._when_unknown = when_unknown
        self._unknown_retry_after_s = unknown_retry_after_s
        self._machines: dict[str, BreakerMachine] = {}
        self._denied_unknown: set[str] = set()
        """Breakers whose refusal was logged in this outage."""
        self.listener: Callable[[str, State, State], None] | None = None
        """Told of every local transition: (name, from, to)."""

    def acquire(
        self,
        name: str,
        view: BreakerView | None,
        now_s: float,
        *,
        learnt: WhenUnknown | None = None,
        declared: WhenUnknown | None = None,
    ) -> Decision:
        """Ask the local machine; `now_s` is the views' clock, to carry a known deadline over. Without a view,
        `when_unknown` decides first: `learnt` from the service, else `declared` by the application, else the
        client's default."""
        if view is None:
            refusal = self._refusal_when_unknown(name, learnt, declared)
            if refusal is not None:
                return refusal
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
        self._denied_unknown.clear()

    def _refusal_when_unknown(
        self, name: str, learnt: WhenUnknown | None, declared: WhenUnknown | None
    ) -> Decision | None:
        if learnt is not None:
            when_unknown, source = learnt, "service config"
        elif declared is not None:
            when_unknown, source = declared, "declared"
        else:
            when_unknown, source = self._when_unknown, "client default"
        refusal = refusal_when_unknown(when_unknown, self._unknown_retry_after_s)
        if refusal is not None and name not in self._denied_unknown:
            self._denied_unknown.add(name)
            _log.warning(
                "breaker.unknown_denied",
                breaker=name,
                when_unknown=when_unknown,
                source=source,
                correlation_id=current_correlation_id(),
            )
        return refusal

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
