"""`RedisQueueStore`: one stream and consumer group per queue, changed only by `lua/queue_*.lua` (one EVALSHA each).

Every key of queue `name` carries the hash tag `{name}` (`q:{name}:...`), so each script touches one cluster slot.
Time is Redis `TIME`, read inside the scripts. The store shares the breaker store's Redis client and closes it only
when told it owns it. While Redis is unreachable every operation raises `StoreUnavailableError` (503 ORC_005):
the queue is the durable part, so nothing is kept locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import math
from typing import TYPE_CHECKING, Any, Final

import msgspec

from breaker_client.protocol.queue_models import Enqueued, Job, Nacked, QueueStats
from breaker_service.errors import StoreUnavailableError
from breaker_service.store.connection_redis import unavailable
from breaker_service.store.keys import idem_key, queue_keys
from breaker_service.store.queue_base import (
    DEFAULT_BOUNDS,
    IDEMPOTENCY_TTL_S,
    SWEEP_LIMIT,
    QueueBounds,
    QueueLimits,
    queue_full,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from redis.commands.core import AsyncScript

    from breaker_service.store.connection_redis import RedisClient

GROUP: Final = "workers"
"""The consumer group of every queue."""


def _read(name: str) -> bytes:
    return importlib.resources.files("breaker_service").joinpath(f"lua/{name}.lua").read_bytes()


_PRELUDE: Final = _read("queue_lib")
_OPERATIONS: Final = ("enqueue", "claim", "ack", "nack", "stats", "purge")
SOURCES: Final = {op: _PRELUDE + b"\n" + _read(f"queue_{op}") for op in _OPERATIONS}
_FULL: Final = 2
"""queue_enqueue.lua's flag for "the queue is full, nothing added"."""


class RedisQueueStore:
    """The `QueueStore` on Redis (standalone, Sentinel or Cluster); the client must not decode responses."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        max_attempts: Callable[[str], int] | None = None,
        idempotency_ttl_s: float = IDEMPOTENCY_TTL_S,
        owns_client: bool = False,
        bounds: QueueBounds = DEFAULT_BOUNDS,
        timeout_s: float = 2.0,
    ) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts or QueueLimits()
        self._bounds = bounds
        self._idempotency_ttl_ms = str(math.ceil(idempotency_ttl_s * 1000))
        self._owns_client = owns_client
        self._scripts: dict[str, AsyncScript] = {op: redis.register_script(src) for op, src in SOURCES.items()}

    @property
    def kind(self) -> str:
        return "redis"

    async def start(self) -> None:
        """Load the scripts now if Redis answers; if not, the first call loads them (NOSCRIPT fallback)."""
        with contextlib.suppress(StoreUnavailableError), unavailable():
            for script in self._scripts.values():
                script.sha = await self._redis.script_load(script.script)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def enqueue(self, name: str, payload: bytes, idempotency_key: str | None = None) -> Enqueued:
        keys: tuple[str, ...] = queue_keys(name)
        args: tuple[str | bytes, ...] = (GROUP, payload, str(self._bounds.max_jobs))
        if idempotency_key is not None:
            keys += (idem_key(name, idempotency_key),)
            args += (self._idempotency_ttl_ms,)
        reply = msgspec.convert(await self._run("enqueue", keys, args), list[bytes | int])
        if reply[1] == _FULL:
            raise queue_full(name, self._bounds.max_jobs, int(reply[2]))
        return Enqueued(id=_text(reply[0]), duplicate=reply[1] == 1)

    async def claim(self, name: str, consumer: str, *, max_jobs: int, lease_s: float) -> list[Job]:
        lease_ms = max(1, math.floor(lease_s * 1000))
        args = (
            GROUP,
            consumer,
            str(max_jobs),
            str(lease_ms),
            str(self._max_attempts(name)),
            str(SWEEP_LIMIT),
            str(self._bounds.max_claim_bytes),
        )
        flat = msgspec.convert(await self._run("claim", queue_keys(name), args), list[bytes | int])
        return [
            Job(id=_text(flat[i]), payload=msgspec.Raw(_bytes(flat[i + 1])), attempts=int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def ack(self, name: str, ids: Sequence[str]) -> int:
        return int(await self._run("ack", queue_keys(name), (GROUP, *ids)))

    async def nack(
        self, name: str, ids: Sequence[str], *, delay_s: float, error: str | None, count_attempt: bool = True
    ) -> Nacked:
        delay_ms = str(math.floor(delay_s * 1000))
        counted = "1" if count_attempt else "0"
        args = (GROUP, delay_ms, error or "", str(self._max_attempts(name)), counted, *ids)
        requeued, dead = msgspec.convert(await self._run("nack", queue_keys(name), args), tuple[int, int])
        return Nacked(requeued=requeued, dead=dead)

    async def stats(self, name: str) -> QueueStats | None:
        counts = msgspec.convert(await self._run("stats", queue_keys(name), (GROUP,)), list[int])
        if not counts:
            return None
        ready, pending, dead, delayed = counts
        return QueueStats(ready=ready, pending=pending, dead=dead, delayed=delayed)

    async def purge_dead(self, name: str) -> int | None:
        dropped = int(await self._run("purge", queue_keys(name), (GROUP,)))
        return None if dropped < 0 else dropped

    async def _run(self, operation: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        # Bounded as a whole (a pooled connection, a handshake, the script), so a hung Redis costs one timeout.
        try:
            async with asyncio.timeout(self._timeout_s):
                with unavailable():
                    return await self._scripts[operation](keys=keys, args=args)
        except TimeoutError as exc:
            raise StoreUnavailableError(f"Redis did not answer within {self._timeout_s} s") from exc


def _text(value: bytes | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
