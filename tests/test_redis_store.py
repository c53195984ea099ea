"""RedisStore behaviour that only Redis has: scripts by SHA, round trips, slots, registry, pub/sub, streams.

The rules themselves are checked against both stores by the conformance suite.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Final

import msgspec
import pytest
import redis.asyncio
import structlog.testing
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from breaker_client.protocol.models import BreakerConfig, Decision, Deleted, Outcome, Snapshot, State, Transition
from breaker_service.errors import BreakerCapError, StoreUnavailableError
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.connection_redis import create_redis
from breaker_service.store.keys import AUDIT_KEY, REGISTRY_KEY, breaker_keys, history_key, report_key, state_key
from breaker_service.store.scripts_redis import SOURCES
from tests._waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from tests.fixtures.redis_server import RedisServerFactory

CONFIG: Final = BreakerConfig(failure_threshold=3, open_timeout_s=60.0, permit_ttl_s=0.1)
RATE_CONFIG: Final = BreakerConfig(
    window_s=10.0, min_calls=4, failure_rate=0.5, slow_call_ms=250.5, slow_call_rate=0.75, open_backoff=1.5
)
WAIT_TIMEOUT_S: Final = 10.0


def resolve(name: str) -> BreakerConfig:
    return RATE_CONFIG if name.startswith("rate") else CONFIG


@pytest.fixture
async def store(redis_client: redis.asyncio.Redis) -> AsyncIterator[RedisStore]:
    # The store closes its scripts' own connection and the client's pool (which the client fixture closes again).
    store = RedisStore(redis_client, resolve_config=resolve, max_breakers=5)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Re-check an observable condition; each check is a Redis round trip, so other tasks run in between."""
    deadline = asyncio.get_running_loop().time() + WAIT_TIMEOUT_S
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")


async def subscribers(client: redis.asyncio.Redis) -> int:
    [(_, count)] = await client.pubsub_numsub(EVENTS_CHANNEL)
    return int(count)


async def top_level_commands(client: redis.asyncio.Redis, action: Callable[[], Awaitable[object]]) -> list[str]:
    """The commands clients sent while `action` ran, as MONITOR shows them (commands run by scripts excluded)."""
    async with client.monitor() as monitor:
        await client.echo("begin")
        await action()
        await client.echo("end")
        seen: list[str] = []
        while (info := await monitor.next_command())["command"] != "ECHO end":
            if info["client_type"] != "lua":
                seen.append(info["command"].split(" ", 1)[0].upper())
    return seen[seen.index("ECHO") + 1 :]


async def test_scripts_are_reloaded_after_script_flush(store: RedisStore, redis_client: redis.asyncio.Redis) -> None:
    sha = hashlib.sha1(SOURCES["acquire"]).hexdigest()
    await store.acquire("a")
    await redis_client.script_flush()
    assert await redis_client.script_exists(sha) == [False]

    decision = await store.acquire("a")

    assert decision.allowed
    assert await redis_client.script_exists(sha) == [True]


async def test_snapshots_pipeline_survives_script_flush(store: RedisStore, redis_client: redis.asyncio.Redis) -> None:
    for name in ("b", "a", "c"):
        await store.acquire(name)
    await redis_client.script_flush()

    assert [snapshot.name for snapshot in await store.snapshots()] == ["a", "b", "c"]


async def test_acquire_on_an_existing_breaker_is_one_evalsha(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.acquire("a")

    assert await top_level_commands(redis_client, lambda: store.acquire("a")) == ["EVALSHA"]


async def test_record_on_an_existing_breaker_is_one_evalsha(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    decision = await store.acquire("a")
    outcome = Outcome(outcome="failure", duration_ms=12.5, generation=decision.generation)

    assert await top_level_commands(redis_client, lambda: store.record("a", outcome)) == ["EVALSHA"]


async def test_every_key_of_a_breaker_hashes_to_one_slot(store: RedisStore, redis_client: redis.asyncio.Redis) -> None:
    pattern = "brk:{rate-x}:*"
    await store.record("rate-x", Outcome(outcome="failure"))
    await store.acquire("rate-x", lease=True)  # a lease: permits exist while failures accumulate
    await store.record("rate-x", Outcome(outcome="success", report_id="once"))
    written = {key async for key in redis_client.scan_iter(match=pattern)}
    await store.force("rate-x", State.OPEN, reason="drill", ttl_s=None, actor="ops")
    written |= {key async for key in redis_client.scan_iter(match=pattern)}

    assert written == {key.encode() for key in (*breaker_keys("rate-x"), report_key("rate-x", "once"))}
    assert {key_slot(key) for key in written} == {key_slot(b"rate-x")}


async def test_a_stored_config_that_breaks_the_probe_rule_is_read_corrected_with_a_warning(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.declare("old", BreakerConfig(failure_threshold=1, success_threshold=2, half_open_max_calls=2))
    # As a v1 service could have stored it: more probe successes than probes.
    fields = msgspec.structs.asdict(
        BreakerConfig(failure_threshold=1, open_timeout_s=0.001, success_threshold=2, half_open_max_calls=2)
    )
    stored = msgspec.json.encode({**fields, "success_threshold": 4})
    await redis_client.hset(state_key("old"), "config", stored)

    with structlog.testing.capture_logs() as logs:
        snapshot = await store.snapshot("old")
    await store.record("old", Outcome(outcome="failure"))
    probes: list[Decision] = []

    async def first_probe_granted() -> bool:  # the open time (1 ms of Redis time) has passed
        decision = await store.acquire("old")
        if decision.allowed:
            probes.append(decision)
        return decision.allowed

    await wait_until(first_probe_granted, "the first probe")
    probes += [await store.acquire("old") for _ in range(2)]
    for probe in probes[:2]:
        await store.record("old", Outcome(outcome="success", permit=probe.permit))

    assert (snapshot.config.success_threshold, snapshot.config.half_open_max_calls) == (2, 2)
    assert any("stored config corrected" in line["event"] for line in logs)
    assert [probe.allowed for probe in probes] == [True, True, False]
    assert (await store.snapshot("old")).state is State.CLOSED, "two probe successes close it, as the config reads"


async def test_implicit_creation_registers_the_breaker_with_its_resolved_config(store: RedisStore) -> None:
    snapshot = await store.record("rate-new", Outcome(outcome="success"))

    assert snapshot.config == RATE_CONFIG
    assert snapshot.generation == 1
    assert await store.names() == ["rate-new"]


async def test_config_floats_round_trip_through_lua(store: RedisStore) -> None:
    config = BreakerConfig(
        open_timeout_s=0.1,
        permit_ttl_s=1e-3,
        window_s=86_400.0,
        min_calls=1,
        failure_rate=1 / 3,
        max_open_timeout_s=60.0,
    )

    created = await store.configure("odd", config, actor="ops", reason=None)

    assert created.config == config
    assert (await store.snapshot("odd")).config == config


async def test_creating_beyond_the_cap_raises_breaker_cap_error(redis_client: redis.asyncio.Redis) -> None:
    store = RedisStore(redis_client, resolve_config=resolve, max_breakers=2)
    try:
        await store.acquire("a")
        await store.configure("b", CONFIG, actor="ops", reason="seed")

        with pytest.raises(BreakerCapError) as caught:
            await store.acquire("c")

        assert caught.value.status == 409
        assert (await store.acquire("a")).allowed
        assert await store.names() == ["a", "b"]
    finally:
        await store.close()


async def test_events_deliver_transitions_and_config_then_unsubscribe(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.acquire("a")
    events = store.events()
    first = asyncio.ensure_future(anext(events))
    await until(lambda: _has_subscriber(redis_client), "the events subscription")

    forced = await store.force("a", State.OPEN, reason="drill", ttl_s=None, actor="ops")
    state_event = await asyncio.wait_for(first, WAIT_TIMEOUT_S)
    breaker_event = await asyncio.wait_for(anext(events), WAIT_TIMEOUT_S)
    configured = await store.configure("a", BreakerConfig(open_timeout_s=5.5), actor="ops", reason="tune")
    config_event = await asyncio.wait_for(anext(events), WAIT_TIMEOUT_S)
    await store.delete("a", actor="ops", reason="done")
    deleted_event = await asyncio.wait_for(anext(events), WAIT_TIMEOUT_S)
    await events.aclose()

    assert state_event.kind == "state"
    assert isinstance(state_event.data, Transition)
    assert (state_event.data.from_state, state_event.data.to_state) == (State.CLOSED, State.OPEN)
    assert (state_event.data.actor, state_event.data.reason) == ("ops", "drill")
    assert state_event.data.generation == forced.generation
    assert (breaker_event.kind, breaker_event.data) == ("breaker", forced), "the script hands out its snapshot"
    assert config_event.kind == "config"
    assert config_event.data == configured
    assert isinstance(config_event.data, Snapshot)
    assert deleted_event.kind == "deleted"
    assert deleted_event.data == Deleted(name="a")
    await until(lambda: _no_subscriber(redis_client), "the subscription to end")


async def _has_subscriber(client: redis.asyncio.Redis) -> bool:
    return await subscribers(client) > 0


async def _no_subscriber(client: redis.asyncio.Redis) -> bool:
    return await subscribers(client) == 0


async def test_history_is_newest_first_and_capped(store: RedisStore, redis_client: redis.asyncio.Redis) -> None:
    modes = (State.OPEN, State.CLOSED)
    for i in range(1_200):
        last = await store.force("a", modes[i % 2], reason=f"flip {i}", ttl_s=None, actor="ops")

    newest = await store.history("a", limit=3)
    length = await redis_client.xlen(history_key("a"))

    assert [t.generation for t in newest] == [last.generation, last.generation - 1, last.generation - 2]
    assert [t.reason for t in newest] == ["flip 1199", "flip 1198", "flip 1197"]
    assert len(await store.history("a")) == 100
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), so the cap is approximate.
    assert 1_000 <= length < 1_200


async def test_delete_removes_every_key_and_the_registry_entry(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.acquire("rate-a")
    await store.record("rate-a", Outcome(outcome="failure"))
    await store.acquire("rate-a")
    await store.force("rate-a", State.CLOSED, reason="drill", ttl_s=30.0, actor="ops")

    await store.delete("rate-a", actor="ops", reason="gone")

    assert [key async for key in redis_client.scan_iter(match="brk:{rate-a}:*")] == []
    assert not await redis_client.sismember(REGISTRY_KEY, "rate-a")
    audit = await redis_client.xrange(AUDIT_KEY)
    assert audit is not None
    actions = [fields[b"action"] for _, fields in audit if fields is not None]
    assert actions == [b"force-close", b"delete"]


async def test_redis_down_raises_store_unavailable(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    client = redis.asyncio.Redis.from_url(server.url, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
    store = RedisStore(client, resolve_config=resolve)
    try:
        await store.start()
        await store.acquire("a")
        server.kill()

        with pytest.raises(StoreUnavailableError) as caught:
            await store.acquire("a")

        assert isinstance(caught.value.__cause__, RedisError)
        assert caught.value.status == 503
        assert not await store.ping()
    finally:
        await store.close()


async def test_a_hung_redis_is_unavailable_not_a_hang(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    store = RedisStore(create_redis(server.url, socket_timeout=0.2), resolve_config=resolve)
    try:
        await store.start()
        await store.acquire("a")
        server.pause()

        with pytest.raises(StoreUnavailableError) as caught:
            await store.acquire("a")

        assert isinstance(caught.value.__cause__, RedisError)
        server.resume()
        assert (await store.acquire("a")).allowed, "the client recovers once Redis answers again"
    finally:
        server.resume()
        await store.close()


async def test_an_idle_event_subscription_outlives_the_command_timeout(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    store = RedisStore(create_redis(server.url, socket_timeout=0.05), resolve_config=resolve)
    clock = redis.asyncio.Redis.from_url(server.url)
    live = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for event in store.events(live):
            seen.append(event.kind)

    async def a_second_of_redis_time_passed() -> bool:
        now_s, _ = await clock.time()
        return bool(now_s >= start_s + 1)

    async def an_event_arrived() -> bool:
        return bool(seen)

    try:
        await store.start()
        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(live.wait(), timeout=WAIT_TIMEOUT_S)
        start_s, _ = await clock.time()
        # Idle for many command timeouts (Redis TIME says when), then publish.
        await wait_until(a_second_of_redis_time_passed, "a second of Redis time")
        await store.force("a", State.OPEN, reason="drill", ttl_s=None, actor="ops")
        await wait_until(an_event_arrived, "the state event")

        assert not consumer.done()
        assert seen[0] == "state"
        consumer.cancel()
    finally:
        await clock.aclose()
        await store.close()


@pytest.mark.parametrize(
    ("url", "cluster", "expected"),
    [
        ("redis://127.0.0.1:6390/0", False, redis.asyncio.Redis),
        ("rediss://127.0.0.1:6390/0", False, redis.asyncio.Redis),
        ("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster", False, redis.asyncio.Redis),
        ("redis://127.0.0.1:7000", True, RedisCluster),
    ],
)
async def test_create_redis_builds_a_client_for_each_url_kind(url: str, cluster: bool, expected: type) -> None:
    client = create_redis(url, cluster=cluster)
    try:
        assert isinstance(client, expected)
    finally:
        await client.aclose()
