"""One suite, two queue stores: `MemoryQueueStore` and `RedisQueueStore` (the `queue_*.lua` scripts) obey the same
rules (breaker_service/store/queue_base.py).

Time as in tests/test_conformance.py: the memory store runs on a fake clock that `advance` moves at once; on Redis
`advance` waits until the server's `TIME` has passed the mark, so leases and delays there are short.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import msgspec
import pytest

from breaker_service.errors import QueueFullError
from breaker_service.store.queue_base import DEFAULT_BOUNDS, IDEMPOTENCY_TTL_S, QueueBounds, QueueLimits
from breaker_service.store.queue_memory import MemoryQueueStore
from tests.test_conformance import FakeClock, RedisTimeClock, StoreClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio

    from breaker_client.protocol.queue_models import Job, QueueStats
    from breaker_service.store.queue_base import QueueStore

Backend = Literal["memory", "redis"]
Q: Final = "sms_outbox"
LEASE_S: Final = 30.0
SHORT_S: Final = 0.05
"""A lease or delay a test lets run out; `advance(SHORT_S)` passes it."""


@dataclass
class QueueKit:
    """The stores under test, their clock, and a way to read dead letters (not part of the API)."""

    backend: Backend
    clock: StoreClock
    redis_url: str | None = None
    redis: redis.asyncio.Redis | None = None
    opened: list[QueueStore] = field(default_factory=list)
    memory: MemoryQueueStore | None = None

    async def store(
        self,
        *,
        max_attempts: dict[str, int] | None = None,
        idempotency_ttl_s: float = IDEMPOTENCY_TTL_S,
        bounds: QueueBounds = DEFAULT_BOUNDS,
    ) -> QueueStore:
        limits = QueueLimits(max_attempts)
        opened: QueueStore
        if self.redis_url is None:
            assert isinstance(self.clock, FakeClock)
            self.memory = MemoryQueueStore(
                max_attempts=limits, clock=self.clock, idempotency_ttl_s=idempotency_ttl_s, bounds=bounds
            )
            opened = self.memory
        else:
            from breaker_service.store.connection_redis import create_redis
            from breaker_service.store.queue_redis import RedisQueueStore

            client = create_redis(self.redis_url)
            opened = RedisQueueStore(
                client, max_attempts=limits, idempotency_ttl_s=idempotency_ttl_s, owns_client=True, bounds=bounds
            )
        await opened.start()
        self.opened.append(opened)
        return opened

    async def dead_letters(self, name: str) -> list[tuple[str, bytes, int, str]]:
        """(id, payload, attempts, error) of each dead letter, oldest first."""
        if self.redis is None:
            assert self.memory is not None
            return [(d.id, d.payload, d.attempts, d.error) for d in self.memory.dead_letters(name)]
        from breaker_service.store.keys import dead_key

        entries = msgspec.convert(await self.redis.xrange(dead_key(name)), list[tuple[bytes, dict[bytes, bytes]]])
        return [(f[b"id"].decode(), f[b"payload"], int(f[b"attempts"]), f[b"error"].decode()) for _, f in entries]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
def redis_side(request: pytest.FixtureRequest, backend: Backend) -> tuple[str, redis.asyncio.Redis] | None:
    """The flushed test Redis (URL and a client for the clock) on the redis half only."""
    if backend == "memory":
        return None
    client: redis.asyncio.Redis = request.getfixturevalue("redis_client")
    url: str = request.getfixturevalue("redis_url")
    return url, client


@pytest.fixture
async def kit(backend: Backend, redis_side: tuple[str, redis.asyncio.Redis] | None) -> AsyncIterator[QueueKit]:
    if redis_side is None:
        built = QueueKit(backend=backend, clock=FakeClock())
    else:
        url, client = redis_side
        built = QueueKit(backend=backend, clock=RedisTimeClock(client), redis_url=url, redis=client)
    try:
        yield built
    finally:
        for store in built.opened:
            await store.close()


@pytest.fixture
async def store(kit: QueueKit) -> QueueStore:
    return await kit.store(max_attempts={Q: 3})


async def enqueued(store: QueueStore, *payloads: object, name: str = Q) -> list[str]:
    return [(await store.enqueue(name, msgspec.json.encode(p))).id for p in payloads]


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


def counts(stats: QueueStats | None) -> tuple[int, int, int, int]:
    """(ready, pending, dead, delayed)."""
    assert stats is not None
    return stats.ready, stats.pending, stats.dead, stats.delayed


# -- enqueue and claim ------------------------------------------------------------------------------------------


async def test_a_claimed_job_carries_the_payload_bytes_as_enqueued(store: QueueStore) -> None:
    raw = b'{"to": "+15550100",  "body": "caf\xc3\xa9", "n": [1, 2.50]}'
    queued = await store.enqueue(Q, raw)
    assert not queued.duplicate

    [job] = await store.claim(Q, "worker-1", max_jobs=10, lease_s=LEASE_S)

    assert (job.id, bytes(job.payload), job.attempts) == (queued.id, raw, 1)


async def test_claim_hands_out_jobs_in_enqueue_order_up_to_max(store: QueueStore) -> None:
    queued = await enqueued(store, *range(5))
    assert queued == sorted(queued, key=lambda i: tuple(map(int, i.split("-"))))

    first = await store.claim(Q, "a", max_jobs=3, lease_s=LEASE_S)
    second = await store.claim(Q, "b", max_jobs=3, lease_s=LEASE_S)

    assert ids(first) == queued[:3]
    assert ids(second) == queued[3:]
    assert [msgspec.json.decode(job.payload) for job in first + second] == list(range(5))
    assert await store.claim(Q, "c", max_jobs=3, lease_s=LEASE_S) == []


async def test_a_consumer_gets_the_jobs_it_still_holds_first_same_attempt(store: QueueStore) -> None:
    """Its last claim answer may have been lost (a timeout, a 503): the jobs are not leased to nobody."""
    queued = await enqueued(store, *range(4))
    lost = await store.claim(Q, "a", max_jobs=2, lease_s=LEASE_S)
    other = await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S)

    again = await store.claim(Q, "a", max_jobs=3, lease_s=LEASE_S)

    assert ids(lost) == queued[:2]
    assert ids(other) == [queued[2]]
    assert ids(again) == [*queued[:2], queued[3]], "held jobs first, then new ones up to max"
    assert [job.attempts for job in again] == [1, 1, 1], "handing a held job back is not a new attempt"
    assert counts(await store.stats(Q)) == (0, 4, 0, 0)


async def test_a_queue_never_used_has_no_stats_and_no_jobs(store: QueueStore) -> None:
    assert await store.stats("never") is None
    assert await store.claim("never", "a", max_jobs=5, lease_s=LEASE_S) == []
    assert await store.ack("never", ["1-0"]) == 0
    nacked = await store.nack("never", ["1-0"], delay_s=0, error=None)
    assert (nacked.requeued, nacked.dead) == (0, 0)
    assert await store.stats("never") is None


async def test_stats_count_ready_pending_delayed_and_dead(kit: QueueKit) -> None:
    store = await kit.store(max_attempts={Q: 1})
    await enqueued(store, "a", "b", "c", "d")
    assert counts(await store.stats(Q)) == (4, 0, 0, 0)

    a, b, c = await store.claim(Q, "w", max_jobs=3, lease_s=LEASE_S)
    assert counts(await store.stats(Q)) == (1, 3, 0, 0)

    await store.nack(Q, [a.id], delay_s=LEASE_S, error=None, count_attempt=False)
    await store.nack(Q, [b.id], delay_s=0, error="boom")
    await store.ack(Q, [c.id])

    # ready: d, plus a (delayed); pending: none; dead: b (its only attempt failed).
    assert counts(await store.stats(Q)) == (2, 0, 1, 1)


# -- ack --------------------------------------------------------------------------------------------------------


async def test_ack_finishes_a_claimed_job_once(store: QueueStore) -> None:
    await enqueued(store, "x")
    [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)

    assert await store.ack(Q, [job.id, job.id]) == 1
    assert await store.ack(Q, [job.id]) == 0
    assert counts(await store.stats(Q)) == (0, 0, 0, 0)
    assert await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S) == []


async def test_ack_finishes_a_job_waiting_for_its_retry_but_not_a_new_one(store: QueueStore) -> None:
    first, second = await enqueued(store, 1, 2)
    [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)
    await store.nack(Q, [job.id], delay_s=LEASE_S, error=None)

    assert await store.ack(Q, [first, second, "123-0"]) == 1

    assert ids(await store.claim(Q, "w", max_jobs=5, lease_s=LEASE_S)) == [second]


# -- nack, delays and leases ------------------------------------------------------------------------------------


async def test_nack_gives_the_job_back_at_once_for_its_next_attempt(store: QueueStore) -> None:
    await enqueued(store, "x")
    [job] = await store.claim(Q, "a", max_jobs=1, lease_s=LEASE_S)

    nacked = await store.nack(Q, [job.id, job.id], delay_s=0, error="provider said no")

    assert (nacked.requeued, nacked.dead) == (1, 0)
    [again] = await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S)
    assert (again.id, again.attempts) == (job.id, 2)


async def test_a_nack_of_a_job_not_claimed_changes_nothing(store: QueueStore) -> None:
    [queued] = await enqueued(store, "x")

    nacked = await store.nack(Q, [queued, "1-1"], delay_s=0, error=None)

    assert (nacked.requeued, nacked.dead) == (0, 0)
    assert counts(await store.stats(Q)) == (1, 0, 0, 0)


async def test_a_delayed_job_is_claimable_only_once_due(kit: QueueKit, store: QueueStore) -> None:
    await enqueued(store, "x")
    [job] = await store.claim(Q, "a", max_jobs=1, lease_s=LEASE_S)
    await store.nack(Q, [job.id], delay_s=SHORT_S, error=None)

    assert counts(await store.stats(Q)) == (1, 0, 0, 1)
    assert await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S) == []

    await kit.clock.advance(SHORT_S)

    assert counts(await store.stats(Q)) == (1, 0, 0, 0)
    [again] = await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S)
    assert (again.id, again.attempts) == (job.id, 2)


async def test_retries_come_before_new_jobs(store: QueueStore) -> None:
    first, second = await enqueued(store, 1, 2)
    [job] = await store.claim(Q, "a", max_jobs=1, lease_s=LEASE_S)
    await store.nack(Q, [job.id], delay_s=0, error=None)

    assert ids(await store.claim(Q, "b", max_jobs=2, lease_s=LEASE_S)) == [first, second]


async def test_an_expired_lease_lets_another_consumer_claim_the_job(kit: QueueKit, store: QueueStore) -> None:
    await enqueued(store, "x")
    [job] = await store.claim(Q, "a", max_jobs=1, lease_s=SHORT_S)
    assert await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S) == []
    assert counts(await store.stats(Q)) == (0, 1, 0, 0)

    await kit.clock.advance(SHORT_S)

    [again] = await store.claim(Q, "b", max_jobs=1, lease_s=LEASE_S)
    assert (again.id, again.attempts) == (job.id, 2)
    # The first consumer finishing late still finishes the job: it is done when acked.
    assert await store.ack(Q, [job.id]) == 1
    assert counts(await store.stats(Q)) == (0, 0, 0, 0)


# -- attempts and dead letters ----------------------------------------------------------------------------------


async def test_the_last_failed_attempt_moves_the_job_to_the_dead_letters(kit: QueueKit, store: QueueStore) -> None:
    [queued] = await enqueued(store, {"to": "+1"})
    for attempt in (1, 2):
        [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)
        assert job.attempts == attempt
        nacked = await store.nack(Q, [job.id], delay_s=0, error=f"failure {attempt}")
        assert (nacked.requeued, nacked.dead) == (1, 0)
    [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)
    assert job.attempts == 3

    nacked = await store.nack(Q, [job.id], delay_s=0, error="failure 3")

    assert (nacked.requeued, nacked.dead) == (0, 1)
    assert counts(await store.stats(Q)) == (0, 0, 1, 0)
    assert await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S) == []
    assert await store.ack(Q, [queued]) == 0
    assert await kit.dead_letters(Q) == [(queued, b'{"to":"+1"}', 3, "failure 3")]


async def test_expired_leases_count_as_failed_attempts(kit: QueueKit) -> None:
    store = await kit.store(max_attempts={Q: 2})
    [queued] = await enqueued(store, "x")
    await store.claim(Q, "a", max_jobs=1, lease_s=SHORT_S)
    await kit.clock.advance(SHORT_S)
    [again] = await store.claim(Q, "b", max_jobs=1, lease_s=SHORT_S)
    assert again.attempts == 2
    await kit.clock.advance(SHORT_S)

    assert await store.claim(Q, "c", max_jobs=1, lease_s=LEASE_S) == []

    assert counts(await store.stats(Q)) == (0, 0, 1, 0)
    assert await kit.dead_letters(Q) == [(queued, b'"x"', 2, "lease expired")]


async def test_a_nack_that_does_not_count_spends_no_attempt(kit: QueueKit) -> None:
    store = await kit.store(max_attempts={Q: 1})
    await enqueued(store, "x")
    for _ in range(3):
        [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)
        assert job.attempts == 1
        nacked = await store.nack(Q, [job.id], delay_s=0, error="circuit open", count_attempt=False)
        assert (nacked.requeued, nacked.dead) == (1, 0)
    [job] = await store.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)

    nacked = await store.nack(Q, [job.id], delay_s=0, error=None)

    assert (nacked.requeued, nacked.dead) == (0, 1)
    assert [letter[2:] for letter in await kit.dead_letters(Q)] == [(1, "nacked")]


async def test_max_attempts_is_per_queue_with_a_default_of_five(kit: QueueKit) -> None:
    store = await kit.store(max_attempts={"strict": 1})
    for name, attempts in (("strict", 1), ("lenient", 5)):
        await enqueued(store, "x", name=name)
        for _ in range(attempts):
            [job] = await store.claim(name, "w", max_jobs=1, lease_s=LEASE_S)
            nacked = await store.nack(name, [job.id], delay_s=0, error=None)
        assert (nacked.requeued, nacked.dead) == (0, 1), name


# -- idempotency ------------------------------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_answers_the_first_job(store: QueueStore) -> None:
    first = await store.enqueue(Q, b"1", "order-7")
    again = await store.enqueue(Q, b"2", "order-7")
    other = await store.enqueue(Q, b"3", "order-8")
    elsewhere = await store.enqueue("other", b"4", "order-7")

    assert (again.id, again.duplicate) == (first.id, True)
    assert not other.duplicate
    assert other.id != first.id
    assert not elsewhere.duplicate
    assert counts(await store.stats(Q)) == (2, 0, 0, 0)
    [job, _] = await store.claim(Q, "w", max_jobs=2, lease_s=LEASE_S)
    assert bytes(job.payload) == b"1"
    await store.ack(Q, [job.id])
    # Still remembered once the job is done: a retried producer must not send the SMS twice.
    assert await store.enqueue(Q, b"5", "order-7") == again


async def test_an_idempotency_key_is_forgotten_after_its_ttl(kit: QueueKit) -> None:
    store = await kit.store(idempotency_ttl_s=SHORT_S)
    first = await store.enqueue(Q, b"1", "k")
    await kit.clock.advance(SHORT_S)

    later = await store.enqueue(Q, b"2", "k")

    assert not later.duplicate
    assert later.id != first.id


# -- concurrency ------------------------------------------------------------------------------------------------


async def test_concurrent_claims_never_hand_one_job_to_two_consumers(kit: QueueKit, store: QueueStore) -> None:
    queued = await enqueued(store, *range(40))
    others = [await kit.store(max_attempts={Q: 3}) for _ in range(2)] if kit.backend == "redis" else []
    stores = itertools.cycle([store, *others])

    batches = await asyncio.gather(
        *(next(stores).claim(Q, f"consumer-{i}", max_jobs=2, lease_s=LEASE_S) for i in range(50))
    )

    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 40
    assert sorted(claimed) == sorted(queued)
    assert counts(await store.stats(Q)) == (0, 40, 0, 0)


async def test_concurrent_enqueues_with_one_key_make_one_job(store: QueueStore) -> None:
    answers = await asyncio.gather(*(store.enqueue(Q, b"{}", "same") for _ in range(20)))

    assert len({a.id for a in answers}) == 1
    assert sum(not a.duplicate for a in answers) == 1
    assert counts(await store.stats(Q)) == (1, 0, 0, 0)


# -- bounds and purge (DESIGN.md v1.1, "Hostile input and abuse") ------------------------------------------------


async def test_a_full_queue_refuses_a_job_until_one_is_acked(kit: QueueKit) -> None:
    bounded = await kit.store(max_attempts={Q: 3}, bounds=QueueBounds(max_jobs=2))
    first, _ = await enqueued(bounded, 1, 2)

    with pytest.raises(QueueFullError) as refused:
        await bounded.enqueue(Q, b"3")

    assert refused.value.details == {"max_jobs": 2, "jobs": 2}
    assert counts(await bounded.stats(Q)) == (2, 0, 0, 0)
    [job] = await bounded.claim(Q, "w", max_jobs=1, lease_s=LEASE_S)
    assert job.id == first
    await bounded.ack(Q, [first])
    assert not (await bounded.enqueue(Q, b"3")).duplicate


async def test_a_full_queue_still_answers_a_repeated_idempotency_key(kit: QueueKit) -> None:
    bounded = await kit.store(bounds=QueueBounds(max_jobs=1))
    queued = await bounded.enqueue(Q, b"1", "key-1")

    again = await bounded.enqueue(Q, b"1", "key-1")

    assert (again.id, again.duplicate) == (queued.id, True)
    with pytest.raises(QueueFullError):
        await bounded.enqueue(Q, b"2", "key-2")


async def test_dead_letters_count_toward_the_bound_until_purged(kit: QueueKit) -> None:
    bounded = await kit.store(max_attempts={Q: 1}, bounds=QueueBounds(max_jobs=2))
    await enqueued(bounded, "a", "b")
    jobs = await bounded.claim(Q, "w", max_jobs=2, lease_s=LEASE_S)
    assert (await bounded.nack(Q, ids(jobs), delay_s=0, error="no")).dead == 2
    with pytest.raises(QueueFullError):
        await bounded.enqueue(Q, b"c")

    assert await bounded.purge_dead(Q) == 2

    assert counts(await bounded.stats(Q)) == (0, 0, 0, 0)
    assert await kit.dead_letters(Q) == []
    await bounded.enqueue(Q, b"c")
    assert await bounded.purge_dead(Q) == 0


async def test_purge_of_a_queue_never_used_is_none(store: QueueStore) -> None:
    assert await store.purge_dead("never") is None
    assert await store.stats("never") is None


async def test_a_claim_hands_out_payloads_up_to_its_byte_budget(kit: QueueKit) -> None:
    bounded = await kit.store(bounds=QueueBounds(max_claim_bytes=100))
    queued = await enqueued(bounded, *(["x" * 38] * 5))  # 40 bytes each with the quotes

    first = await bounded.claim(Q, "w", max_jobs=10, lease_s=LEASE_S)
    second = await bounded.claim(Q, "w2", max_jobs=10, lease_s=LEASE_S)  # "w" would get its own jobs back first

    assert ids(first) == queued[:2]
    assert ids(second) == queued[2:4]
    assert counts(await bounded.stats(Q)) == (1, 4, 0, 0)


async def test_a_consumers_held_jobs_come_back_first_within_the_byte_budget(kit: QueueKit) -> None:
    bounded = await kit.store(bounds=QueueBounds(max_claim_bytes=100))
    queued = await enqueued(bounded, *(["x" * 38] * 5))  # 40 bytes each with the quotes

    first = await bounded.claim(Q, "w", max_jobs=10, lease_s=LEASE_S)
    again = await bounded.claim(Q, "w", max_jobs=10, lease_s=LEASE_S)  # its first answer was lost

    assert ids(first) == ids(again) == queued[:2], "its own two jobs fill the budget; nothing new is leased"
    assert [job.attempts for job in again] == [1, 1]
    assert counts(await bounded.stats(Q)) == (3, 2, 0, 0)


async def test_a_payload_over_the_budget_still_goes_out_alone(kit: QueueKit) -> None:
    bounded = await kit.store(bounds=QueueBounds(max_claim_bytes=10))
    big, small = await enqueued(bounded, "x" * 20, 1)

    assert ids(await bounded.claim(Q, "w", max_jobs=10, lease_s=LEASE_S)) == [big]
    assert ids(await bounded.claim(Q, "w2", max_jobs=10, lease_s=LEASE_S)) == [small]


async def test_retries_keep_to_the_byte_budget_and_wait_their_turn(kit: QueueKit) -> None:
    bounded = await kit.store(bounds=QueueBounds(max_claim_bytes=100))
    queued = await enqueued(bounded, *(["x" * 38] * 3))
    jobs = await bounded.claim(Q, "w", max_jobs=2, lease_s=LEASE_S)
    await bounded.nack(Q, ids(jobs), delay_s=0, error=None)

    again = await bounded.claim(Q, "w", max_jobs=10, lease_s=LEASE_S)
    last = await bounded.claim(Q, "w2", max_jobs=10, lease_s=LEASE_S)

    assert ids(again) == queued[:2]
    assert [job.attempts for job in again] == [2, 2]
    assert ids(last) == queued[2:]
