"""The breaker state machine in pure Python, mirroring the Lua scripts.

The Lua scripts in `breaker_service/lua/` are the authority; this machine mirrors them rule for rule for the memory
store and the client's local fallback, and the differential test (tests/test_differential.py) holds the two
together on random sequences (docs/semantics.md). Time is passed in (`now_ms`), so nothing here reads a clock or
sleeps.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from breaker_client.protocol.models import (
    BreakerConfig,
    Counts,
    Decision,
    FailureSignal,
    Force,
    Outcome,
    Snapshot,
    State,
    Transition,
    WhenUnknown,
)

WINDOW_BUCKETS: Final = 10
REPORT_MIN_TTL_MS: Final = 60_000
"""A report_id is remembered for at least permit_ttl_s, and at least this long."""
PERMIT_BYTES: Final = 12
"""96 random bits per permit: unguessable, so no caller can report on another's probe."""
Event: TypeAlias = Transition | FailureSignal


def new_permit() -> str:
    """A fresh permit id from `secrets`."""
    return secrets.token_urlsafe(PERMIT_BYTES)


def refusal_when_unknown(when_unknown: WhenUnknown, retry_after_s: float | None) -> Decision | None:
    """The rule for a breaker whose shared state cannot be known and that was never seen: "deny" refuses as an OPEN
    breaker would (marked degraded, no machine made); "allow" gives None, and a fresh machine decides."""
    if when_unknown == "allow":
        return None
    return Decision(allowed=False, state=State.OPEN, generation=0, retry_after_s=retry_after_s, degraded=True)


@dataclass
class _Bucket:
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass
class BreakerMachine:
    """One breaker: its config, state, permits and rate window."""

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
    window: dict[int, _Bucket] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)
    """report_id -> when it may be forgotten (ms)."""

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
                return self._deny(self._first_permit_expiry_ms(now_ms) - now_ms), events
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
            return self._deny(self._first_permit_expiry_ms(now_ms) - now_ms), events
        return self._allow(self._grant_permit(permit_id, now_ms)), events

    def record(self, outcome: Outcome, now_ms: int) -> list[Event]:
        """Take the result of one call (or `count` calls)."""
        events: list[Event] = []
        self._lift_expired_force(now_ms, events)
        if self._already_counted(outcome.report_id, now_ms):
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

    @property
    def effective_state(self) -> State:
        """The forced state while forced, else the machine's own."""
        return self.forced if self.forced is not None else self.state

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

    def _already_counted(self, report_id: str | None, now_ms: int) -> bool:
        """Whether `report_id` was counted before; else remember it (for at least permit_ttl_s)."""
        if report_id is None:
            return False
        for known in [r for r, forget_ms in self.reports.items() if forget_ms <= now_ms]:
            del self.reports[known]
        if report_id in self.reports:
            return True
        ttl_ms = max(math.floor(self.config.permit_ttl_s * 1000), REPORT_MIN_TTL_MS)
        self.reports[report_id] = now_ms + ttl_ms
        return False

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
        self._add_to_window(outcome, failed, now_ms)
        if self.consecutive_failures >= self.config.failure_threshold:
            self._transition(State.OPEN, "failure threshold reached", None, now_ms, events)
            return
        rate_reason = self._rate_exceeded()
        if rate_reason is not None:
            self._transition(State.OPEN, rate_reason, None, now_ms, events)
            return
        if was_failing != (self.consecutive_failures > 0):
            events.append(
                FailureSignal(
                    name=self.name, consecutive_failures=self.consecutive_failures, generation=self.generation
                )
            )

    def _add_to_window(self, outcome: Outcome, failed: bool, now_ms: int) -> None:
        cfg = self.config
        if cfg.window_s is None:
            return
        bucket_ms = self._bucket_ms(cfg.window_s)
        current = now_ms // bucket_ms
        self.window = {index: b for index, b in self.window.items() if index > current - WINDOW_BUCKETS}
        bucket = self.window.setdefault(current, _Bucket())
        bucket.calls += outcome.count
        if failed:
            bucket.failures += outcome.count
        if cfg.slow_call_ms is not None and outcome.duration_ms is not None and outcome.duration_ms >= cfg.slow_call_ms:
            bucket.slow += outcome.count

    def _rate_exceeded(self) -> str | None:
        cfg = self.config
        if cfg.window_s is None or cfg.min_calls is None:
            return None
        calls = sum(b.calls for b in self.window.values())
        if calls < cfg.min_calls:
            return None
        if cfg.failure_rate is not None and sum(b.failures for b in self.window.values()) >= cfg.failure_rate * calls:
            return "failure rate exceeded"
        if cfg.slow_call_rate is not None and sum(b.slow for b in self.window.values()) >= cfg.slow_call_rate * calls:
            return "slow call rate exceeded"
        return None

    @staticmethod
    def _bucket_ms(window_s: float) -> int:
        return max(1, math.floor(window_s * 1000) // WINDOW_BUCKETS)

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

    # -- helpers ------------------------------------------------------------------------------------------------

    def _open_timeout_ms(self) -> int:
        cfg = self.config
        try:
            backoff: float = cfg.open_backoff**self.open_streak
        except OverflowError:  # Lua's float arithmetic gives inf here, which the cap below turns into the max
            backoff = math.inf
        seconds = min(cfg.open_timeout_s * backoff, cfg.max_open_timeout_s)
        return math.floor(seconds * 1000)

    def _grant_permit(self, permit: str, now_ms: int) -> str:
        self.permit_seq += 1
        self.permits[permit] = now_ms + math.floor(self.config.permit_ttl_s * 1000)
        return permit

    def _drop_expired_permits(self, now_ms: int) -> None:
        expired = [p for p, expires_ms in self.permits.items() if expires_ms <= now_ms]
        for permit in expired:
            del self.permits[permit]
        if self.state is State.HALF_OPEN:  # a probe that expired unreported gives its slot back
            self.half_open_used = max(0, self.half_open_used - len(expired))

    def _first_permit_expiry_ms(self, now_ms: int) -> int:
        # No permit is out when a lowered failure_threshold is already exceeded: retry at once.
        return min(self.permits.values(), default=now_ms)

    def _forced_retry_after_ms(self, now_ms: int) -> int | None:
        return self.forced_until_ms - now_ms if self.forced_until_ms else None

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
