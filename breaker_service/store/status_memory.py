"""`MemoryStatusStore`: probe results and the degradation mode of one replica (store/status_base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from breaker_service.degradation import Degradation, DegradationChange, Mode, ProbeResult
from breaker_service.events import StoreEvent
from breaker_service.store.status_base import ModeRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from breaker_service.clock import Clock


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
