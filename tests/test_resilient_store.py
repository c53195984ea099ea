"""ResilientStore against a real redis-server that the tests kill and restart."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

import pytest
import redis.asyncio
from structlog.testing import capture_logs

from breaker_client.protocol.models import BreakerConfig, Outcome, State
from breaker_service.errors import StoreUnavailableError
from breaker_service.event_hub import EventHub
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.breaker_resilient import LOCAL_PERMIT_PREFIX, ResilientStore
from breaker_service.store.connection_redis import create_redis
from tests._waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis_server import RedisServer, RedisServerFactory

WAIT_TIMEOUT_S: Final = 15.0
FAILURE: Final = Outcome(outcome="failure")
SPECIAL: Final = BreakerConfig(failure_threshold=2, open_timeout_s=30.0)


def resolve(name: str) -> BreakerConfig:
    return SPECIAL if name.startswith("special") else BreakerConfig()


async def recovered(store: ResilientStore) -> None:
    async def back() -> bool:
        return not store.degraded

    await wait_until(back, "the store to leave degraded mode")


@pytest.fixture
def server(redis_server_factory: RedisServerFactory) -> RedisServer:
    # AOF with fsync on every write: a killed and restarted server keeps its data, so "shared state wins" shows.
    return redis_server_factory("--appendonly", "yes", "--appendfsync", "always")


@contextlib.asynccontextmanager
async def open_store(url: str, *, retry_min_s: float = 0.02) -> AsyncIterator[ResilientStore]:
    """A started ResilientStore over a RedisStore on `url`, closed afterwards."""
    connection = redis.asyncio.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    shared = RedisStore(connection, resolve_config=resolve, max_breakers=100)
    store = ResilientStore(shared, resolve_config=resolve, retry_min_s=retry_min_s, retry_max_s=max(retry_min_s, 0.2))
    try:
        await store.start()
        yield store
    finally:
        await store.close()
        await connection.aclose()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(server.url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[ResilientStore]:
    async with open_store(server.url) as resilient:
        yield resilient


async def test_passes_through_while_the_shared_store_answers(store: ResilientStore) -> None:
    decision = await store.acquire("svc")
    assert decision.allowed
    assert not decision.degraded
    assert not store.degraded
    assert store.kind == "redis"
    assert await store.ping()
    assert (await store.snapshot("svc")).name == "svc"


async def test_outage_answers_from_the_last_known_state(store: ResilientStore, server: RedisServer) -> None:
    await store.configure("svc", BreakerConfig(failure_threshold=3), actor="t", reason=None)
    await store.record("svc", FAILURE)
    await store.record("svc", FAILURE)
    server.kill()

    decision = await store.acquire("svc", lease=True)
    assert decision.degraded
    assert store.degraded
    assert store.kind == "redis"
    # Two failures carried over: the local machine leases the third call, as the shared one would.
    assert decision.allowed
    assert decision.permit is not None
    assert decision.permit.startswith(LOCAL_PERMIT_PREFIX)

    opened = await store.record("svc", Outcome(outcome="failure", permit=decision.permit))
    assert opened.state is State.OPEN
    assert opened.counts.failure == 3
    denied = await store.acquire("svc")
    assert not denied.allowed
    assert denied.state is State.OPEN
    assert denied.degraded


async def test_an_open_breaker_keeps_its_remaining_open_time(store: ResilientStore, server: RedisServer) -> None:
    await store.configure("svc", BreakerConfig(failure_threshold=1, open_timeout_s=60.0), actor="t", reason=None)
    opened = await store.record("svc", FAILURE)
    assert opened.state is State.OPEN
    server.kill()

    decision = await store.acquire("svc")
    assert decision.degraded
    assert not decision.allowed
    assert decision.state is State.OPEN
    assert decision.generation == opened.generation
    assert decision.retry_after_s is not None
    assert 0 < decision.retry_after_s <= 60.0


async def test_a_forced_open_breaker_stays_forced(store: ResilientStore, server: RedisServer) -> None:
    await store.force("svc", State.OPEN, reason="maintenance", ttl_s=None, actor="t")
    server.kill()

    decision = await store.acquire("svc")
    assert decision.degraded
    assert not decision.allowed
    assert decision.retry_after_s is None


async def test_state_learnt_from_decisions_alone_carries_over(store: ResilientStore, server: RedisServer) -> None:
    # Another replica forces the breaker open; this one only ever sees acquire decisions for it.
    other = RedisStore(redis.asyncio.Redis.from_url(server.url), resolve_config=resolve)
    await other.force("svc", State.OPEN, reason="r", ttl_s=None, actor="t")
    await other.close()
    assert not (await store.acquire("svc")).allowed
    server.kill()

    decision = await store.acquire("svc")
    assert decision.degraded
    assert not decision.allowed
    assert decision.retry_after_s is None


async def test_a_breaker_never_seen_takes_its_resolved_config(store: ResilientStore, server: RedisServer) -> None:
    server.kill()
    with pytest.raises(StoreUnavailableError):
        await store.snapshot("special-1")

    decision = await store.acquire("special-1")
    assert decision.allowed
    assert decision.degraded
    assert (await store.snapshot("special-1")).config == SPECIAL
    await store.record("special-1", FAILURE)
    assert (await store.record("special-1", FAILURE)).state is State.OPEN
    assert "special-1" in await store.names()
    assert [s.name for s in await store.snapshots()] == ["special-1"]


async def test_admin_writes_and_history_fail_while_the_store_is_down(
    store: ResilientStore, server: RedisServer
) -> None:
    await store.acquire("svc")
    server.kill()
    with pytest.raises(StoreUnavailableError):
        await store.configure("svc", BreakerConfig(), actor="t", reason=None)
    with pytest.raises(StoreUnavailableError):
        await store.force("svc", State.OPEN, reason="r", ttl_s=None, actor="t")
    with pytest.raises(StoreUnavailableError):
        await store.reset("svc", reason="r", actor="t")
    with pytest.raises(StoreUnavailableError):
        await store.delete("svc", actor="t", reason=None)
    with pytest.raises(StoreUnavailableError):
        await store.history("svc")
    assert store.degraded
    assert not await store.ping()


async def test_recovers_by_itself_and_shared_state_wins(store: ResilientStore, server: RedisServer) -> None:
    await store.configure("svc", BreakerConfig(failure_threshold=2), actor="t", reason=None)
    before = await store.record("svc", Outcome(outcome="success"))
    server.kill()
    await store.record("svc", FAILURE)
    local = await store.record("svc", FAILURE)
    assert local.state is State.OPEN

    server.restart()
    await recovered(store)

    after = await store.snapshot("svc")
    assert after.state is State.CLOSED
    assert after.generation == before.generation
    assert after.counts == before.counts
    decision = await store.acquire("svc")
    assert decision.allowed
    assert not decision.degraded
    # A permit the local machine granted means nothing to the shared store, and is no error there.
    snapshot = await store.record("svc", Outcome(outcome="success", permit=LOCAL_PERMIT_PREFIX + "9-1"))
    assert snapshot.state is State.CLOSED


async def test_an_admin_write_that_succeeds_ends_the_degraded_spell(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    # The background pinger waits a minute here, so only the admin write can end the spell.
    async with open_store(server.url, retry_min_s=60.0) as store:
        await store.acquire("svc")
        server.kill()
        assert (await store.acquire("svc")).degraded
        server.restart()
        forced = await store.force("svc", State.OPEN, reason="r", ttl_s=None, actor="t")
        assert forced.forced is State.OPEN
        assert not store.degraded
        decision = await store.acquire("svc")
        assert not decision.degraded
        assert not decision.allowed


async def test_declared_breakers_come_back_after_an_empty_restart(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    async with open_store(server.url) as store:
        await store.declare("declared", SPECIAL)
        server.kill()
        await store.acquire("other")
        assert store.degraded
        server.restart()
        # Readiness checks call ping(), which may end the spell before the background task does.
        await wait_until(store.ping, "the store to answer PING")
        assert not store.degraded
        assert await store.names() == ["declared"]
        assert (await store.snapshot("declared")).config == SPECIAL


async def test_a_replica_that_never_reached_its_store_refuses_instead_of_guessing(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    server.kill()
    async with open_store(server.url) as store:
        await store.declare("declared", SPECIAL)
        assert store.degraded
        assert not store.reached
        for attempt in (store.acquire("declared"), store.record("declared", FAILURE), store.snapshot("declared")):
            with pytest.raises(StoreUnavailableError):
                await attempt
        with pytest.raises(StoreUnavailableError):
            await store.force("declared", State.OPEN, reason="drill", ttl_s=None, actor="ops")

        server.restart()
        await recovered(store)
        assert not (await store.acquire("declared")).degraded
        assert (await store.snapshot("declared")).config == SPECIAL


async def test_the_hub_subscribes_again_after_an_outage_and_not_while_degraded(
    store: ResilientStore, server: RedisServer, client: redis.asyncio.Redis
) -> None:
    hub = EventHub()

    async def subscribed() -> bool:
        try:
            counts = await client.pubsub_numsub(EVENTS_CHANNEL)
        except redis.RedisError:
            return False
        return bool(counts) and int(counts[0][1]) >= 1

    async def live() -> bool:
        return hub.live.is_set()

    async with hub.running(store):
        await wait_until(live, "the events subscription")
        with hub.listening() as listener:
            await store.force("svc", State.OPEN, reason="first", ttl_s=None, actor="t")
            first = await asyncio.wait_for(listener.get(), WAIT_TIMEOUT_S)
            assert first is not None
            assert first.kind == "state"

            server.kill()
            await store.acquire("svc")
            # The feed failed: the hub cuts its listeners off (an SSE client reconnects for a fresh snapshot).
            while (event := await asyncio.wait_for(listener.get(), WAIT_TIMEOUT_S)) is not None:
                assert event.kind != "state" or event.data.reason == "first"  # type: ignore[union-attr]

        server.restart()
        await recovered(store)
        await wait_until(live, "the hub's subscription to come back")
        assert await subscribed()
        with hub.listening() as listener:
            await store.force("svc", State.CLOSED, reason="second", ttl_s=None, actor="t")
            second = await asyncio.wait_for(listener.get(), WAIT_TIMEOUT_S)
        assert second is not None
        assert (second.kind, second.data.reason) == ("state", "second")  # type: ignore[union-attr]


async def test_events_carry_the_snapshots_a_later_outage_answers_from(
    store: ResilientStore, server: RedisServer
) -> None:
    hub = EventHub()
    other = RedisStore(create_redis(server.url), resolve_config=lambda _: BreakerConfig())

    async def live() -> bool:
        return hub.live.is_set()

    try:
        async with hub.running(store):
            await wait_until(live, "the events subscription")
            with hub.listening() as listener:
                # Another replica forces it: this one learns the snapshot from the event, without reading it.
                await other.force("svc", State.OPEN, reason="elsewhere", ttl_s=None, actor="ops")
                while (event := await asyncio.wait_for(listener.get(), WAIT_TIMEOUT_S)) is not None:
                    if event.kind == "breaker":
                        break
        server.kill()
        snapshot = await store.snapshot("svc")
        assert (snapshot.state, snapshot.forced, store.degraded) == (State.OPEN, State.OPEN, True)
    finally:
        await other.close()


async def test_logs_once_on_entering_and_once_on_leaving(store: ResilientStore, server: RedisServer) -> None:
    await store.acquire("svc")
    with capture_logs() as logs:
        server.kill()
        for _ in range(20):
            await store.acquire("svc")
            await store.record("svc", FAILURE)
        assert not await store.ping()
        server.restart()
        await recovered(store)
        await store.acquire("svc")
    events = [entry["event"] for entry in logs]
    assert sum("degraded" in event for event in events) == 1
    assert sum("recovered" in event for event in events) == 1
