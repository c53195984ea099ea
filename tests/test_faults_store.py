"""The store keeps an SRE's action through Redis faults: resets, lost writes, a hung server (DESIGN.md v1.1).

In-process `ResilientStore`s (one per "replica") over real redis-server processes that the tests flush, restart
empty, roll back or SIGSTOP. Waits are bounded and wait on observed changes; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import pytest
import redis.asyncio

from breaker_client.protocol.models import BreakerConfig, Outcome, State
from breaker_service.errors import BreakerCapError, StoreUnavailableError, UnknownBreakerError
from breaker_service.event_hub import EventHub
from breaker_service.events import Resync
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.breaker_resilient import ResilientStore
from breaker_service.store.connection_redis import create_redis
from breaker_service.store.keys import EPOCH_KEY, REGISTRY_KEY, state_key
from breaker_service.store.restorer import RESTORE_REASON
from tests._waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from breaker_service.events import StoreEvent
    from tests.fixtures.redis_server import RedisServer, RedisServerFactory

FAILURE: Final = Outcome(outcome="failure")
DECLARED: Final = BreakerConfig(failure_threshold=2, open_timeout_s=30.0)
TUNED: Final = BreakerConfig(failure_threshold=7, open_timeout_s=45.0)


def resolve(name: str) -> BreakerConfig:
    return BreakerConfig()


@contextlib.asynccontextmanager
async def replica(
    url: str, *, declare: bool = True, epoch_check_s: float = 0.2, **shared: Any
) -> AsyncIterator[ResilientStore]:
    """One replica's store on `url`, started (with `declared` from its config file), closed afterwards."""
    store = ResilientStore(
        RedisStore(create_redis(url), resolve_config=resolve, max_breakers=100, **shared),
        resolve_config=resolve,
        retry_min_s=0.05,
        retry_max_s=0.2,
        epoch_check_s=epoch_check_s,
    )
    try:
        await store.start()
        if declare:
            await store.declare("declared", DECLARED)
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def following(*stores: ResilientStore) -> AsyncIterator[None]:
    """Consume each store's event feed in the background, as a replica's EventHub does (it learns from it)."""

    async def consume(store: ResilientStore, live: asyncio.Event) -> None:
        async for _ in store.events(live):
            pass

    lives = [asyncio.Event() for _ in stores]
    tasks = [asyncio.create_task(consume(store, live)) for store, live in zip(stores, lives, strict=True)]
    try:
        for live in lives:
            await asyncio.wait_for(live.wait(), 20.0)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def server(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
async def admin_redis(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def restored_entries(store: ResilientStore, name: str) -> int:
    return sum(1 for entry in await store.history(name) if entry.reason == RESTORE_REASON)


async def test_a_force_comes_back_after_flushall_on_every_replica_with_one_history_entry(
    server: RedisServer, admin_redis: redis.asyncio.Redis
) -> None:
    async with replica(server.url) as first, replica(server.url) as second, following(first, second):
        forced = await first.force("payments", State.OPEN, reason="incident 42", ttl_s=600.0, actor="sre")
        await first.configure("tuned", TUNED, actor="sre", reason="tune")
        await second.snapshot("payments")
        await second.snapshot("tuned")

        async def second_learnt_the_force() -> bool:
            known = second._memory.known.get("payments")
            return known is not None and known.snapshot.force is not None and known.snapshot.force.actor == "sre"

        await wait_until(second_learnt_the_force, "the other replica to learn the force from its event feed")

        await admin_redis.flushall()
        decisions = await asyncio.gather(first.acquire("payments"), second.acquire("payments"))

        assert [decision.allowed for decision in decisions] == [False, False], "the force is back before answering"
        restored = await second.snapshot("payments")
        assert restored.forced is State.OPEN
        assert restored.generation > forced.generation
        assert restored.incarnation == forced.incarnation
        assert restored.retry_after_s is not None
        assert 0 < restored.retry_after_s <= 600.0
        fields = await admin_redis.hmget(state_key("payments"), "forced_actor", "forced_reason")
        assert fields == [b"sre", b"incident 42"]
        assert await restored_entries(first, "payments") == 1

        async def everything_back() -> bool:
            names = await first.names()
            return {"declared", "payments", "tuned"} <= set(names)

        await wait_until(everything_back, "the config-file and runtime-configured breakers to be restored")
        assert (await first.snapshot("tuned")).config == TUNED, "runtime config wins over the config file"
        assert (await first.snapshot("declared")).config == DECLARED
        assert await restored_entries(first, "tuned") == 1
        assert await restored_entries(first, "declared") == 1


async def test_an_empty_restart_is_noticed_without_any_request_and_the_mode_override_returns(
    server: RedisServer,
) -> None:
    from breaker_service.degradation import Mode

    async with replica(server.url) as store:
        await store.force("payments", State.CLOSED, reason="trust me", ttl_s=None, actor="sre")
        status = store.status_store()
        await status.force(
            Mode.EMERGENCY, reason="all hands", actor="sre", ttl_s=None, derived=Mode.NORMAL, derived_reason="ok"
        )

        async def mode_seen() -> bool:
            # The epoch watch reads the forced mode on each check; wait until one check has seen it.
            return store._restorer._mode is not None

        await wait_until(mode_seen, "the replica to read the forced mode")
        server.restart()

        async def restored() -> bool:
            try:
                return not store.degraded and await restored_entries(store, "payments") == 1
            except (StoreUnavailableError, UnknownBreakerError):
                return False

        await wait_until(restored, "the force to be restored without any request")
        assert (await store.snapshot("payments")).forced is State.CLOSED
        change = await status.last_change()
        assert change is not None
        assert (change.mode, change.actor, change.reason) == (Mode.EMERGENCY, "sre", "all hands")
        record = await status.settle(Mode.NORMAL, "derived")
        assert record.state.mode is Mode.EMERGENCY
        assert record.state.forced


async def test_a_deleted_breaker_is_forgotten_and_never_restored(
    server: RedisServer, admin_redis: redis.asyncio.Redis
) -> None:
    async with replica(server.url) as first, replica(server.url) as second:
        await first.force("gone", State.OPEN, reason="drill", ttl_s=None, actor="sre")
        await second.snapshot("gone")
        await first.delete("gone", actor="sre", reason="retired")
        # The second replica learns it by the missing breaker under the same epoch (events may be lost).
        decision = await second.acquire("gone")
        assert decision.allowed, "a breaker made again after a delete is a fresh one"
        await second.delete("gone", actor="sre", reason="retired again")

        await admin_redis.flushall()
        await first.acquire("other")
        await second.acquire("other")

        async def both_checked() -> bool:
            epoch = await admin_redis.get(EPOCH_KEY)
            return isinstance(epoch, bytes) and all(s._restorer.epoch == epoch.decode() for s in (first, second))

        await wait_until(both_checked, "both replicas to see the new epoch")
        assert "gone" not in await first.names()


async def test_a_breaker_remade_from_defaults_after_a_reset_is_restored_before_the_next_answer(
    server: RedisServer, admin_redis: redis.asyncio.Redis
) -> None:
    """A replica that knew nothing made it fresh; one that knew the force restores it on its next acquire, without
    waiting for its epoch check."""
    async with replica(server.url, epoch_check_s=3600) as knowing:
        forced = await knowing.force("payments", State.OPEN, reason="incident", ttl_s=None, actor="sre")
        await admin_redis.flushall()
        async with replica(server.url, declare=False, epoch_check_s=3600) as newcomer:
            assert (await newcomer.acquire("payments")).allowed, "it knows nothing: a fresh breaker"

            decision = await knowing.acquire("payments")

            assert not decision.allowed
            assert decision.generation > forced.generation
            assert not (await newcomer.acquire("payments")).allowed
            assert await restored_entries(knowing, "payments") == 1


async def test_writes_lost_in_a_failover_are_restored_under_the_same_epoch(
    server: RedisServer, admin_redis: redis.asyncio.Redis
) -> None:
    async with replica(server.url) as store:
        await store.acquire("payments")
        before = await admin_redis.dump(state_key("payments"))
        assert before is not None
        forced = await store.force("payments", State.OPEN, reason="incident", ttl_s=None, actor="sre")
        # A failover to a Redis replica that lacks the force: the hash goes back to its earlier self.
        await admin_redis.restore(state_key("payments"), 0, before, replace=True)

        decision = await store.acquire("payments")

        assert not decision.allowed
        assert decision.generation > forced.generation
        assert await restored_entries(store, "payments") == 1


async def test_a_replica_that_never_reached_redis_answers_503_until_it_has(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    server.stop()
    async with replica(server.url) as store:
        assert not store.reached
        with pytest.raises(StoreUnavailableError):
            await store.acquire("declared")
        with pytest.raises(StoreUnavailableError):
            await store.record("declared", FAILURE)
        assert not await store.ping()
        server.start()
        await wait_until(store.ping, "the store to answer")
        assert store.reached
        assert (await store.acquire("declared")).allowed


async def test_when_unknown_deny_refuses_a_breaker_never_seen_while_degraded(server: RedisServer) -> None:
    deny = BreakerConfig(when_unknown="deny")
    async with replica(server.url) as store:
        await store.declare("strict", deny)
        await store.declare("lenient", BreakerConfig())
        server.kill()
        strict, lenient = await store.acquire("strict"), await store.acquire("lenient")
        assert strict.degraded
        assert not strict.allowed
        assert lenient.degraded
        assert lenient.allowed


async def test_a_hung_redis_never_applies_a_write_twice(server: RedisServer) -> None:
    """SIGSTOP during a record: the request fails (503) at the store timeout; the failure counts exactly once."""
    async with replica(server.url) as store:
        await store.acquire("payments")
        server.pause()
        try:
            with pytest.raises(StoreUnavailableError):
                # Straight to the shared store: the resilient wrapper would answer from local state.
                await store._shared.record("payments", FAILURE)
        finally:
            server.resume()
        async with replica(server.url, declare=False) as fresh:

            async def applied() -> bool:
                return (await fresh.snapshot("payments")).counts.failure >= 1

            await wait_until(applied, "the write sent before the pause to run")
            snapshot = await fresh.snapshot("payments")
            assert snapshot.counts.failure == 1
            assert snapshot.consecutive_failures == 1


async def test_the_cap_holds_under_concurrent_creation(server: RedisServer, admin_redis: redis.asyncio.Redis) -> None:
    store = RedisStore(create_redis(server.url), resolve_config=resolve, max_breakers=50)
    try:
        await store.start()
        results = await asyncio.gather(*(store.acquire(f"new-{i}") for i in range(60)), return_exceptions=True)
        assert sum(isinstance(result, BreakerCapError) for result in results) == 10
        assert await admin_redis.scard(REGISTRY_KEY) == 50
    finally:
        await store.close()


async def test_without_auto_create_only_admins_create_breakers(server: RedisServer) -> None:
    store = RedisStore(create_redis(server.url), resolve_config=resolve, auto_create=False)
    try:
        await store.start()
        with pytest.raises(UnknownBreakerError):
            await store.acquire("typo")
        with pytest.raises(UnknownBreakerError):
            await store.record("typo", FAILURE)
        assert await store.names() == []
        await store.force("made", State.OPEN, reason="admin", ttl_s=None, actor="sre")
        assert not (await store.acquire("made")).allowed
    finally:
        await store.close()


async def test_a_lost_subscription_ends_every_listeners_stream(server: RedisServer) -> None:
    """Events published meanwhile are lost: listeners (SSE streams) end, and their clients take a fresh snapshot."""
    async with replica(server.url) as store:
        hub = EventHub()
        async with hub.running(store):
            await asyncio.wait_for(hub.live.wait(), 20.0)
            with hub.listening() as listener:
                server.restart()
                assert await asyncio.wait_for(listener.get(), 20.0) is None


async def test_leaving_a_degraded_spell_sends_every_replica_a_resync(server: RedisServer) -> None:
    """This replica's local answers may have made up state: every listener reads the shared state again."""
    async with replica(server.url) as degraded, replica(server.url) as other, following(other):
        received: list[StoreEvent] = []
        hub = EventHub()
        async with hub.running(other):
            await asyncio.wait_for(hub.live.wait(), 20.0)
            with hub.listening() as listener:
                server.pause()
                try:
                    assert (await degraded.acquire("payments")).degraded
                finally:
                    server.resume()
                await wait_until(degraded.ping, "the degraded replica to reach Redis again")
                while not received or received[-1].kind != "resync":
                    event = await asyncio.wait_for(listener.get(), 20.0)
                    assert event is not None
                    received.append(event)
        assert isinstance(received[-1].data, Resync)
        assert received[-1].data.name is None
