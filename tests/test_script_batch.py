"""Concurrent script calls batched into one pipeline (store/batch_redis.py), on a real Redis."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from breaker_client.protocol.models import BreakerConfig, Outcome, State
from breaker_service.errors import StoreUnavailableError
from breaker_service.store.batch_redis import ScriptBatcher
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.connection_redis import create_redis

if TYPE_CHECKING:
    import pytest
    import redis.asyncio

    from tests.fixtures.redis_server import RedisServerFactory


def store_on(client: Any) -> RedisStore:
    return RedisStore(client, resolve_config=lambda _: BreakerConfig(failure_threshold=1000), max_breakers=100)


class CountingPipelines:
    """Counts the pipelines `ScriptBatcher` sends, to tell that calls really went together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        original = ScriptBatcher._send

        async def counted(batcher: ScriptBatcher, batch: list[Any]) -> None:
            self.sizes.append(len(batch))
            await original(batcher, batch)

        monkeypatch.setattr(ScriptBatcher, "_send", counted)


async def test_concurrent_calls_go_in_one_pipeline_and_each_gets_its_own_answer(
    redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_on(redis_client)
    await store.start()
    await store.record("batched", Outcome(outcome="success"))
    pipelines = CountingPipelines(monkeypatch)
    outcomes = [Outcome(outcome="success", count=n) for n in range(1, 31)]
    snapshots = await asyncio.gather(*(store.record("batched", outcome) for outcome in outcomes))
    assert pipelines.sizes == [30]
    # Each script ran once, in call order: the success counts rise by each call's count.
    successes = [snapshot.counts.success for snapshot in snapshots]
    assert successes == [1 + n * (n + 1) // 2 for n in range(1, 31)]
    decisions = await asyncio.gather(*(store.acquire(f"fresh-{n}") for n in range(5)))
    assert all(decision.allowed and decision.state is State.CLOSED for decision in decisions)


async def test_a_batch_after_redis_lost_its_scripts_loads_them_again(redis_client: redis.asyncio.Redis) -> None:
    store = store_on(redis_client)
    await store.start()
    await store.acquire("flushed")
    await redis_client.script_flush()
    decisions = await asyncio.gather(*(store.acquire("flushed") for _ in range(10)))
    assert all(decision.allowed for decision in decisions)
    assert (await store.snapshot("flushed")).counts.success == 0


async def test_every_call_of_a_batch_fails_when_redis_is_gone(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    client = create_redis(server.url)
    store = store_on(client)
    try:
        await store.start()
        await store.acquire("gone")
        server.stop()
        results = await asyncio.gather(*(store.acquire("gone") for _ in range(8)), return_exceptions=True)
        assert all(isinstance(result, StoreUnavailableError) for result in results), results
    finally:
        await store.close()


async def test_a_caller_that_gives_up_does_not_disturb_the_others(redis_client: redis.asyncio.Redis) -> None:
    store = store_on(redis_client)
    await store.start()
    await store.acquire("patient")  # exists: each record below is one script call
    calls = [asyncio.ensure_future(store.record("patient", Outcome(outcome="failure"))) for _ in range(6)]
    await asyncio.sleep(0)  # one loop turn: every call is queued in the batch, which is sent on the next turn
    calls[0].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(not isinstance(result, BaseException) for result in results[1:])
    # The cancelled call was already in the batch: its script ran, only its answer was dropped.
    assert (await store.snapshot("patient")).counts.failure == 6
