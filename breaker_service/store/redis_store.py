"""`RedisStore`: breaker state shared by every replica, changed only by the Lua scripts in `breaker_service/lua`.

acquire and record cost one EVALSHA for an existing breaker. For an unknown one the script answers "missing";
the store then checks the cap, creates the breaker and runs the script once more, so creating costs extra round
trips and using never does. Admin actions add a second round trip for the `brk:audit` stream, which lives in a
slot of its own.
"""

from __future__ import annotations

import time
import urllib.parse
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeVar

import msgspec
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from breaker_client._models import BreakerConfig, Decision, FailureSignal, Outcome, Snapshot, State, Transition
from breaker_service.degradation import Degradation
from breaker_service.errors import BreakerCapError, StoreUnavailableError, UnknownBreakerError
from breaker_service.store.base import EVENTS_CHANNEL, ConfigResolver, Deleted, StoreEvent
from breaker_service.store.keys import AUDIT_KEY, AUDIT_MAXLEN, REGISTRY_KEY, history_key, state_key
from breaker_service.store.scripts import BreakerScripts, RedisClient

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

    from redis.asyncio.client import PubSub

    from breaker_service.store.status import StatusStore

_T = TypeVar("_T")

CONFIG_REASON: Final = "config updated"
"""The history reason of a PUT that gives none."""


_Kind: TypeAlias = Literal["state", "failures", "config", "deleted", "mode"]


class _Envelope(msgspec.Struct, frozen=True):
    kind: str
    data: msgspec.Raw


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
# msgspec cannot decode an untagged union of structs, so the envelope's kind picks the data's decoder.
_EVENT_DATA: Final[dict[str, tuple[_Kind, msgspec.json.Decoder[Any]]]] = {
    "state": ("state", msgspec.json.Decoder(Transition)),
    "failures": ("failures", msgspec.json.Decoder(FailureSignal)),
    "config": ("config", msgspec.json.Decoder(Snapshot)),
    "deleted": ("deleted", msgspec.json.Decoder(Deleted)),
    "mode": ("mode", msgspec.json.Decoder(Degradation)),
}
_TRANSITION: Final = msgspec.json.Decoder(Transition)


@contextmanager
def unavailable() -> Iterator[None]:
    """The one place a Redis error becomes the service's own."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc


async def _confirmed(pubsub: PubSub) -> None:
    """Wait for Redis to confirm SUBSCRIBE: only then is it live, and a snapshot read after it misses nothing."""
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
        if message is not None and message["type"] == "subscribe":
            return


def create_redis(
    url: str, *, cluster: bool = False, max_connections: int = 256, pool_timeout_s: float = 5.0, **options: Any
) -> RedisClient:
    """A client for `REDIS_URL`: `redis://`, `rediss://`, `redis+sentinel://h:p[,h:p]/master`, or a cluster node.

    Replies stay bytes (`decode_responses` off): the store decodes them itself. A burst of more concurrent
    requests than `max_connections` waits up to `pool_timeout_s` for a connection instead of failing at once.
    A command that meets a pooled connection Redis closed (after a restart) is sent once more on a fresh one;
    connecting gives up after a second and a command after two (a Redis that hangs rather than refuses), so an
    outage turns into degraded answers quickly. Blocking pub/sub reads are exempt from the command timeout.
    """
    options.setdefault("retry", Retry(NoBackoff(), 1))
    options.setdefault("socket_connect_timeout", 1.0)
    options.setdefault("socket_timeout", 2.0)
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections, **options)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis+sentinel":
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = [(host, int(port or 26379)) for host, _, port in (h.partition(":") for h in hosts.split(","))]
    if parts.password is not None:
        options.setdefault("password", urllib.parse.unquote(parts.password))
    sentinel = Sentinel(sentinels, **options)
    client: redis.asyncio.Redis = sentinel.master_for(parts.path.strip("/"))
    return client


class RedisStore:
    """The `BreakerStore` on Redis (standalone, Sentinel or Cluster); the client must not decode responses."""

    def __init__(self, redis: RedisClient, *, resolve_config: ConfigResolver, max_breakers: int = 10_000) -> None:
        self._redis = redis
        self._resolve_config = resolve_config
        self._max_breakers = max_breakers
        self._scripts = BreakerScripts(redis)

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

    async def snapshots(self) -> list[Snapshot]:
        """Every breaker, sorted by name; names registered but already deleted are skipped."""
        names = await self.names()
        with unavailable():
            found = await self._scripts.snapshots(names)
        return [snapshot for snapshot in found if snapshot is not None]

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        """Create the breaker or replace its config; audited."""
        reason = reason or CONFIG_REASON
        with unavailable():
            snapshot = await self._creating(
                name, lambda: self._scripts.update(name, config, actor=actor, reason=reason), config
            )
            await self._audit(name, "configure", actor, reason)
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

    async def acquire(self, name: str) -> Decision:
        """Ask to make one call; one EVALSHA for an existing breaker."""
        with unavailable():
            return await self._creating(name, lambda: self._scripts.acquire(name))

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        """Take one outcome; one EVALSHA for an existing breaker."""
        with unavailable():
            return await self._creating(name, lambda: self._scripts.record(name, outcome))

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        """Force OPEN or CLOSED; audited."""
        with unavailable():
            snapshot = await self._creating(
                name, lambda: self._scripts.force(name, mode, reason=reason, ttl_s=ttl_s, actor=actor)
            )
            await self._audit(name, f"force-{mode.value.lower()}", actor, reason)
        return snapshot

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        """Fresh CLOSED, counts cleared, force lifted; audited."""
        with unavailable():
            snapshot = _known(name, await self._scripts.reset(name, reason=reason, actor=actor))
            await self._audit(name, "reset", actor, reason)
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

    def status_store(self) -> StatusStore:
        """Probe results and the degradation mode, on the same Redis."""
        from breaker_service.store.redis_status import RedisStatusStore  # it builds on this module

        return RedisStatusStore(self._redis)

    async def events(self, subscribed: asyncio.Event | None = None) -> AsyncGenerator[StoreEvent, None]:
        """Every event on `brk:events` from now on; the subscription ends when the consumer stops."""
        pubsub = self._redis.pubsub()
        try:
            with unavailable():
                await pubsub.subscribe(EVENTS_CHANNEL)
                await _confirmed(pubsub)
            if subscribed is not None:
                subscribed.set()
            while True:
                with unavailable():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and (event := _event(message["data"])) is not None:
                    yield event
        finally:
            await pubsub.aclose()

    async def _creating(
        self, name: str, run: Callable[[], Awaitable[_T | None]], config: BreakerConfig | None = None
    ) -> _T:
        """Run a script; if it answers "missing", create the breaker and run it once more."""
        result = await run()
        if result is None:
            await self._create(name, config if config is not None else self._resolve_config(name))
            result = await run()
            if result is None:
                raise UnknownBreakerError(f"breaker {name!r} was deleted while it was being created")
        return result

    async def _create(self, name: str, config: BreakerConfig) -> None:
        """Create the breaker unless it exists: cap check, registry, then configure.lua."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.sismember(REGISTRY_KEY, name)
        pipe.scard(REGISTRY_KEY)
        registered, count = await pipe.execute()
        if not registered and count >= self._max_breakers:
            raise BreakerCapError(
                f"creating {name!r} would exceed the cap of {self._max_breakers} breakers",
                details={"max_breakers": self._max_breakers},
            )
        # Registry first: a crash in between leaves a name without keys (skipped), never a hidden breaker.
        await self._redis.sadd(REGISTRY_KEY, name)
        await self._scripts.create(name, config)

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


def _event(payload: bytes) -> StoreEvent | None:
    """Decode one pub/sub message; None for kinds this version does not know."""
    envelope = _ENVELOPE.decode(payload)
    known = _EVENT_DATA.get(envelope.kind)
    if known is None:
        return None
    kind, decoder = known
    return StoreEvent(kind=kind, data=decoder.decode(envelope.data))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
