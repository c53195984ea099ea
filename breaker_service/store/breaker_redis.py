"""`RedisStore`: breaker state shared by every replica, changed only by the Lua scripts in `breaker_service/lua`.

acquire and record cost one EVALSHA for an existing breaker. For an unknown one the script answers "missing";
the store then checks the cap, creates the breaker and runs the script once more, so creating costs extra round
trips and using never does. Admin actions add a second round trip for the `brk:audit` stream, which lives in a
slot of its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from breaker_client.protocol.models import BreakerConfig, ConfigPatch, Decision, Outcome, Snapshot, State, Transition
from breaker_service.errors import BreakerCapError, NotReplicatedError, UnknownBreakerError
from breaker_service.events import EVENTS_CHANNEL, StoreEvent, decode_event
from breaker_service.store.audit import AuditEntry, entry_from_stream
from breaker_service.store.breaker_base import force_action
from breaker_service.store.connection_redis import confirmed, raise_if_cancelled, unavailable
from breaker_service.store.idempotency_redis import RedisIdempotencyStore
from breaker_service.store.keys import AUDIT_KEY, AUDIT_MAXLEN, REGISTRY_KEY, history_key, state_key, window_key
from breaker_service.store.recovery_redis import RedisRecovery
from breaker_service.store.scripts_redis import BreakerScripts, Created, TransitionHook
from breaker_service.store.status_redis import RedisStatusStore
from breaker_service.store.window import window_totals

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

    from breaker_service.store.breaker_base import ConfigResolver
    from breaker_service.store.connection_redis import RedisClient

_T = TypeVar("_T")

CONFIG_REASON: Final = "config updated"
"""The history reason of a PUT that gives none."""
_TRANSITION: Final = msgspec.json.Decoder(Transition)


class RedisStore:
    """The `BreakerStore` on Redis (standalone, Sentinel or Cluster); the client must not decode responses."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        resolve_config: ConfigResolver,
        max_breakers: int = 10_000,
        on_transition: TransitionHook | None = None,
        auto_create: bool = True,
        min_replicas: int = 0,
        replica_wait_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._resolve_config = resolve_config
        self._max_breakers = max_breakers
        self._auto_create = auto_create
        self._min_replicas = min_replicas
        self._replica_wait_ms = max(1, round(replica_wait_s * 1000))
        self._scripts = BreakerScripts(redis, on_transition=on_transition)
        self._idempotency = RedisIdempotencyStore(redis)
        self._cluster = isinstance(redis, RedisCluster)
        self.recovery = RedisRecovery(redis, self._scripts, registry=self._registry())
        """The store epoch, restoring breakers and reading what a restore needs (breaker_service/store/restorer.py)."""
        self.on_missing: Callable[[str], Awaitable[bool]] | None = None
        """Asked before a missing breaker is created: True when it put the breaker back (a store reset)."""

    @property
    def kind(self) -> str:
        """Always `redis`."""
        return "redis"

    @property
    def degraded(self) -> bool:
        """Never: falling back to local state is a wrapper's job."""
        return False

    async def start(self) -> None:
        """Load the scripts."""
        with unavailable():
            await self._scripts.load()

    async def close(self) -> None:
        """Close the client's connections."""
        await self._scripts.close()
        await self._redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers now."""
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def declare(self, name: str, config: BreakerConfig) -> None:
        """Create a config-file breaker unless it exists (the cap applies, as everywhere)."""
        with unavailable():
            await self._create(name, config)

    async def names(self) -> list[str]:
        """Names in the registry, sorted."""
        with unavailable():
            members = await self._redis.smembers(REGISTRY_KEY)
        return sorted(_text(member) for member in members)

    async def snapshot(self, name: str) -> Snapshot:
        """One breaker."""
        with unavailable():
            return _known(name, await self._scripts.snapshot(name))

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        """Every breaker (or those of `names`), sorted by name; names registered but already deleted are skipped."""
        names = await self.names() if names is None else sorted(set(names))
        with unavailable():
            found = await self._scripts.snapshots(names)
        return [snapshot for snapshot in found if snapshot is not None]

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        """Create the breaker or replace its config; audited."""
        reason = reason or CONFIG_REASON
        with unavailable():
            snapshot = await self._creating(
                name, lambda: self._scripts.update(name, config, actor=actor, reason=reason), config, admin=True
            )
            await self._audit(name, "configure", actor, reason)
            await self._replicated()
        return snapshot

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str | None) -> Snapshot:
        """Merge fields into the config in one script (which checks the merged config); audited."""
        reason = reason or CONFIG_REASON
        with unavailable():
            snapshot = _known(name, await self._scripts.patch(name, patch, actor=actor, reason=reason))
            await self._audit(name, "configure", actor, reason)
            await self._replicated()
        return snapshot

    async def delete(self, name: str, *, actor: str | None, reason: str | None) -> None:
        """Remove the breaker, its history and its registry entry; audited."""
        with unavailable():
            if not await self._scripts.delete(name):
                raise UnknownBreakerError(f"no breaker named {name!r}")
            pipe = self._redis.pipeline(transaction=False)
            pipe.srem(REGISTRY_KEY, name)
            _add_audit(pipe, name, "delete", actor, reason)
            await pipe.execute()
            await self._replicated()

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        """Ask to make one call; one EVALSHA for an existing breaker."""
        with unavailable():
            return await self._creating(name, lambda: self._scripts.acquire(name, lease=lease))

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        """Take one outcome; one EVALSHA for an existing breaker."""
        with unavailable():
            return await self._creating(name, lambda: self._scripts.record(name, outcome))

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        """Force OPEN or CLOSED; audited."""
        with unavailable():
            snapshot = await self._creating(
                name, lambda: self._scripts.force(name, mode, reason=reason, ttl_s=ttl_s, actor=actor), admin=True
            )
            await self._audit(name, force_action(mode), actor, reason)
            await self._replicated()
        return snapshot

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        """Fresh CLOSED, counts cleared, force lifted; audited."""
        with unavailable():
            snapshot = _known(name, await self._scripts.reset(name, reason=reason, actor=actor))
            await self._audit(name, "reset", actor, reason)
            await self._replicated()
        return snapshot

    async def history(self, name: str, *, limit: int = 100) -> list[Transition]:
        """Transitions, newest first."""
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            pipe.exists(state_key(name))
            pipe.xrevrange(history_key(name), count=limit)
            exists, entries = await pipe.execute()
        if not exists:
            raise UnknownBreakerError(f"no breaker named {name!r}")
        return [_TRANSITION.decode(fields[b"transition"]) for _, fields in entries]

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """The `brk:audit` stream, newest first."""
        with unavailable():
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrevrange(AUDIT_KEY, count=limit)  # type: ignore[assignment]
        return [entry_from_stream(entry_id, fields) for entry_id, fields in entries]

    async def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the buckets of `brk:{name}:window` still inside the window (Redis time)."""
        with unavailable():
            pipe = self._redis.pipeline(transaction=False)
            pipe.time()
            pipe.hgetall(window_key(name))
            (seconds, micros), fields = await pipe.execute()
        counters = {_text(field): int(value) for field, value in fields.items()}
        return window_totals(counters, seconds * 1000 + micros // 1000, window_s)

    def status_store(self) -> RedisStatusStore:
        """Probe results and the degradation mode, on the same Redis."""
        return RedisStatusStore(self._redis)

    def idempotency_store(self) -> RedisIdempotencyStore:
        """Idempotency-Key answers, on the same Redis: a retry on another replica finds them."""
        return self._idempotency

    async def events(self, subscribed: asyncio.Event | None = None) -> AsyncGenerator[StoreEvent, None]:
        """Every event on `brk:events` from now on; the subscription ends when the consumer stops."""
        pubsub = self._redis.pubsub()
        try:
            with unavailable():
                await pubsub.subscribe(EVENTS_CHANNEL)
                await confirmed(pubsub)
            if subscribed is not None:
                subscribed.set()
            while True:
                raise_if_cancelled()
                with unavailable():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and (event := decode_event(message["data"])) is not None:
                    yield event
        finally:
            await pubsub.aclose()

    async def _replicated(self) -> None:
        """With `min_replicas`, wait for Redis replicas to confirm the write just made (best effort: WAIT)."""
        if self._min_replicas == 0:
            return
        acked = int(await self._redis.wait(self._min_replicas, self._replica_wait_ms))
        if acked < self._min_replicas:
            raise NotReplicatedError(
                f"the write is applied, but {acked} of {self._min_replicas} Redis replicas confirmed it in time",
                details={"applied": True, "replicas": acked, "min_replicas": self._min_replicas},
            )

    async def _creating(
        self,
        name: str,
        run: Callable[[], Awaitable[_T | None]],
        config: BreakerConfig | None = None,
        *,
        admin: bool = False,
    ) -> _T:
        """Run a script; if it answers "missing", restore or create the breaker and run it once more."""
        result = await run()
        if result is None:
            restored = self.on_missing is not None and await self.on_missing(name)
            if not restored:
                if not (admin or self._auto_create):
                    raise UnknownBreakerError(f"no breaker named {name!r} (only admins create breakers here)")
                await self._create(name, config if config is not None else self._resolve_config(name))
            result = await run()
            if result is None:
                raise UnknownBreakerError(f"breaker {name!r} was deleted while it was being created")
        return result

    async def _create(self, name: str, config: BreakerConfig) -> None:
        """Create the breaker unless it exists, within the cap: one script (create.lua); two steps on Cluster."""
        if self._cluster:
            # The registry lives in a slot of its own: check, then add, so concurrent creations may pass the cap.
            pipe = self._redis.pipeline(transaction=False)
            pipe.sismember(REGISTRY_KEY, name)
            pipe.scard(REGISTRY_KEY)
            registered, count = await pipe.execute()
            if not registered and count >= self._max_breakers:
                raise self._cap_error(name)
            # Registry first: a crash in between leaves a name without keys (skipped), never a hidden breaker.
            await self._redis.sadd(REGISTRY_KEY, name)
        created = await self._scripts.create(name, config, registry=self._registry(), cap=self._max_breakers)
        if created is Created.CAPPED:
            raise self._cap_error(name)

    def _registry(self) -> str | None:
        return None if isinstance(self._redis, RedisCluster) else REGISTRY_KEY

    def _cap_error(self, name: str) -> BreakerCapError:
        return BreakerCapError(
            f"creating {name!r} would exceed the cap of {self._max_breakers} breakers",
            details={"max_breakers": self._max_breakers},
        )

    async def _audit(self, name: str, action: str, actor: str | None, reason: str | None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        _add_audit(pipe, name, action, actor, reason)
        await pipe.execute()


def _known(name: str, snapshot: Snapshot | None) -> Snapshot:
    if snapshot is None:
        raise UnknownBreakerError(f"no breaker named {name!r}")
    return snapshot


def _add_audit(pipe: Any, name: str, action: str, actor: str | None, reason: str | None) -> None:
    # The stream ID carries Redis time; `at` is this replica's clock, for readers that only look at fields.
    fields = {"name": name, "action": action, "actor": actor or "", "reason": reason or "", "at": repr(time.time())}
    pipe.xadd(AUDIT_KEY, fields, maxlen=AUDIT_MAXLEN, approximate=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
