"""The in-memory store: the pure-Python machine behind the store interface, for one replica only."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

from breaker_client.protocol.machine import BreakerMachine, Event
from breaker_client.protocol.models import (
    BreakerConfig,
    ConfigPatch,
    Decision,
    Deleted,
    FailureSignal,
    Outcome,
    Snapshot,
    State,
    Transition,
)
from breaker_service.clock import Clock, wall_clock_ms
from breaker_service.errors import BreakerCapError, UnknownBreakerError
from breaker_service.events import StoreEvent
from breaker_service.store.audit import AuditEntry, AuditLog
from breaker_service.store.breaker_base import force_action, patched
from breaker_service.store.idempotency_memory import MemoryIdempotencyStore
from breaker_service.store.status_memory import MemoryStatusStore
from breaker_service.store.window import machine_window_totals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from breaker_service.store.breaker_base import ConfigResolver

HISTORY_MAX: Final = 1000


class MemoryStore:
    """Breakers held in this process; the same semantics as the Lua scripts."""

    def __init__(
        self,
        *,
        resolve_config: ConfigResolver,
        max_breakers: int = 10_000,
        clock: Clock = wall_clock_ms,
        auto_create: bool = True,
    ):
        self._resolve_config = resolve_config
        self._auto_create = auto_create
        self._max_breakers = max_breakers
        self._clock = clock
        self._machines: dict[str, BreakerMachine] = {}
        self._history: dict[str, deque[Transition]] = {}
        self._subscribers: set[asyncio.Queue[StoreEvent]] = set()
        self._status = MemoryStatusStore(clock=clock, publish=self._publish)
        self._idempotency = MemoryIdempotencyStore(clock=clock)
        self._audit = AuditLog()

    @property
    def kind(self) -> str:
        return "memory"

    @property
    def degraded(self) -> bool:
        return False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._subscribers.clear()

    async def ping(self) -> bool:
        return True

    async def declare(self, name: str, config: BreakerConfig) -> None:
        if name not in self._machines:
            self._create(name, config)

    async def names(self) -> list[str]:
        return sorted(self._machines)

    async def snapshot(self, name: str) -> Snapshot:
        return self._read(self._existing(name))

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        chosen = self._machines if names is None else set(names) & self._machines.keys()
        return [self._read(self._machines[name]) for name in sorted(chosen)]

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        machine = self._machines.get(name) or self._create(name, config)
        return self._replace_config(machine, config, actor=actor, reason=reason)

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str | None) -> Snapshot:
        machine = self._existing(name)
        return self._replace_config(machine, patched(machine.config, patch), actor=actor, reason=reason)

    def _replace_config(
        self, machine: BreakerMachine, config: BreakerConfig, *, actor: str | None, reason: str | None
    ) -> Snapshot:
        name = machine.name
        machine.config = config
        now_ms = self._clock()
        snapshot = self._read(machine, now_ms)
        state = snapshot.effective_state
        audit = Transition(
            name=name,
            from_state=state,
            to_state=state,
            at=now_ms / 1000,
            reason=reason or "config updated",
            actor=actor,
            generation=machine.generation,
        )
        self._history[name].appendleft(audit)
        self._audit.append(name, "configure", actor, audit.reason, now_ms / 1000)
        self._publish(StoreEvent(kind="config", data=snapshot))
        return snapshot

    async def delete(self, name: str, *, actor: str | None, reason: str | None) -> None:
        self._existing(name)
        del self._machines[name]
        del self._history[name]
        self._audit.append(name, "delete", actor, reason, self._clock() / 1000)
        self._publish(StoreEvent(kind="deleted", data=Deleted(name=name)))

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        machine = self._get_or_create(name, admin=False)
        now_ms = self._clock()
        decision, events = machine.acquire(now_ms, lease=lease)
        self._emit(machine, events, now_ms)
        return decision

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        machine = self._get_or_create(name, admin=False)
        now_ms = self._clock()
        self._emit(machine, machine.record(outcome, now_ms), now_ms)
        return machine.view(now_ms)

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        machine = self._get_or_create(name)
        now_ms = self._clock()
        self._emit(machine, machine.force(mode, reason, ttl_s, actor, now_ms), now_ms)
        self._audit.append(name, force_action(mode), actor, reason, now_ms / 1000)
        return machine.view(now_ms)

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        machine = self._existing(name)
        now_ms = self._clock()
        self._emit(machine, machine.reset(reason, actor, now_ms), now_ms)
        self._audit.append(name, "reset", actor, reason, now_ms / 1000)
        return machine.view(now_ms)

    async def history(self, name: str, *, limit: int = 100) -> list[Transition]:
        self._existing(name)
        return list(self._history[name])[:limit]

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        return self._audit.newest(limit)

    async def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        return machine_window_totals(self._existing(name), self._clock(), window_s)

    def status_store(self) -> MemoryStatusStore:
        """Probe results and the degradation mode in this process, on this store's clock and event subscribers."""
        return self._status

    def idempotency_store(self) -> MemoryIdempotencyStore:
        """Idempotency-Key answers, in this process."""
        return self._idempotency

    async def events(self, subscribed: asyncio.Event | None = None) -> AsyncIterator[StoreEvent]:
        queue: asyncio.Queue[StoreEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        if subscribed is not None:
            subscribed.set()
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # -- internals ----------------------------------------------------------------------------------------------

    def _existing(self, name: str) -> BreakerMachine:
        machine = self._machines.get(name)
        if machine is None:
            raise UnknownBreakerError(f"no breaker named {name!r}")
        return machine

    def _get_or_create(self, name: str, *, admin: bool = True) -> BreakerMachine:
        machine = self._machines.get(name)
        if machine is not None:
            return machine
        if not (admin or self._auto_create):
            raise UnknownBreakerError(f"no breaker named {name!r} (only admins create breakers here)")
        return self._create(name, self._resolve_config(name))

    def _create(self, name: str, config: BreakerConfig) -> BreakerMachine:
        if len(self._machines) >= self._max_breakers:
            raise BreakerCapError(f"cannot create {name!r}: the cap of {self._max_breakers} breakers is reached")
        machine = BreakerMachine(name=name, config=config)
        self._machines[name] = machine
        self._history[name] = deque(maxlen=HISTORY_MAX)
        return machine

    def _read(self, machine: BreakerMachine, now_ms: int | None = None) -> Snapshot:
        now_ms = self._clock() if now_ms is None else now_ms
        snapshot, events = machine.snapshot(now_ms)
        self._emit(machine, events, now_ms)
        return snapshot

    def _emit(self, machine: BreakerMachine, events: list[Event], now_ms: int) -> None:
        """Publish what an operation did; after a transition, the snapshot it left behind (as the scripts do)."""
        transitioned = False
        for event in events:
            if isinstance(event, FailureSignal):
                self._publish(StoreEvent(kind="failures", data=event))
            else:
                transitioned = True
                self._history[event.name].appendleft(event)
                self._publish(StoreEvent(kind="state", data=event))
        if transitioned:
            self._publish(StoreEvent(kind="breaker", data=machine.view(now_ms)))

    def _publish(self, event: StoreEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
