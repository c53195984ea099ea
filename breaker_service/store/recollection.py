"""What a replica remembers of a breaker, to put it back when the store loses it (`restore.lua`)."""

from __future__ import annotations

import math
import secrets
import time

import msgspec
from msgspec import Struct

# msgspec reads the Structs' annotations at runtime, so the types they name are imported at runtime.
from breaker_client.protocol.models import BreakerConfig, Snapshot, State  # noqa: TC001
from breaker_service.degradation import Mode  # noqa: TC001


def new_incarnation() -> str:
    """A random id for one creation of a breaker (64 bits: two creations never share one)."""
    return secrets.token_hex(8)


class ForceFacts(Struct, frozen=True, kw_only=True):
    """A force in effect: its mode, the time it has left (ms; None: until lifted), who set it and why."""

    mode: State
    ttl_ms: int | None
    actor: str | None
    reason: str


class Recollection(Struct, frozen=True, kw_only=True):
    """A breaker as this replica last saw it in the store: enough to restore it."""

    incarnation: str
    generation: int
    config: BreakerConfig
    force: ForceFacts | None


class Known(Struct, kw_only=True):
    """The last snapshot the shared store answered for a breaker, and when (this replica's clocks) it did."""

    snapshot: Snapshot
    seen_ms: int
    seen_wall_ms: int


class ReplicaMemory:
    """Every breaker this replica has seen in the store, the forces on them, and the config-file breakers."""

    def __init__(self, *, max_breakers: int) -> None:
        self._max_breakers = max_breakers
        self.known: dict[str, Known] = {}
        self.declared: dict[str, BreakerConfig] = {}

    def remember(self, snapshot: Snapshot, now_ms: int) -> Snapshot:
        """Keep `snapshot` as the last seen (the oldest entry gives way at the cap)."""
        previous = self.known.pop(snapshot.name, None)
        if previous is None and len(self.known) >= self._max_breakers:
            del self.known[next(iter(self.known))]
        if snapshot.incarnation is None and previous is not None:
            # A snapshot made up from a decision carries no incarnation: the breaker is still the one seen.
            snapshot = msgspec.structs.replace(snapshot, incarnation=previous.snapshot.incarnation)
        self.known[snapshot.name] = Known(snapshot=snapshot, seen_ms=now_ms, seen_wall_ms=time.time_ns() // 1_000_000)
        return snapshot

    def forget(self, name: str) -> None:
        """The breaker was deleted: never restore it."""
        self.known.pop(name, None)
        self.declared.pop(name, None)

    def names(self) -> list[str]:
        """Every breaker there is something to restore of."""
        return sorted(self.known.keys() | self.declared.keys())

    def recollection(self, name: str, now_ms: int) -> Recollection | None:
        """What to restore `name` from; runtime config (last seen) wins over the config file."""
        known = self.known.get(name)
        if known is None:
            declared = self.declared.get(name)
            if declared is None:
                return None
            return Recollection(incarnation=new_incarnation(), generation=0, config=declared, force=None)
        snapshot = known.snapshot
        return Recollection(
            incarnation=snapshot.incarnation or new_incarnation(),
            generation=snapshot.generation,
            config=snapshot.config,
            force=self._force(known, now_ms),
        )

    def _force(self, known: Known, now_ms: int) -> ForceFacts | None:
        snapshot, force = known.snapshot, known.snapshot.force
        if force is None:
            return None
        ttl_ms = None
        if force.until is not None:
            # `until` is in Redis time; the time left when it was seen, counted on from then by this replica's clock.
            left_ms = math.floor(snapshot.retry_after_s * 1000) if snapshot.retry_after_s is not None else None
            if left_ms is None:
                left_ms = math.floor(force.until * 1000) - known.seen_wall_ms
            ttl_ms = left_ms - (now_ms - known.seen_ms)
        return ForceFacts(mode=force.mode, ttl_ms=ttl_ms, actor=force.actor, reason=force.reason)


class ForcedMode(Struct, frozen=True, kw_only=True):
    """The admin's forced degradation mode as last read from the store: time left in ms (None: until lifted)."""

    mode: Mode
    reason: str
    actor: str | None
    ttl_ms: int | None
