"""The resilient store's link to the shared store: up, or degraded while one task tries to get it back.

A call that raises `StoreUnavailableError` turns the store *degraded*, and so does one that gets no answer within
`timeout_s` (`bounded`): a hung Redis costs a request that long, once. A background task retries the shared store,
backing off from `retry_min_s` to `retry_max_s`; `ping()` and a successful admin write try too. The first that gets
an answer checks the store epoch (restoring what a reset lost, `breaker_service/store/restorer.py`), declares the
config-file breakers again and switches back to the shared store. The local, degraded-era state is then dropped:
shared state wins, and a `resync` event tells every listener to read snapshots again. What the local machines
counted during the outage is not merged back; every replica counted on its own, so no merge would be right.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, TypeVar

import structlog

from breaker_service.errors import NotReplicatedError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Mapping

    from breaker_client.protocol.models import BreakerConfig
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.fallback_resilient import LocalFallback
    from breaker_service.store.restorer import Restorer

_T = TypeVar("_T")

log = structlog.get_logger("breaker_service.store")


class SharedLink:
    """Whether the shared store answers; while it does not, one task retries it until it does."""

    def __init__(
        self,
        shared: RedisStore,
        restorer: Restorer,
        declared: Mapping[str, BreakerConfig],
        local: LocalFallback,
        *,
        retry_min_s: float,
        retry_max_s: float,
        timeout_s: float,
    ) -> None:
        self._shared = shared
        self._restorer = restorer
        self._declared = declared
        self._local = local
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._timeout_s = timeout_s
        self._shared_started = False
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def degraded(self) -> bool:
        return not self._healthy.is_set()

    async def start(self) -> None:
        """Start the shared store and read its epoch; if it is unreachable, start degraded and keep trying."""
        try:
            await self.bounded(self._shared.start())
            self._shared_started = True
            await self.bounded(self._restorer.check())
        except StoreUnavailableError as exc:
            self.enter_degraded(exc)
        self._restorer.start_watching(lambda: not self.degraded)

    async def close(self) -> None:
        """Stop retrying and watching the epoch (the shared store itself is its owner's to close)."""
        self._closed = True
        await self._restorer.close()
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery

    async def ping(self) -> bool:
        """Whether the shared store answers now; an answer ends a degraded spell, a failure starts one."""
        if self.degraded:
            return await self.reconnect()
        try:
            answered = await self.bounded(self._shared.ping())
        except StoreUnavailableError:
            answered = False
        if answered:
            return True
        self.enter_degraded(StoreUnavailableError("the store does not answer PING"))
        return False

    async def wait_until_up(self) -> None:
        await self._healthy.wait()

    async def bounded(self, call: Awaitable[_T]) -> _T:
        """`call`, given up after the store timeout (a hung Redis; a pool with no free connection)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError as exc:
            raise StoreUnavailableError(f"the store did not answer within {self._timeout_s} s") from exc

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Around an admin write: a failure starts a degraded spell, a success tries to end one."""
        try:
            yield
        except NotReplicatedError:
            raise  # applied: the store answers
        except StoreUnavailableError as exc:
            self.enter_degraded(exc)
            raise
        if self.degraded:
            await self.reconnect()

    def enter_degraded(self, error: StoreUnavailableError) -> None:
        if self.degraded or self._closed:
            return
        self._healthy.clear()
        log.warning("store degraded: answering from local state", store=self._shared.kind, error=error.message)
        self._recovery = asyncio.get_running_loop().create_task(self._retry(), name="resilient-store-retry")

    async def reconnect(self) -> bool:
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
            dropped = self._local.drop()
            self._healthy.set()
            if self._recovery is not None and self._recovery is not asyncio.current_task():
                self._recovery.cancel()
            self._recovery = None
            log.warning(
                "store recovered: back to shared state", store=self._shared.kind, local_breakers_dropped=dropped
            )
            with contextlib.suppress(StoreUnavailableError):
                # Listeners may hold what this replica's local machines made up: they read the shared state again.
                await self.bounded(self._shared.recovery.publish_resync("store recovered: read shared state again"))
        return True

    async def _retry(self) -> None:
        delay = self._retry_min_s
        while self.degraded:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
            await self.reconnect()
