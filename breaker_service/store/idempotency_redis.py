"""`RedisIdempotencyStore`: Idempotency-Key entries shared by every replica (store/idempotency_base.py).

One key per scope, `brk:idem:{scope}` (keys.py): each script touches that one key, so it holds on Redis Cluster.
A claim is `lua/idempotency_claim.lua` (GET, else SET PX: one round trip that answers what holds the key), the end
of a claim `lua/idempotency_settle.lua` (compare the claim, then SET the answer or DEL), so a request whose claim
ran out never overwrites or frees another request's.
"""

from __future__ import annotations

import importlib.resources
import math
from typing import TYPE_CHECKING, Any, Final

import msgspec

from breaker_service.store.connection_redis import unavailable
from breaker_service.store.idempotency_base import ANSWER_TTL_S, PENDING_TTL_S, Answered, Entry, Pending
from breaker_service.store.keys import admin_idempotency_key

if TYPE_CHECKING:
    from breaker_service.store.connection_redis import RedisClient

_LUA: Final = importlib.resources.files("breaker_service").joinpath("lua")
_CLAIM: Final = _LUA.joinpath("idempotency_claim.lua").read_bytes()
_SETTLE: Final = _LUA.joinpath("idempotency_settle.lua").read_bytes()
_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(Entry).decode
_PENDING_TTL_MS: Final = str(math.ceil(PENDING_TTL_S * 1000))
_ANSWER_TTL_MS: Final = str(math.ceil(ANSWER_TTL_S * 1000))


class RedisIdempotencyStore:
    """The `IdempotencyStore` on Redis (standalone, Sentinel or Cluster); the client must not decode responses."""

    def __init__(self, redis: RedisClient) -> None:
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)

    async def claim(self, scope: str, pending: Pending) -> Entry | None:
        with unavailable():
            held: Any = await self._claim(keys=[admin_idempotency_key(scope)], args=[_ENCODE(pending), _PENDING_TTL_MS])
        return None if held is None else _DECODE(held)

    async def complete(self, scope: str, pending: Pending, answer: Answered) -> None:
        await self._end(scope, pending, _ENCODE(answer))

    async def release(self, scope: str, pending: Pending) -> None:
        await self._end(scope, pending, b"")

    async def _end(self, scope: str, pending: Pending, answer: bytes) -> None:
        with unavailable():
            await self._settle(keys=[admin_idempotency_key(scope)], args=[_ENCODE(pending), answer, _ANSWER_TTL_MS])
