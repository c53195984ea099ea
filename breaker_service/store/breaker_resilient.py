"""A shared store that keeps answering from local state while the shared store is unreachable.

`ResilientStore` wraps the shared store (Redis) and delegates every call to it, remembering the last snapshot it
answered for each breaker. When a call raises `StoreUnavailableError` the store turns *degraded*:

- acquire and record run on a local `BreakerMachine` per breaker, seeded from that last snapshot
  (`fallback_resilient.py`: `LocalFallback`). Decisions say `degraded: true`.
- snapshot, snapshots and names answer from the breakers this replica knows; history raises
  `StoreUnavailableError`: it lives only in the shared store.
- admin writes (configure, delete, force, reset) always go to the shared store, so they fail with
  `StoreUnavailableError` (503 ORC_005) while it is down (`shared_resilient.py`: `SharedOnlyCalls`).

How a degraded spell starts and ends (a background retry, the epoch check, the `resync` event, no call waiting on
the shared store longer than `timeout_s`) is `link_resilient.py`: `SharedLink`.

Until it has read its store once (the epoch), the replica knows nothing it could answer from: acquire, record,
reads and admin writes answer 503 ORC_005 (never a guess from defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from breaker_service.clock import Clock, wall_clock_ms
from breaker_service.errors import StoreUnavailableError, UnknownBreakerError
from breaker_service.store.fallback_resilient import LOCAL_PERMIT_PREFIX, LocalFallback
from breaker_service.store.link_resilient import SharedLink
from breaker_service.store.recollection import ReplicaMemory
from breaker_service.store.restorer import Restorer
from breaker_service.store.shared_resilient import SharedOnlyCalls

if TYPE_CHECKING:
    from collections.abc import Sequence

    from breaker_client.protocol.models import BreakerConfig, Decision, Outcome, Snapshot
    from breaker_service.store.breaker_base import ConfigResolver
    from breaker_service.store.breaker_redis import RedisStore

__all__ = ["LOCAL_PERMIT_PREFIX", "ResilientStore"]


class ResilientStore(SharedOnlyCalls):
    """The shared store, with a local fallback for acquire, record and reads while it is unreachable."""

    def __init__(
        self,
        shared: RedisStore,
        *,
        resolve_config: ConfigResolver,
        max_breakers: int = 10_000,
        retry_min_s: float = 0.5,
        retry_max_s: float = 1.0,
        timeout_s: float = 2.0,
        epoch_check_s: float = 1.0,
        clock: Clock = wall_clock_ms,
    ) -> None:
        if not 0 < retry_min_s <= retry_max_s:
            raise ValueError("need 0 < retry_min_s <= retry_max_s")
        memory = ReplicaMemory(max_breakers=max_breakers)
        restorer = Restorer(shared, memory, clock=clock, check_interval_s=epoch_check_s)
        shared.on_missing = restorer.on_missing
        self._local = LocalFallback(
            memory,
            resolve_config=resolve_config,
            max_breakers=max_breakers,
            refusal_retry_after_s=retry_max_s,
            clock=clock,
        )
        link = SharedLink(
            shared,
            restorer,
            memory.declared,
            self._local,
            retry_min_s=retry_min_s,
            retry_max_s=retry_max_s,
            timeout_s=timeout_s,
        )
        super().__init__(shared, link, memory, restorer, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._link.degraded

    @property
    def reached(self) -> bool:
        """Whether this replica has read its store at least once (before that it answers 503, never a guess)."""
        return self._restorer.epoch is not None

    async def start(self) -> None:
        """Start the shared store and read its epoch; if it is unreachable, start degraded and keep trying."""
        await self._link.start()

    async def close(self) -> None:
        await self._link.close()
        await self._shared.close()

    async def ping(self) -> bool:
        """Whether the shared store answers now; an answer ends a degraded spell, a failure starts one."""
        return await self._link.ping()

    async def declare(self, name: str, config: BreakerConfig) -> None:
        """Declare on the shared store now, or when it answers again; and again after every outage."""
        self._memory.declared[name] = config
        if not self.degraded:
            try:
                await self._link.bounded(self._shared.declare(name, config))
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)

    # -- reads: local while degraded ----------------------------------------------------------------------------

    async def names(self) -> list[str]:
        self._require_reached()
        if not self.degraded:
            try:
                return await self._link.bounded(self._shared.names())
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
        return self._local.names()

    async def snapshot(self, name: str) -> Snapshot:
        self._require_reached()
        if not self.degraded:
            try:
                return self._remember(await self._link.bounded(self._shared.snapshot(name)))
            except UnknownBreakerError:
                self._memory.known.pop(name, None)
                raise
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
        return self._local.snapshot(name)

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        self._require_reached()
        if not self.degraded:
            try:
                return [
                    self._remember(snapshot) for snapshot in await self._link.bounded(self._shared.snapshots(names))
                ]
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
        return self._local.snapshots(names)

    async def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        if not self.degraded:
            try:
                return await self._shared.window_totals(name, window_s)
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
        return self._local.window_totals(name, window_s)

    # -- the hot path -----------------------------------------------------------------------------------------

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        self._require_reached()
        if not self.degraded:
            try:
                decision = await self._link.bounded(self._shared.acquire(name, lease=lease))
                if await self._restorer.lost_writes(name, decision.generation):
                    decision = await self._link.bounded(self._shared.acquire(name, lease=lease))
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
            else:
                remembered = self._local.snapshot_from_decision(name, decision)
                if remembered is not None:
                    self._remember(remembered)
                return decision
        return self._local.acquire(name, lease=lease)

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        self._require_reached()
        if not self.degraded:
            try:
                return self._remember(await self._link.bounded(self._shared.record(name, outcome)))
            except StoreUnavailableError as exc:
                self._link.enter_degraded(exc)
        return self._local.record(name, outcome)

    def _require_reached(self) -> None:
        if not self.reached:
            raise StoreUnavailableError("this replica has not reached its store yet: it knows no breaker's state")
