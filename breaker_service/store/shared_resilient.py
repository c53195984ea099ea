"""What the resilient store serves from the shared store alone, and how it remembers what that store answers.

Admin writes (configure, patch, delete, force, reset) always go to the shared store, so they fail with
`StoreUnavailableError` (503 ORC_005) while it is down: they are never kept only locally. History and the audit
trail live only there too, and so do the status and Idempotency-Key stores. Every snapshot the shared store answers
(from a call or an event) is remembered: it seeds a local machine in a later outage (`fallback_resilient.py`) and
tells the restorer what to put back after a store reset (`restorer.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from breaker_client.protocol.models import Deleted, Snapshot
from breaker_service.errors import StoreUnavailableError
from breaker_service.store.connection_redis import raise_if_cancelled

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator

    from breaker_client.protocol.models import BreakerConfig, ConfigPatch, State, Transition
    from breaker_service.clock import Clock
    from breaker_service.events import StoreEvent
    from breaker_service.store.audit import AuditEntry
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.idempotency_base import IdempotencyStore
    from breaker_service.store.link_resilient import SharedLink
    from breaker_service.store.recollection import ReplicaMemory
    from breaker_service.store.restorer import Restorer
    from breaker_service.store.status_base import StatusStore


class SharedOnlyCalls:
    """The calls `ResilientStore` passes to the shared store with no local fallback; every answer is remembered."""

    def __init__(
        self, shared: RedisStore, link: SharedLink, memory: ReplicaMemory, restorer: Restorer, *, clock: Clock
    ) -> None:
        self._shared = shared
        self._link = link
        self._memory = memory
        self._restorer = restorer
        self._clock = clock

    @property
    def kind(self) -> str:
        return self._shared.kind

    # -- admin writes: the shared store only ------------------------------------------------------------------

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        async with self._link.writing():
            return self._remember(await self._shared.configure(name, config, actor=actor, reason=reason))

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str | None) -> Snapshot:
        async with self._link.writing():
            return self._remember(await self._shared.patch(name, patch, actor=actor, reason=reason))

    async def delete(self, name: str, *, actor: str | None, reason: str | None) -> None:
        async with self._link.writing():
            await self._shared.delete(name, actor=actor, reason=reason)
        self._memory.forget(name)

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        async with self._link.writing():
            return self._remember(await self._shared.force(name, mode, reason=reason, ttl_s=ttl_s, actor=actor))

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        async with self._link.writing():
            return self._remember(await self._shared.reset(name, reason=reason, actor=actor))

    # -- reads that live only in the shared store -------------------------------------------------------------

    async def history(self, name: str, *, limit: int = 100) -> list[Transition]:
        if self._link.degraded:
            raise StoreUnavailableError("the store is unreachable, and history lives only there")
        try:
            return await self._link.bounded(self._shared.history(name, limit=limit))
        except StoreUnavailableError as exc:
            self._link.enter_degraded(exc)
            raise

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        if self._link.degraded:
            raise StoreUnavailableError("the store is unreachable, and the audit trail lives only there")
        try:
            return await self._shared.audit(limit=limit)
        except StoreUnavailableError as exc:
            self._link.enter_degraded(exc)
            raise

    async def eviction_policy(self) -> str:
        """The shared store's `maxmemory-policy`."""
        return await self._link.bounded(self._shared.recovery.eviction_policy())

    def status_store(self) -> StatusStore:
        """The shared store's: it raises `StoreUnavailableError` while that is unreachable (no local fallback)."""
        return self._shared.status_store()

    def idempotency_store(self) -> IdempotencyStore:
        """The shared store's: admin writes are never served locally, so neither are their Idempotency-Keys."""
        return self._shared.idempotency_store()

    async def events(self, subscribed: asyncio.Event | None = None) -> AsyncIterator[StoreEvent]:
        """The shared store's events, once it is reachable (never subscribing while degraded).

        A lost subscription raises `StoreUnavailableError`, as the shared store's feed does: the one loop that
        subscribes again is the replica's `EventHub`, which ends every listener's stream then (events may have been
        missed: SSE clients reconnect and take a fresh snapshot). A lost subscription alone does not make the store
        degraded: acquire and record decide that. Transitions of the local machines are not published: they are
        this replica's alone. The snapshots the events carry (`breaker`, `config`) keep what this replica knows
        current, forces with their actor, reason and end included, for a later outage or store reset.
        """
        await self._link.wait_until_up()
        try:
            async for event in self._shared.events(subscribed):
                self._learn(event)
                yield event
        except StoreUnavailableError:
            # redis-py may turn the consumer's cancellation into a connection error; a loop that survives store
            # errors on purpose (the hub's) would otherwise subscribe again, for ever.
            raise_if_cancelled()
            raise

    # -- remembering what the shared store answered -----------------------------------------------------------

    def _remember(self, snapshot: Snapshot) -> Snapshot:
        self._restorer.saw(snapshot)
        self._memory.remember(snapshot, self._clock())
        return snapshot

    def _learn(self, event: StoreEvent) -> None:
        if isinstance(event.data, Snapshot):
            self._remember(event.data)
        elif isinstance(event.data, Deleted):
            self._memory.forget(event.data.name)
