"""The breaker state machine in pure Python, mirroring the Lua scripts.

The Lua scripts in `breaker_service/lua/` are the authority; this machine mirrors them rule for rule for the memory
store and the client's local fallback, and the differential test (tests/test_differential.py) holds the two
together on random sequences (docs/semantics.md). Time is passed in (`now_ms`), so nothing here reads a clock or
sleeps.

`BreakerMachine` holds the operations (acquire, record, force, reset, snapshot) and the rules they follow; its
parts live beside it, one concept each, and are importable from here too:

- `machine_state`: what a machine holds, and the one choke point its state changes through (`_transition`);
- `rate_window`: the rolling window of the rate mode;
- `permits`: probe and lease permits and their expiry;
- `report_ids`: counting a reported outcome once;
- `when_unknown`: the rule for a breaker whose shared state cannot be known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from breaker_client.protocol.machine_state import Event, MachineState
from breaker_client.protocol.models import Decision, FailureSignal, Outcome, Snapshot, State
from breaker_client.protocol.permits import PERMIT_BYTES, drop_expired_permits, first_permit_expiry_ms, new_permit
from breaker_client.protocol.rate_window import WINDOW_BUCKETS, add_to_window, rate_exceeded
from breaker_client.protocol.report_ids import REPORT_MIN_TTL_MS, already_counted
from breaker_client.protocol.when_unknown import refusal_when_unknown

__all__ = [
    "PERMIT_BYTES",
    "REPORT_MIN_TTL_MS",
    "WINDOW_BUCKETS",
    "BreakerMachine",
    "Event",
    "new_permit",
    "refusal_when_unknown",
]


@dataclass
class BreakerMachine(MachineState):
    """One breaker: its config, state, permits and rate window."""

    # -- operations -------------------------------------------------------------------------------------------

    def acquire(self, now_ms: int, *, lease: bool = False, permit: str | None = None) -> tuple[Decision, list[Event]]:
        """Ask to make one call now; `lease` opts into fleet budgeting; `permit` is the id to grant (default: new)."""
        permit_id = permit if permit is not None else new_permit()
        events: list[Event] = []
        self._lift_expired_force(now_ms, events)
        if self.forced is State.OPEN:
            return self._deny(self._forced_retry_after_ms(now_ms)), events
        if self.forced is State.CLOSED:
            return self._allow(None), events
        if self.state is State.OPEN:
            if now_ms < self.open_until_ms:
                return self._deny(self.open_until_ms - now_ms), events
            self._transition(State.HALF_OPEN, "open timeout elapsed", None, now_ms, events)
        self._drop_expired_permits(now_ms)
        if self.state is State.HALF_OPEN:
            # At most half_open_max_calls probes per half-open window in total: a reported probe keeps its slot.
            if self.half_open_used >= self.config.half_open_max_calls:
                return self._deny(first_permit_expiry_ms(self.permits, now_ms) - now_ms), events
            self.half_open_used += 1
            return self._allow(self._grant_permit(permit_id, now_ms)), events
        if not lease:  # the plain protocol is the classic breaker: CLOSED allows
            return self._allow(None), events
        if self.consecutive_failures == 0 and self.proven:
            return self._allow(None), events
        # While failures accumulate, or before a success has shown the dependency works, leased calls in flight
        # count against the budget, so a fleet that opts in cannot send more than `failure_threshold` calls to a
        # dead dependency.
        if self.consecutive_failures + len(self.permits) >= self.config.failure_threshold:
            return self._deny(first_permit_expiry_ms(self.permits, now_ms) - now_ms), events
        return self._allow(self._grant_permit(permit_id, now_ms)), events

    def record(self, outcome: Outcome, now_ms: int) -> list[Event]:
        """Take the result of one call (or `count` calls)."""
        events: list[Event] = []
        self._lift_expired_force(now_ms, events)
        if already_counted(self.reports, outcome.report_id, self.config.permit_ttl_s, now_ms):
            return events
        if outcome.outcome == "rejected":
            self.rejected += outcome.count
            return events
        failed = outcome.outcome == "failure"
        if failed:
            self.failure += outcome.count
        else:
            self.success += outcome.count
        if self.forced is not None or self.state is State.OPEN:
            return events
        if outcome.generation is not None and outcome.generation != self.generation:
            return events
        self._drop_expired_permits(now_ms)
        had_permit = outcome.permit is not None and self.permits.pop(outcome.permit, None) is not None
        if self.state is State.HALF_OPEN:
            if had_permit:
                self._record_probe(failed, now_ms, events)
            return events
        self._record_closed(outcome, failed, now_ms, events)
        return events

    def force(self, mode: State, reason: str, ttl_s: float | None, actor: str | None, now_ms: int) -> list[Event]:
        """Pin the breaker OPEN or CLOSED, for `ttl_s` seconds or until reset."""
        events: list[Event] = []
        self._lift_expired_force(now_ms, events)
        before = self.effective_state
        self._become_fresh_closed()
        self.forced = mode
        self.forced_until_ms = now_ms + math.floor(ttl_s * 1000) if ttl_s is not None else 0
        self.forced_actor = actor
        self.forced_reason = reason
        self._audit(before, mode, reason, actor, now_ms, events)
        return events

    def reset(self, reason: str, actor: str | None, now_ms: int) -> list[Event]:
        """Back to a fresh CLOSED: counts cleared, force lifted."""
        events: list[Event] = []
        before = self.effective_state
        self._become_fresh_closed()
        self._lift_force()
        self.success = self.failure = self.rejected = 0
        self._audit(before, State.CLOSED, reason, actor, now_ms, events)
        return events

    def snapshot(self, now_ms: int) -> tuple[Snapshot, list[Event]]:
        """The breaker as the API shows it; an expired force is lifted first."""
        events: list[Event] = []
        self._lift_expired_force(now_ms, events)
        return self.view(now_ms), events

    # -- rules ------------------------------------------------------------------------------------------------

    def _record_probe(self, failed: bool, now_ms: int, events: list[Event]) -> None:
        if failed:
            self.open_streak += 1
            self._transition(State.OPEN, "probe failed", None, now_ms, events)
            return
        self.consecutive_successes += 1
        if self.consecutive_successes >= self.config.success_threshold:
            self.open_streak = 0
            self._transition(State.CLOSED, "probes succeeded", None, now_ms, events)

    def _record_closed(self, outcome: Outcome, failed: bool, now_ms: int, events: list[Event]) -> None:
        was_failing = self.consecutive_failures > 0
        if failed:
            self.consecutive_failures += outcome.count
        else:
            self.proven = True
            # A success ends the streak, unless its reporter says it was admitted before failures it had not seen
            # (a late batch from a client's fast path): counted, but it says nothing about the dependency now.
            late = outcome.failures_seen is not None and outcome.failures_seen < self.failure
            if not late:
                self.consecutive_failures = 0
        self.window = add_to_window(self.window, self.config, outcome, failed, now_ms)
        if self.consecutive_failures >= self.config.failure_threshold:
            self._transition(State.OPEN, "failure threshold reached", None, now_ms, events)
            return
        rate_reason = rate_exceeded(self.config, self.window)
        if rate_reason is not None:
            self._transition(State.OPEN, rate_reason, None, now_ms, events)
            return
        if was_failing != (self.consecutive_failures > 0):
            events.append(
                FailureSignal(
                    name=self.name, consecutive_failures=self.consecutive_failures, generation=self.generation
                )
            )

    # -- permits and decisions ------------------------------------------------------------------------------------

    def _grant_permit(self, permit: str, now_ms: int) -> str:
        self.permit_seq += 1
        self.permits[permit] = now_ms + math.floor(self.config.permit_ttl_s * 1000)
        return permit

    def _drop_expired_permits(self, now_ms: int) -> None:
        expired = drop_expired_permits(self.permits, now_ms)
        if self.state is State.HALF_OPEN:  # a probe that expired unreported gives its slot back
            self.half_open_used = max(0, self.half_open_used - expired)

    def _allow(self, permit: str | None) -> Decision:
        return Decision(allowed=True, state=self.effective_state, generation=self.generation, permit=permit)

    def _deny(self, retry_after_ms: int | None) -> Decision:
        self.rejected += 1
        return Decision(
            allowed=False,
            state=self.effective_state,
            generation=self.generation,
            retry_after_s=None if retry_after_ms is None else max(0, retry_after_ms) / 1000,
        )
