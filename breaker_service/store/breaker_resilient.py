"""A shared store that keeps answering from local state while the shared store is unreachable.

`ResilientStore` wraps the shared store (Redis) and delegates every call to it, remembering the last snapshot it
answered for each breaker. When a call raises `StoreUnavailableError` the store turns *degraded*:

- acquire and record run on a local `BreakerMachine` per breaker, seeded from that last snapshot (config, state,
  force, generation, counters; an OPEN breaker keeps the open time it had left), or from the declared or resolved
  config for a breaker never seen. Decisions say `degraded: true`; permits granted locally are prefixed `local-`,
  so the shared store never takes one for its own.
- snapshot, snapshots and names answer from the breakers this replica knows; history raises
  `StoreUnavailableError`: it lives only in the shared store.
- admin writes (configure, delete, force, reset) always go to the shared store, so they fail with
  `StoreUnavailableError` (503 ORC_005) while it is down: they are never kept only locally.

A background task retries the shared store, backing off from `retry_min_s` to `retry_max_s`; `ping()` and a
successful admin write try too. The first that gets an answer checks the store epoch (restoring what a reset lost,
`breaker_service/store/restorer.py`), declares the config-file breakers again and switches back to the shared
store. The local, degraded-era state is then dropped: shared state wins, and a `resync` event tells every listener
to read snapshots again. What the local machines counted during the outage is not merged back; every replica
counted on its own, so no merge would be right.

Until it has read its store once (the epoch), the replica knows nothing it could answer from: acquire, record,
reads and admin writes answer 503 ORC_005 (never a guess from defaults). While degraded, a breaker the replica has
never seen follows its config's `when_unknown`: "allow" runs a fresh local machine, "deny" refuses.

No call waits on the shared store longer than `timeout_s`: a hung Redis costs a request that long, once, and the
store turns degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec
import structlog

from breaker_client.protocol.machine import BreakerMachine, refusal_when_unknown
from breaker_client.protocol.models import (
    BreakerConfig,
    ConfigPatch,
    Counts,
    Decision,
    Deleted,
    Force,
    Outcome,
    Snapshot,
    State,
    Transition,
)
from breaker_service.clock import Clock, wall_clock_ms
from breaker_service.errors import BreakerCapError, NotReplicatedError, StoreUnavailableError, UnknownBreakerError
from breaker_service.store.connection_redis import raise_if_cancelled
from breaker_service.store.recollection import ReplicaMemory
from breaker_service.store.restorer import Restorer
from breaker_service.store.window import machine_window_totals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from breaker_service.events import StoreEvent
    from breaker_service.store.audit import AuditEntry
    from breaker_service.store.breaker_base import ConfigResolver
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.idempotency_base import IdempotencyStore
    from breaker_service.store.status_base import StatusStore

_T = TypeVar("_T")

LOCAL_PERMIT_PREFIX: Final = "local-"


log = structlog.get_logger("breaker_service.store")


class ResilientStore:
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
        self._shared = shared
        self._resolve_config = resolve_config
        self._max_breakers = max_breakers
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._memory = ReplicaMemory(max_breakers=max_breakers)
        self._known = self._memory.known
        self._declared = self._memory.declared
        self._restorer = Restorer(shared, self._memory, clock=clock, check_interval_s=epoch_check_s)
        shared.on_missing = self._restorer.on_missing
        self._local: dict[str, BreakerMachine] = {}
        self._shared_started = False
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def kind(self) -> str:
        return self._shared.kind

    @property
    def degraded(self) -> bool:
        return not self._healthy.is_set()

    @property
    def reached(self) -> bool:
        """Whether this replica has read its store at least once (before that it answers 503, never a guess)."""
        return self._restorer.epoch is not None

    async def start(self) -> None:
        """Start the shared store and read its epoch; if it is unreachable, start degraded and keep trying."""
        try:
            await self._bounded(self._shared.start())
            self._shared_started = True
            await self._bounded(self._restorer.check())
        except StoreUnavailableError as exc:
            self._enter_degraded(exc)
        self._restorer.start_watching(lambda: not self.degraded)

    async def close(self) -> None:
        self._closed = True
        await self._restorer.close()
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await self._shared.close()

    async def ping(self) -> bool:
        """Whether the shared store answers now; an answer ends a degraded spell, a failure starts one."""
        if self.degraded:
            return await self._reconnect()
        try:
            answered = await self._bounded(self._shared.ping())
        except StoreUnavailableError:
            answered = False
        if answered:
            return True
        self._enter_degraded(StoreUnavailableError("the store does not answer PING"))
        return False

    async def declare(self, name: str, config: BreakerConfig) -> None:
        """Declare on the shared store now, or when it answers again; and again after every outage."""
        self._declared[name] = config
        if not self.degraded:
            try:
                await self._bounded(self._shared.declare(name, config))
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)

    # -- reads: local while degraded ----------------------------------------------------------------------------

    async def names(self) -> list[str]:
        self._require_reached()
        if not self.degraded:
            try:
                return await self._bounded(self._shared.names())
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
        return sorted(self._local.keys() | self._known.keys())

    async def snapshot(self, name: str) -> Snapshot:
        self._require_reached()
        if not self.degraded:
            try:
                return self._remember(await self._bounded(self._shared.snapshot(name)))
            except UnknownBreakerError:
                self._known.pop(name, None)
                raise
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
        if name not in self._local and name not in self._known:
            raise StoreUnavailableError(f"the store is unreachable and this replica has not seen {name!r}")
        return self._local_snapshot(name)

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        self._require_reached()
        if not self.degraded:
            try:
                return [self._remember(snapshot) for snapshot in await self._bounded(self._shared.snapshots(names))]
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
        known = self._local.keys() | self._known.keys()
        return [self._local_snapshot(name) for name in sorted(known if names is None else known & set(names))]

    async def history(self, name: str, *, limit: int = 100) -> list[Transition]:
        if self.degraded:
            raise StoreUnavailableError("the store is unreachable, and history lives only there")
        try:
            return await self._bounded(self._shared.history(name, limit=limit))
        except StoreUnavailableError as exc:
            self._enter_degraded(exc)
            raise

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        if self.degraded:
            raise StoreUnavailableError("the store is unreachable, and the audit trail lives only there")
        try:
            return await self._shared.audit(limit=limit)
        except StoreUnavailableError as exc:
            self._enter_degraded(exc)
            raise

    async def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        if not self.degraded:
            try:
                return await self._shared.window_totals(name, window_s)
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
        if name not in self._local:
            raise StoreUnavailableError(f"the store is unreachable and {name!r} has no local window")
        return machine_window_totals(self._local[name], self._clock(), window_s)

    # -- the hot path -----------------------------------------------------------------------------------------

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        self._require_reached()
        if not self.degraded:
            try:
                decision = await self._bounded(self._shared.acquire(name, lease=lease))
                if await self._restorer.lost_writes(name, decision.generation):
                    decision = await self._bounded(self._shared.acquire(name, lease=lease))
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
            else:
                self._remember_decision(name, decision)
                return decision
        if name not in self._local and name not in self._known:
            refusal = refusal_when_unknown(self._config(name).when_unknown, self._retry_max_s)
            if refusal is not None:
                return refusal
        decision, _ = self._machine(name).acquire(self._clock(), lease=lease)
        permit = None if decision.permit is None else LOCAL_PERMIT_PREFIX + decision.permit
        return msgspec.structs.replace(decision, permit=permit, degraded=True)

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        self._require_reached()
        if not self.degraded:
            try:
                return self._remember(await self._bounded(self._shared.record(name, outcome)))
            except StoreUnavailableError as exc:
                self._enter_degraded(exc)
        if outcome.permit is not None and outcome.permit.startswith(LOCAL_PERMIT_PREFIX):
            outcome = msgspec.structs.replace(outcome, permit=outcome.permit.removeprefix(LOCAL_PERMIT_PREFIX))
        machine = self._machine(name)
        now_ms = self._clock()
        machine.record(outcome, now_ms)
        return machine.view(now_ms)

    # -- admin writes: the shared store only ------------------------------------------------------------------

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        async with self._writing():
            return self._remember(await self._shared.configure(name, config, actor=actor, reason=reason))

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str | None) -> Snapshot:
        async with self._writing():
            return self._remember(await self._shared.patch(name, patch, actor=actor, reason=reason))

    async def delete(self, name: str, *, actor: str | None, reason: str | None) -> None:
        async with self._writing():
            await self._shared.delete(name, actor=actor, reason=reason)
        self._memory.forget(name)

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        async with self._writing():
            return self._remember(await self._shared.force(name, mode, reason=reason, ttl_s=ttl_s, actor=actor))

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        async with self._writing():
            return self._remember(await self._shared.reset(name, reason=reason, actor=actor))

    async def eviction_policy(self) -> str:
        """The shared store's `maxmemory-policy`."""
        return await self._bounded(self._shared.recovery.eviction_policy())

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
        await self._healthy.wait()
        try:
            async for event in self._shared.events(subscribed):
                self._learn(event)
                yield event
        except StoreUnavailableError:
            # redis-py may turn the consumer's cancellation into a connection error; a loop that survives store
            # errors on purpose (the hub's) would otherwise subscribe again, for ever.
            raise_if_cancelled()
            raise

    def _learn(self, event: StoreEvent) -> None:
        if isinstance(event.data, Snapshot):
            self._remember(event.data)
        elif isinstance(event.data, Deleted):
            self._memory.forget(event.data.name)

    # -- degraded spells ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """Around an admin write: a failure starts a degraded spell, a success tries to end one."""
        try:
            yield
        except NotReplicatedError:
            raise  # applied: the store answers
        except StoreUnavailableError as exc:
            self._enter_degraded(exc)
            raise
        if self.degraded:
            await self._reconnect()

    def _enter_degraded(self, error: StoreUnavailableError) -> None:
        if self.degraded or self._closed:
            return
        self._healthy.clear()
        log.warning("store degraded: answering from local state", store=self.kind, error=error.message)
        self._recovery = asyncio.get_running_loop().create_task(self._retry(), name="resilient-store-retry")

    async def _retry(self) -> None:
        delay = self._retry_min_s
        while self.degraded:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
            await self._reconnect()

    async def _reconnect(self) -> bool:
        """One attempt to go back to the shared store: start, ping, check the epoch, declare; True when back."""
        try:
            async with asyncio.timeout(self._timeout_s * 4):
                if not self._shared_started:
                    await self._shared.start()
                    self._shared_started = True
                if not await self._shared.ping():
                    return False
                await self._restorer.check()
                for name, config in list(self._declared.items()):
                    await self._shared.declare(name, config)
        except (StoreUnavailableError, TimeoutError):
            return False
        if self.degraded:
            dropped = len(self._local)
            self._local.clear()
            self._healthy.set()
            if self._recovery is not None and self._recovery is not asyncio.current_task():
                self._recovery.cancel()
            self._recovery = None
            log.warning("store recovered: back to shared state", store=self.kind, local_breakers_dropped=dropped)
            with contextlib.suppress(StoreUnavailableError):
                # Listeners may hold what this replica's local machines made up: they read the shared state again.
                await self._bounded(self._shared.recovery.publish_resync("store recovered: read shared state again"))
        return True

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        """`call`, given up after the store timeout (a hung Redis; a pool with no free connection)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError as exc:
            raise StoreUnavailableError(f"the store did not answer within {self._timeout_s} s") from exc

    def _require_reached(self) -> None:
        if not self.reached:
            raise StoreUnavailableError("this replica has not reached its store yet: it knows no breaker's state")

    def _config(self, name: str) -> BreakerConfig:
        return self._declared.get(name) or self._resolve_config(name)

    # -- local state ------------------------------------------------------------------------------------------

    def _machine(self, name: str) -> BreakerMachine:
        """The local machine for `name`, seeded on first use from what this replica last saw."""
        machine = self._local.get(name)
        if machine is not None:
            return machine
        if len(self._local) >= self._max_breakers:
            raise BreakerCapError(f"cannot track {name!r} locally: the cap of {self._max_breakers} breakers is reached")
        known = self._known.get(name)
        if known is not None:
            machine = _seed(known.snapshot, known.seen_ms)
        else:
            machine = BreakerMachine(name=name, config=self._config(name))
        self._local[name] = machine
        return machine

    def _local_snapshot(self, name: str) -> Snapshot:
        snapshot, _ = self._machine(name).snapshot(self._clock())
        return snapshot

    def _remember(self, snapshot: Snapshot) -> Snapshot:
        self._restorer.saw(snapshot)
        self._memory.remember(snapshot, self._clock())
        return snapshot

    def _remember_decision(self, name: str, decision: Decision) -> None:
        """Follow a decision that shows a generation other than the remembered one.

        A decision carries only the effective state, the generation and `retry_after_s`, so the counters become
        those of a fresh entry into that state, and the config stays the last one seen (or the resolved one).
        """
        known = self._known.get(name)
        if known is not None and known.snapshot.generation == decision.generation:
            return
        is_open = decision.state is State.OPEN
        forced = State.OPEN if is_open and decision.retry_after_s is None else None  # only a force has no end
        self._remember(
            Snapshot(
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
        )


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
