"""Two real service replicas on one real Redis: a queue is one queue, delivered at least once across replicas.

Each replica is a `python -m breaker_service` subprocess (tests/fixtures/service.py). The test waits on changes it
can observe (a claim that hands out jobs again), bounded, and asserts no timings.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, Final

from tests._waiting import wait_until
from tests.test_replicas import http_clients, ok

if TYPE_CHECKING:
    import httpx
    import redis.asyncio

    from tests.fixtures.service import ServiceFactory

Q: Final = "sms_outbox"
JOBS: Final = 30
LEASE_S: Final = 600.0
"""Longer than any test runs: a lease runs out only when the test says so (expire_leases)."""


async def claim(client: httpx.AsyncClient, consumer: str, *, max_jobs: int, lease_s: float) -> list[dict[str, Any]]:
    body = {"consumer": consumer, "max": max_jobs, "lease_s": lease_s}
    jobs: list[dict[str, Any]] = ok(await client.post(f"/queues/{Q}/claim", json=body))["jobs"]
    return jobs


async def expire_leases(redis_client: redis.asyncio.Redis, job_ids: list[str]) -> None:
    """Makes these jobs' leases run out now, as if their consumer had died long ago, without waiting for a clock
    on a machine whose load decides how long the concurrent claims take."""
    await redis_client.zadd(f"q:{{{Q}}}:leases", dict.fromkeys(job_ids, 0), xx=True)


async def test_jobs_are_delivered_at_least_once_across_replicas(
    service_factory: ServiceFactory, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    replicas = [service_factory(redis_url), service_factory(redis_url)]
    async with http_clients(replicas) as (a, b):
        answers = await asyncio.gather(
            *(
                (a, b)[i % 2].post(f"/queues/{Q}/jobs", json={"payload": {"n": i}, "idempotency_key": f"k{i}"})
                for i in range(JOBS)
            )
        )
        assert [r.status_code for r in answers] == [202] * JOBS
        # The same keys through the other replica are duplicates: one queue, one set of keys.
        again = await b.post(f"/queues/{Q}/jobs", json={"payload": {"n": 0}, "idempotency_key": "k0"})
        assert again.json() == {"id": answers[0].json()["id"], "duplicate": True}

        # A consumer on replica A claims 5 jobs and dies with them; consumers on both replicas claim concurrently.
        lost = await claim(a, "doomed", max_jobs=5, lease_s=LEASE_S)
        batches = await asyncio.gather(
            *(claim((a, b)[i % 2], f"worker-{i}", max_jobs=3, lease_s=LEASE_S) for i in range(20))
        )
        handed = [job["id"] for batch in batches for job in batch]
        assert len(handed) == len(set(handed)) == JOBS - len(lost)
        assert not set(handed) & {job["id"] for job in lost}
        assert ok(await b.post(f"/queues/{Q}/ack", json={"ids": handed})) == {"acked": len(handed)}

        # Once the lost leases run out, replica B hands those jobs out again, as second attempts.
        await expire_leases(redis_client, [job["id"] for job in lost])
        recovered: list[dict[str, Any]] = []

        async def reclaimed() -> bool:
            recovered.extend(await claim(b, "rescuer", max_jobs=10, lease_s=LEASE_S))
            return len(recovered) >= len(lost)

        await wait_until(reclaimed, "the expired leases to be claimable on the other replica")
        assert sorted(job["id"] for job in recovered) == sorted(job["id"] for job in lost)
        assert {job["attempts"] for job in recovered} == {2}
        assert ok(await a.post(f"/queues/{Q}/ack", json={"ids": [job["id"] for job in recovered]})) == {"acked": 5}

        payloads = collections.Counter(job["payload"]["n"] for job in [*recovered, *(j for bt in batches for j in bt)])
        assert payloads == collections.Counter(range(JOBS))
        assert ok(await a.get(f"/queues/{Q}")) == {"ready": 0, "pending": 0, "dead": 0, "delayed": 0}
