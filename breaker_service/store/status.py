"""The service's own fleet-wide status beside the breakers: cached probe results and the degradation mode.

`StatusStore` has two implementations, as `BreakerStore` does: `RedisStatusStore` (store/redis_status.py, shared by
every replica) and `MemoryStatusStore` here (one replica; time from an injectable clock). Each breaker store hands
out its own with `status_store()`, so the two always live in the same place.

- Probes: `claim_probe` grants the right to probe one dependency to one replica per lease (SET NX PX on Redis), so
  N replicas do not probe N times; the result is cached with a TTL and read by every replica.
- Mode: `settle` makes the effective mode (the forced one while it lasts, else the derived one the caller passes)
  the fleet's current mode, and publishes a `mode` event when the mode object changed; `force` sets or lifts the
  admin override, records it as the last change, and settles, all in one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from msgspec import Struct

from breaker_service.degradation import Degradation, DegradationChange, Mode, ProbeResult
from breaker_service.store.base import StoreEvent

Clock = Callable[[], int]


class ModeRecord(Struct, frozen=True, kw_only=True):
    """The settled mode, and when a forced one ends (store time, Unix seconds; None: no end, or not forced)."""

    state: Degradation
    forced_until: float | None = None


class StatusStore(Protocol):
    """Probe results and the degradation mode, shared (Redis) or local (memory). Raises `StoreUnavailableError`."""

    async def claim_probe(self, name: str, lease_s: float) -> bool:
        """True when this replica may probe `name` now; nobody else may until `lease_s` have passed."""
        ...

    async def save_probe(self, name: str, result: ProbeResult, ttl_s: float) -> None:
        """Cache `result` for every replica, for `ttl_s`."""

    async def probes(self, names: Sequence[str]) -> dict[str, ProbeResult]:
        """The cached results of those of `names` that have one."""
        ...

    async def settle(self, derived: Mode, reason: str) -> ModeRecord:
        """Make the effective mode current (publishing a `mode` event if it changed) and answer it."""
        ...

    async def force(
        self,
        mode: Mode | None,
        *,
        reason: str,
        actor: str | None,
        ttl_s: float | None,
        derived: Mode,
        derived_reason: str,
    ) -> ModeRecord:
        """Force `mode` (None: lift the override), record the change, then settle as `settle` does."""
        ...

    async def last_change(self) -> DegradationChange | None:
        """The last admin change, if any."""
        ...


class MemoryStatusStore:
    """The `StatusStore` of one replica: `publish` feeds the memory store's event subscribers."""

    def __init__(self, *, clock: Clock, publish: Callable[[StoreEvent], None]) -> None:
        self._clock = clock
        self._publish = publish
        self._leases: dict[str, int] = {}
        self._probes: dict[str, tuple[ProbeResult, int]] = {}
        self._forced: ModeRecord | None = None
        self._current: Degradation | None = None
        self._change: DegradationChange | None = None

    async def claim_probe(self, name: str, lease_s: float) -> bool:
        now_ms = self._clock()
        if self._leases.get(name, 0) > now_ms:
            return False
        self._leases[name] = now_ms + max(1, round(lease_s * 1000))
        return True

    async def save_probe(self, name: str, result: ProbeResult, ttl_s: float) -> None:
        self._probes[name] = (result, self._clock() + max(1, round(ttl_s * 1000)))

    async def probes(self, names: Sequence[str]) -> dict[str, ProbeResult]:
        now_ms = self._clock()
        cached = ((name, self._probes.get(name)) for name in names)
        return {name: entry[0] for name, entry in cached if entry is not None and entry[1] > now_ms}

    async def settle(self, derived: Mode, reason: str) -> ModeRecord:
        now_ms = self._clock()
        forced = self._forced
        if forced is not None and forced.forced_until is not None and forced.forced_until * 1000 <= now_ms:
            forced = self._forced = None
        if forced is not None:
            mode, reason, until = forced.state.mode, forced.state.reason, forced.forced_until
        else:
            mode, until = derived, None
        current = self._current
        is_forced = forced is not None
        if current is None or (current.mode, current.reason, current.forced) != (mode, reason, is_forced):
            changed = current is None or (current.mode, current.forced) != (mode, is_forced)
            since = now_ms / 1000 if changed or current is None else current.since
            current = self._current = Degradation(mode=mode, reason=reason, since=since, forced=is_forced)
            self._publish(StoreEvent(kind="mode", data=current))
        return ModeRecord(state=current, forced_until=until)

    async def force(
        self,
        mode: Mode | None,
        *,
        reason: str,
        actor: str | None,
        ttl_s: float | None,
        derived: Mode,
        derived_reason: str,
    ) -> ModeRecord:
        now_ms = self._clock()
        self._change = DegradationChange(mode=mode, reason=reason, actor=actor, at=now_ms / 1000, ttl_s=ttl_s)
        if mode is None:
            self._forced = None
        else:
            until = None if ttl_s is None else (now_ms + max(1, round(ttl_s * 1000))) / 1000
            state = Degradation(mode=mode, reason=reason, since=now_ms / 1000, forced=True)
            self._forced = ModeRecord(state=state, forced_until=until)
        return await self.settle(derived, derived_reason)

    async def last_change(self) -> DegradationChange | None:
        return self._change
