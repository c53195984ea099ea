"""What one breaker's machine holds, and the one choke point through which its state changes.

`MachineState` is the data of `machine.BreakerMachine` (which adds the operations) with the rules every operation
shares: `_transition` (bumps the generation and clears the runtime counters, as `transition()` in the Lua scripts),
lifting a force, the open time with its backoff, and the view the API shows. Time is passed in (`now_ms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeAlias

from breaker_client.protocol.models import (
    BreakerConfig,
    Counts,
    FailureSignal,
    Force,
    Snapshot,
    State,
    Transition,
)
from breaker_client.protocol.rate_window import WindowBucket  # noqa: TC001 (a field type: resolvable at runtime)

Event: TypeAlias = Transition | FailureSignal


@dataclass
class MachineState:
    """One breaker's config, state, permits and rate window."""

    name: str
    config: BreakerConfig
    state: State = State.CLOSED
    forced: State | None = None
    forced_until_ms: int = 0
    forced_actor: str | None = None
    forced_reason: str = ""
    generation: int = 1
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    opened_at_ms: int = 0
    open_until_ms: int = 0
    open_streak: int = 0
    proven: bool = False
    success: int = 0
    failure: int = 0
    rejected: int = 0
    permit_seq: int = 0
    half_open_used: int = 0
    permits: dict[str, int] = field(default_factory=dict)
    window: dict[int, WindowBucket] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)
    """report_id -> when it may be forgotten (ms)."""

    @property
    def effective_state(self) -> State:
        """The forced state while forced, else the machine's own."""
        return self.forced if self.forced is not None else self.state

    # -- the one choke point ------------------------------------------------------------------------------------

    def _transition(self, to: State, reason: str, actor: str | None, now_ms: int, events: list[Event]) -> None:
        before = self.state
        self._clear_runtime()
        self.state = to
        if to is State.OPEN:
            self.opened_at_ms = now_ms
            self.open_until_ms = now_ms + self._open_timeout_ms()
        elif to is State.CLOSED:
            self.opened_at_ms = 0
            self.proven = True  # success_threshold probes succeeded
        self._audit(before, to, reason, actor, now_ms, events)

    def _audit(
        self, before: State, to: State, reason: str, actor: str | None, now_ms: int, events: list[Event]
    ) -> None:
        self.generation += 1
        events.append(
            Transition(
                name=self.name,
                from_state=before,
                to_state=to,
                at=now_ms / 1000,
                reason=reason,
                actor=actor,
                generation=self.generation,
            )
        )

    def _lift_force(self) -> None:
        self.forced = None
        self.forced_until_ms = 0
        self.forced_actor = None
        self.forced_reason = ""

    def _clear_runtime(self) -> None:
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.half_open_used = 0
        self.permits.clear()
        self.window.clear()
        self.open_until_ms = 0

    def _become_fresh_closed(self) -> None:
        self._clear_runtime()
        self.state = State.CLOSED
        self.opened_at_ms = 0
        self.open_streak = 0
        self.proven = False

    def _lift_expired_force(self, now_ms: int, events: list[Event]) -> None:
        if self.forced is None or self.forced_until_ms == 0 or now_ms < self.forced_until_ms:
            return
        before = self.forced
        self._become_fresh_closed()
        self._lift_force()
        self._audit(before, State.CLOSED, "force expired", None, now_ms, events)

    # -- times and the view -------------------------------------------------------------------------------------

    def _open_timeout_ms(self) -> int:
        cfg = self.config
        try:
            backoff: float = cfg.open_backoff**self.open_streak
        except OverflowError:  # Lua's float arithmetic gives inf here, which the cap below turns into the max
            backoff = math.inf
        seconds = min(cfg.open_timeout_s * backoff, cfg.max_open_timeout_s)
        return math.floor(seconds * 1000)

    def _forced_retry_after_ms(self, now_ms: int) -> int | None:
        return self.forced_until_ms - now_ms if self.forced_until_ms else None

    def view(self, now_ms: int) -> Snapshot:
        """The breaker as of `now_ms`, lifting nothing (call after an operation that already did)."""
        retry_after_ms: int | None = None
        if self.forced is State.OPEN:
            retry_after_ms = self._forced_retry_after_ms(now_ms)
        elif self.forced is None and self.state is State.OPEN:
            retry_after_ms = self.open_until_ms - now_ms
        force = None
        if self.forced is not None:
            until = self.forced_until_ms / 1000 if self.forced_until_ms else None
            force = Force(mode=self.forced, until=until, actor=self.forced_actor, reason=self.forced_reason)
        return Snapshot(
            name=self.name,
            state=self.effective_state,
            machine_state=self.state,
            forced=self.forced,
            force=force,
            generation=self.generation,
            consecutive_failures=self.consecutive_failures,
            consecutive_successes=self.consecutive_successes,
            opened_at=self.opened_at_ms / 1000 if self.opened_at_ms else None,
            retry_after_s=None if retry_after_ms is None else max(0, retry_after_ms) / 1000,
            config=self.config,
            counts=Counts(success=self.success, failure=self.failure, rejected=self.rejected),
        )
