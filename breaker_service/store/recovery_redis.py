"""What restoring after a store reset needs from Redis (breaker_service/store/restorer.py has the rules).

The epoch key, `restore.lua`, the time a force has left, the forced degradation mode, `maxmemory-policy`, and a
`resync` event for every replica's listeners.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Final

import msgspec

from breaker_service.degradation import Mode
from breaker_service.errors import StoreUnavailableError
from breaker_service.events import EVENTS_CHANNEL, Resync, StoreEvent
from breaker_service.store.connection_redis import unavailable
from breaker_service.store.keys import EPOCH_KEY, MODE_CHANGE_KEY, MODE_FORCED_KEY, REGISTRY_KEY, state_key
from breaker_service.store.recollection import ForcedMode

if TYPE_CHECKING:
    from breaker_service.store.connection_redis import RedisClient
    from breaker_service.store.recollection import Recollection
    from breaker_service.store.scripts_redis import BreakerScripts

_ENCODER: Final = msgspec.json.Encoder()


class RedisRecovery:
    """Redis reads and writes for noticing a reset and restoring after it; every error is StoreUnavailableError."""

    def __init__(self, redis: RedisClient, scripts: BreakerScripts, *, registry: str | None) -> None:
        self._redis = redis
        self._scripts = scripts
        self._registry = registry
        """`brk:registry` for restore.lua to add names to; None on Cluster (another slot: added here instead)."""

    async def epoch(self) -> str:
        """The store's epoch, written (a random id) when there is none: a Redis that lost everything gets a new one."""
        with unavailable():
            found = await self._redis.get(EPOCH_KEY)
            if found is None:
                await self._redis.set(EPOCH_KEY, secrets.token_hex(8), nx=True)
                found = await self._redis.get(EPOCH_KEY)
        if found is None:
            raise StoreUnavailableError("the store epoch vanished as it was written")
        return _text(found)

    async def restore(self, name: str, memory: Recollection, *, epoch: str, after_reset: bool) -> bool:
        """Put back a breaker the store lost (restore.lua); True when this call restored it.

        `after_reset`: the store lost everything (the epoch changed); else it lost writes (only the same incarnation
        is restored; a breaker missing or made again was deleted).
        """
        with unavailable():
            if self._registry is None and after_reset:
                await self._redis.sadd(REGISTRY_KEY, name)
            return await self._scripts.restore(
                name, memory, epoch=epoch, after_reset=after_reset, registry=self._registry
            )

    async def force_left_ms(self, name: str) -> int | None:
        """The time a force on `name` has left (ms, by Redis time); None when it has no end or there is none."""
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            pipe.hget(state_key(name), "forced_until_ms")
            pipe.time()
            until_ms, (now_s, now_us) = await pipe.execute()
        if not until_ms or int(until_ms) == 0:
            return None
        return max(0, int(until_ms) - (int(now_s) * 1000 + int(now_us) // 1000))

    async def forced_mode(self) -> ForcedMode | None:
        """The forced degradation mode, its reason, the actor of the last change and the time it has left."""
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(MODE_FORCED_KEY)
            pipe.pttl(MODE_FORCED_KEY)
            pipe.hget(MODE_CHANGE_KEY, "actor")
            forced, ttl_ms, actor = await pipe.execute()
        if not forced:
            return None
        return ForcedMode(
            mode=Mode(_text(forced[b"mode"])),
            reason=_text(forced[b"reason"]),
            actor=_text(actor) or None if actor else None,
            ttl_ms=int(ttl_ms) if int(ttl_ms) > 0 else None,
        )

    async def eviction_policy(self) -> str:
        """Redis `maxmemory-policy` (`noeviction` keeps every key; anything else may drop a force)."""
        with unavailable():
            found: dict[Any, Any] = await self._redis.config_get("maxmemory-policy")
        return _text(next(iter(found.values()), b"unknown"))

    async def publish_resync(self, reason: str) -> None:
        """Tell every replica's listeners to read snapshots again (after this replica answered from local state)."""
        event = StoreEvent(kind="resync", data=Resync(name=None, reason=reason))
        with unavailable():
            await self._redis.publish(EVENTS_CHANNEL, _ENCODER.encode(event))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
