"""`RedisStatusStore`: probe results and the degradation mode shared by every replica (store/status_base.py).

A probe claim is one `SET brk:{name}:probe-lease NX PX`, a result one HSET + PEXPIRE of `brk:{name}:probe` (the
breaker's slot). The mode is `lua/degradation.lua` over three `brk:{_mode}:*` keys, so settling it, forcing it and
publishing the `mode` event are one atomic step, in Redis time.
"""

from __future__ import annotations

import importlib.resources
import math
import uuid
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec

from breaker_service.degradation import Degradation, DegradationChange, Mode, ProbeResult
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.connection_redis import unavailable
from breaker_service.store.keys import MODE_CHANGE_KEY, MODE_CURRENT_KEY, MODE_FORCED_KEY, probe_key, probe_lease_key
from breaker_service.store.status_base import ModeRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

    from breaker_service.store.connection_redis import RedisClient

_SCRIPT: Final = importlib.resources.files("breaker_service").joinpath("lua/degradation.lua").read_bytes()
_MODE_KEYS: Final = (MODE_CURRENT_KEY, MODE_FORCED_KEY, MODE_CHANGE_KEY)
_ModeReply: TypeAlias = tuple[bytes, bytes, int, int, int]


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStatusStore:
    """The `StatusStore` on Redis (standalone, Sentinel or Cluster); the client must not decode responses."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self._replica = uuid.uuid4().hex[:12]
        """Written into probe leases, so an operator can tell which replica holds one."""

    async def claim_probe(self, name: str, lease_s: float) -> bool:
        with unavailable():
            return bool(await self._redis.set(probe_lease_key(name), self._replica, nx=True, px=_ms(lease_s)))

    async def save_probe(self, name: str, result: ProbeResult, ttl_s: float) -> None:
        fields = {
            "ok": int(result.ok),
            "latency_ms": repr(result.latency_ms),
            "error": result.error or "",
            "at": repr(result.at),
        }
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(probe_key(name), mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping type is narrow
            pipe.pexpire(probe_key(name), _ms(ttl_s))
            await pipe.execute()

    async def probes(self, names: Sequence[str]) -> dict[str, ProbeResult]:
        if not names:
            return {}
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(probe_key(name))
            raws: list[dict[bytes, bytes]] = await pipe.execute()
        return {name: _probe(raw) for name, raw in zip(names, raws, strict=True) if raw}

    async def settle(self, derived: Mode, reason: str) -> ModeRecord:
        return await self._run(derived, reason, "settle")

    async def force(
        self,
        mode: Mode | None,
        *,
        reason: str,
        actor: str | None,
        ttl_s: float | None,
        derived: Mode,
        derived_reason: str,
    ) -> ModeRecord:
        ttl_ms = "" if ttl_s is None else str(_ms(ttl_s))
        op = "lift" if mode is None else "force"
        return await self._run(derived, derived_reason, op, mode or "", reason, actor or "", ttl_ms)

    async def last_change(self) -> DegradationChange | None:
        with unavailable():
            raw: dict[bytes, bytes] = await self._redis.hgetall(MODE_CHANGE_KEY)  # type: ignore[assignment]
        if not raw:
            return None
        ttl_ms = raw[b"ttl_ms"]
        return DegradationChange(
            mode=Mode(raw[b"mode"].decode()) if raw[b"mode"] else None,
            reason=raw[b"reason"].decode(),
            actor=raw[b"actor"].decode() or None,
            at=int(raw[b"at_ms"]) / 1000,
            ttl_s=int(ttl_ms) / 1000 if ttl_ms else None,
        )

    async def _run(self, derived: Mode, reason: str, *args: str) -> ModeRecord:
        with unavailable():
            raw: Any = await self._script(keys=_MODE_KEYS, args=(EVENTS_CHANNEL, derived.value, reason, *args))
        mode, text, since_ms, forced, until_ms = msgspec.convert(raw, _ModeReply)
        state = Degradation(mode=Mode(mode.decode()), reason=text.decode(), since=since_ms / 1000, forced=forced == 1)
        return ModeRecord(state=state, forced_until=until_ms / 1000 if until_ms else None)


def _probe(raw: dict[bytes, bytes]) -> ProbeResult:
    return ProbeResult(
        ok=raw.get(b"ok") == b"1",
        latency_ms=float(raw.get(b"latency_ms", b"0")),
        error=raw.get(b"error", b"").decode() or None,
        at=float(raw.get(b"at", b"0")),
    )
