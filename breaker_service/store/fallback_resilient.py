"""The resilient store's local fallback: a Python machine per breaker, run while the shared store is unreachable.

Each machine is seeded on first use from the last snapshot this replica saw of its breaker (config, state, force,
generation, counters; an OPEN breaker keeps the open time it had left), or from the declared or resolved config for
a breaker never seen. A breaker never seen follows its config's `when_unknown`: "allow" runs a fresh local machine,
"deny" refuses. Decisions say `degraded: true`; permits granted locally are prefixed `local-`, so the shared store
never takes one for its own. The machines last one degraded spell: when the shared store answers again they are
dropped, and shared state wins.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import msgspec

from breaker_client.protocol.machine import BreakerMachine, refusal_when_unknown
from breaker_client.protocol.models import Counts, Force, Snapshot, State
from breaker_service.errors import BreakerCapError, StoreUnavailableError
from breaker_service.store.window import machine_window_totals

if TYPE_CHECKING:
    from collections.abc import Sequence

    from breaker_client.protocol.models import BreakerConfig, Decision, Outcome
    from breaker_service.clock import Clock
    from breaker_service.store.breaker_base import ConfigResolver
    from breaker_service.store.recollection import ReplicaMemory

LOCAL_PERMIT_PREFIX: Final = "local-"


class LocalFallback:
    """The breakers this replica runs itself while the shared store is unreachable, seeded from what it remembers."""

    def __init__(
        self,
        memory: ReplicaMemory,
        *,
        resolve_config: ConfigResolver,
        max_breakers: int,
        refusal_retry_after_s: float,
        clock: Clock,
    ) -> None:
        self._known = memory.known
        self._declared = memory.declared
        self._resolve_config = resolve_config
        self._max_breakers = max_breakers
        self._refusal_retry_after_s = refusal_retry_after_s
        self._clock = clock
        self._machines: dict[str, BreakerMachine] = {}

    def names(self) -> list[str]:
        return sorted(self._machines.keys() | self._known.keys())

    def snapshot(self, name: str) -> Snapshot:
        if name not in self._machines and name not in self._known:
            raise StoreUnavailableError(f"the store is unreachable and this replica has not seen {name!r}")
        return self._snapshot(name)

    def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        known = self._machines.keys() | self._known.keys()
        return [self._snapshot(name) for name in sorted(known if names is None else known & set(names))]

    def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        if name not in self._machines:
            raise StoreUnavailableError(f"the store is unreachable and {name!r} has no local window")
        return machine_window_totals(self._machines[name], self._clock(), window_s)

    def acquire(self, name: str, *, lease: bool = False) -> Decision:
        if name not in self._machines and name not in self._known:
            refusal = refusal_when_unknown(self._config(name).when_unknown, self._refusal_retry_after_s)
            if refusal is not None:
                return refusal
        decision, _ = self._machine(name).acquire(self._clock(), lease=lease)
        permit = None if decision.permit is None else LOCAL_PERMIT_PREFIX + decision.permit
        return msgspec.structs.replace(decision, permit=permit, degraded=True)

    def record(self, name: str, outcome: Outcome) -> Snapshot:
        if outcome.permit is not None and outcome.permit.startswith(LOCAL_PERMIT_PREFIX):
            outcome = msgspec.structs.replace(outcome, permit=outcome.permit.removeprefix(LOCAL_PERMIT_PREFIX))
        machine = self._machine(name)
        now_ms = self._clock()
        machine.record(outcome, now_ms)
        return machine.view(now_ms)

    def drop(self) -> int:
        """Drop every local machine (the shared store answers again, and its state wins); how many there were."""
        dropped = len(self._machines)
        self._machines.clear()
        return dropped

    def snapshot_from_decision(self, name: str, decision: Decision) -> Snapshot | None:
        """What to remember of a decision that shows a generation other than the remembered one (None: the same).

        A decision carries only the effective state, the generation and `retry_after_s`, so the counters become
        those of a fresh entry into that state, and the config stays the last one seen (or the resolved one).
        """
        known = self._known.get(name)
        if known is not None and known.snapshot.generation == decision.generation:
            return None
        is_open = decision.state is State.OPEN
        forced = State.OPEN if is_open and decision.retry_after_s is None else None  # only a force has no end
        return Snapshot(
            name=name,
            state=decision.state,
            machine_state=State.CLOSED if forced is not None else decision.state,
            forced=forced,
            force=None if forced is None else Force(mode=forced, until=None, actor=None, reason=""),
            generation=decision.generation,
            consecutive_failures=0,
            consecutive_successes=0,
            opened_at=self._clock() / 1000 if is_open and forced is None else None,
            retry_after_s=decision.retry_after_s if is_open else None,
            config=known.snapshot.config if known is not None else self._resolve_config(name),
            counts=known.snapshot.counts if known is not None else Counts(),
        )

    def _config(self, name: str) -> BreakerConfig:
        return self._declared.get(name) or self._resolve_config(name)

    def _machine(self, name: str) -> BreakerMachine:
        """The local machine for `name`, seeded on first use from what this replica last saw."""
        machine = self._machines.get(name)
        if machine is not None:
            return machine
        if len(self._machines) >= self._max_breakers:
            raise BreakerCapError(f"cannot track {name!r} locally: the cap of {self._max_breakers} breakers is reached")
        known = self._known.get(name)
        if known is not None:
            machine = _seed(known.snapshot, known.seen_ms)
        else:
            machine = BreakerMachine(name=name, config=self._config(name))
        self._machines[name] = machine
        return machine

    def _snapshot(self, name: str) -> Snapshot:
        snapshot, _ = self._machine(name).snapshot(self._clock())
        return snapshot


def _seed(snapshot: Snapshot, seen_ms: int) -> BreakerMachine:
    """A machine in the state `snapshot` showed at `seen_ms`; open and forced times keep what they had left."""
    until_ms = seen_ms + math.floor(snapshot.retry_after_s * 1000) if snapshot.retry_after_s is not None else 0
    force = snapshot.force
    return BreakerMachine(
        name=snapshot.name,
        config=snapshot.config,
        state=snapshot.machine_state,
        forced=snapshot.forced,
        forced_until_ms=until_ms if snapshot.forced is State.OPEN else 0,
        forced_actor=force.actor if force is not None else None,
        forced_reason=force.reason if force is not None else "",
        generation=snapshot.generation,
        consecutive_failures=snapshot.consecutive_failures,
        consecutive_successes=snapshot.consecutive_successes,
        opened_at_ms=math.floor(snapshot.opened_at * 1000) if snapshot.opened_at is not None else 0,
        open_until_ms=until_ms if snapshot.machine_state is State.OPEN and snapshot.forced is None else 0,
        success=snapshot.counts.success,
        failure=snapshot.counts.failure,
        rejected=snapshot.counts.rejected,
    )
