"""Noticing that the store lost data, and putting back what this replica knows (DESIGN.md v1.1).

The store keeps an epoch (`brk:epoch`, a random id written when none exists) and every breaker an incarnation
(random per creation). This replica reads the epoch when it starts, every `check_interval_s`, and whenever a
script says a breaker it knows is missing:

- a changed or missing epoch: the store lost everything (restarted empty, FLUSHALL). Every breaker this replica
  knows (last snapshot: runtime config, force with its actor, reason and time left) and every config-file breaker
  is restored, and the forced degradation mode; a breaker a request asks for is restored before the request runs.
- the same epoch, a breaker missing: it was deleted; it is forgotten, never restored.
- the same epoch, a breaker with the incarnation this replica knew but a lower generation: the store lost writes
  (a failover to a Redis replica without them): that breaker is restored.

Restoring is `restore.lua`, idempotent: however many replicas restore at once, each breaker gets one history entry
(`restored after store reset`) and listeners one `resync` event; its generation ends above any a replica saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import structlog

from breaker_service.degradation import Mode
from breaker_service.errors import StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from breaker_client.protocol.models import Snapshot
    from breaker_service.clock import Clock
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.recollection import ForcedMode, Recollection, ReplicaMemory

RESTORE_REASON: Final = "restored after store reset"

log = structlog.get_logger("breaker_service.store")


class Restorer:
    """Watches the store epoch for one replica and restores what the store lost."""

    def __init__(self, shared: RedisStore, memory: ReplicaMemory, *, clock: Clock, check_interval_s: float) -> None:
        self._shared = shared
        self._recovery = shared.recovery
        self._memory = memory
        self._clock = clock
        self._check_interval_s = check_interval_s
        self.epoch: str | None = None
        """The epoch this replica last saw; None until it has read the store once."""
        self._mode: ForcedMode | None = None
        self._mode_seen_ms = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start_watching(self, healthy: Callable[[], bool]) -> None:
        """Check the epoch every `check_interval_s` while `healthy()`, so a reset is noticed without a request."""
        self._spawn(self._watch(healthy), "store-epoch-watch")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> None:
        """Read the epoch (and the forced mode); restore everything when the store lost it."""
        epoch = await self._recovery.epoch()
        if self.epoch is not None and epoch != self.epoch:
            await self._restore_all(epoch)
            return
        self.epoch = epoch
        self._mode = await self._recovery.forced_mode()
        self._mode_seen_ms = self._clock()

    async def on_missing(self, name: str) -> bool:
        """A script found no `name`: restore it if the store was reset (True), else forget it (it was deleted)."""
        epoch = await self._recovery.epoch()
        if self.epoch is None or epoch == self.epoch:
            self._memory.forget(name)
            return False
        memory = self._memory.recollection(name, self._clock())
        if memory is not None:
            await self._recovery.restore(name, memory, epoch=epoch, after_reset=True)
        self._spawn(self._restore_all_logged(epoch), "store-restore")
        return memory is not None

    async def lost_writes(self, name: str, generation: int) -> bool:
        """After an acquire: True when `name` answered below the generation this replica saw and was restored."""
        memory = self._lost(name, generation)
        if memory is None or self.epoch is None:
            return False
        restored = await self._recovery.restore(name, memory, epoch=self.epoch, after_reset=False)
        self._restored(name, restored)
        if restored:
            return True
        # Another breaker of that name: deleted and made again, or made from defaults by a replica that knew
        # nothing after the store was reset, before this replica's next epoch check. The epoch tells.
        epoch = await self._recovery.epoch()
        if epoch == self.epoch:
            return False
        await self._recovery.restore(name, memory, epoch=epoch, after_reset=True)
        self._spawn(self._restore_all_logged(epoch), "store-restore")
        return True

    def saw(self, snapshot: Snapshot) -> None:
        """Before a snapshot is remembered: one below the generation seen (same incarnation) is restored."""
        memory = self._lost(snapshot.name, snapshot.generation, snapshot.incarnation)
        if memory is not None and self.epoch is not None:
            self._spawn(self._restore_lost(snapshot.name, memory, self.epoch), "store-restore-lost")

    # -- internals ----------------------------------------------------------------------------------------------

    def _lost(self, name: str, generation: int, incarnation: str | None = None) -> Recollection | None:
        known = self._memory.known.get(name)
        if known is None or known.snapshot.incarnation is None or generation >= known.snapshot.generation:
            return None
        if incarnation is not None and incarnation != known.snapshot.incarnation:
            return None  # deleted and made again: a new breaker, nothing lost
        return self._memory.recollection(name, self._clock())

    async def _restore_lost(self, name: str, memory: Recollection, epoch: str) -> None:
        with contextlib.suppress(StoreUnavailableError):
            self._restored(name, await self._recovery.restore(name, memory, epoch=epoch, after_reset=False))

    def _restored(self, name: str, restored: bool) -> None:
        if restored:
            log.warning("breaker restored: the store had lost writes", breaker=name)

    async def _restore_all(self, epoch: str) -> None:
        async with self._lock:
            if self.epoch == epoch:
                return  # restored meanwhile by another task of this replica
            now_ms = self._clock()
            names = self._memory.names()
            log.warning("store reset detected: restoring what this replica knows", breakers=len(names))
            restored = 0
            for name in names:
                memory = self._memory.recollection(name, now_ms)
                if memory is not None:
                    restored += await self._recovery.restore(name, memory, epoch=epoch, after_reset=True)
            await self._restore_mode(now_ms)
            self.epoch = epoch
            log.warning("store restored", breakers=len(names), restored_here=restored)

    async def _restore_all_logged(self, epoch: str) -> None:
        try:
            await self._restore_all(epoch)
        except StoreUnavailableError as exc:
            log.warning("store restore interrupted; the next epoch check resumes it", error=exc.message)

    async def _restore_mode(self, now_ms: int) -> None:
        mode = self._mode
        if mode is None or await self._recovery.forced_mode() is not None:
            return
        ttl_ms = None if mode.ttl_ms is None else mode.ttl_ms - (now_ms - self._mode_seen_ms)
        if ttl_ms is not None and ttl_ms <= 0:
            return
        await self._shared.status_store().force(
            mode.mode,
            reason=mode.reason,
            actor=mode.actor,
            ttl_s=None if ttl_ms is None else ttl_ms / 1000,
            derived=Mode.NORMAL,
            derived_reason=RESTORE_REASON,
        )

    async def _watch(self, healthy: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            if self.epoch is None or not healthy():
                continue
            try:
                async with asyncio.timeout(max(self._check_interval_s, 2.0) * 5):
                    await self.check()
            except (StoreUnavailableError, TimeoutError) as exc:
                log.info("store epoch check failed", error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
