"""The service's own fleet-wide status beside the breakers: cached probe results and the degradation mode.

`StatusStore` has two implementations, as `BreakerStore` does: `RedisStatusStore` (store/status_redis.py, shared by
every replica) and `MemoryStatusStore` (store/status_memory.py, one replica; time from an injectable clock). Each
breaker store hands out its own with `status_store()`, so the two always live in the same place.

- Probes: `claim_probe` grants the right to probe one dependency to one replica per lease (SET NX PX on Redis), so
  N replicas do not probe N times; the result is cached with a TTL and read by every replica.
- Mode: `settle` makes the effective mode (the forced one while it lasts, else the derived one the caller passes)
  the fleet's current mode, and publishes a `mode` event when the mode object changed; `force` sets or lifts the
  admin override, records it as the last change, and settles, all in one step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

from breaker_service.degradation import Degradation, DegradationChange, Mode, ProbeResult  # noqa: TC001  # msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence


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
