"""Two real replicas through Redis faults: an SRE's force survives FLUSHALL and an empty restart, a replica that
never reached Redis refuses to guess, and a hung Redis (SIGSTOP) never applies a write twice (DESIGN.md v1.1).

Replicas are `python -m breaker_service` subprocesses on a dedicated redis-server each test flushes, restarts empty
or stops. Waits are bounded and poll observable state; answer times are printed (`-s`), never asserted: the
figures go in scripts/chaos.py's table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import redis.asyncio

from tests._waiting import wait_until
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis_server import RedisServer, RedisServerFactory
    from tests.fixtures.service import ServiceFactory, ServiceProcess

RESTORE_REASON: Final = "restored after store reset"
RESTORE_WAIT_S: Final = 20.0
"""Generous over the contract's 10 s: the machine is busy; chaos.py measures the real time."""
PAUSE_S: Final = 5.0
STORE_TIMEOUT_S: Final = 2.0


@pytest.fixture
def server(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory()


@contextlib.asynccontextmanager
async def clients_of(services: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=s.url, headers=CLIENT_HEADERS, timeout=30.0))
            for s in services
        ]


def ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 202), response.text
    return response.json()


async def force_open(client: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    path = f"/breakers/{name}/force-open?create=true"
    answer: dict[str, Any] = ok(await client.post(path, json={"reason": "incident 42", **body}, headers=ADMIN_HEADERS))
    return answer


async def restored_everywhere(clients: list[httpx.AsyncClient], name: str, generation: int) -> bool:
    """Every replica reads `name` forced OPEN from the shared store, above `generation`, with one restore entry."""
    for client in clients:
        answer = await client.get(f"/breakers/{name}")
        if answer.status_code != 200:
            return False
        snapshot = answer.json()
        if snapshot["forced"] != "OPEN" or snapshot["generation"] <= generation:
            return False
    history = await clients[0].get(f"/breakers/{name}/history")
    if history.status_code != 200:
        return False
    return [t["reason"] for t in history.json()["transitions"]].count(RESTORE_REASON) == 1


async def assert_restored(clients: list[httpx.AsyncClient], name: str, generation: int) -> None:
    async def back() -> bool:
        return await restored_everywhere(clients, name, generation)

    started = time.monotonic()
    await wait_until(back, f"{name} forced OPEN again on every replica", timeout_s=RESTORE_WAIT_S)
    print(f"restored on every replica after {time.monotonic() - started:.2f} s")
    for client in clients:
        decision = ok(await client.post(f"/breakers/{name}/acquire", json={}))
        assert not decision["allowed"]
    history = ok(await clients[1].get(f"/breakers/{name}/history"))["transitions"]
    assert [t["reason"] for t in history].count(RESTORE_REASON) == 1, "one entry however many replicas restored"
    assert ok(await clients[0].get("/breakers/openai"))["name"] == "openai", "config-file breakers are back"


async def test_a_force_is_back_on_every_replica_after_flushall(
    service_factory: ServiceFactory, server: RedisServer
) -> None:
    replicas = [service_factory(server.url), service_factory(server.url)]
    async with clients_of(replicas) as clients:
        forced = await force_open(clients[0], "payments", ttl_s=600)
        ok(await clients[1].get("/breakers/payments"))
        admin = redis.asyncio.Redis.from_url(server.url)
        try:
            await admin.flushall()
        finally:
            await admin.aclose()
        await assert_restored(clients, "payments", forced["generation"])
        left = ok(await clients[1].get("/breakers/payments"))["retry_after_s"]
        assert left is not None
        assert 0 < left <= 600, "the force keeps the time it had left"


async def test_a_force_is_back_on_every_replica_after_an_empty_restart(
    service_factory: ServiceFactory, server: RedisServer
) -> None:
    replicas = [service_factory(server.url), service_factory(server.url)]
    async with clients_of(replicas) as clients:
        forced = await force_open(clients[1], "payments")
        ok(await clients[0].get("/breakers/payments"))
        server.restart()
        await assert_restored(clients, "payments", forced["generation"])


async def test_a_replica_started_while_redis_is_down_refuses_until_it_has_read_it(
    service_factory: ServiceFactory, server: RedisServer
) -> None:
    server.stop()
    replica = service_factory(server.url)
    async with clients_of([replica]) as (client,):
        assert (await client.get("/health/ready")).status_code == 503
        for path, body in (("acquire", {}), ("record", {"outcome": "failure"})):
            answer = await client.post(f"/breakers/openai/{path}", json=body)
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "ORC_005"
        server.start()

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_until(ready, "the replica to read its store")
        assert ok(await client.post("/breakers/openai/acquire", json={}))["allowed"]


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer: httpx.Response = await call
    return answer, time.monotonic() - started


async def test_a_hung_redis_applies_each_write_once_and_no_request_waits_on_it(
    service_factory: ServiceFactory, server: RedisServer
) -> None:
    replicas = [service_factory(server.url), service_factory(server.url)]
    async with clients_of(replicas) as clients:
        for client in clients:
            ok(await client.put("/breakers/payments", json={"failure_threshold": 50}, headers=ADMIN_HEADERS))
        ok(await clients[0].post("/queues/sms/jobs", json={"payload": "warm", "idempotency_key": "warm"}))
        ok_claim = ok(await clients[0].post("/queues/sms/claim", json={"consumer": "warm", "max": 1, "lease_s": 60}))
        ok(await clients[0].post("/queues/sms/ack", json={"ids": [ok_claim["jobs"][0]["id"]]}))

        times: list[float] = []
        server.pause()
        try:
            paused_at = time.monotonic()
            # Per replica, one record after another: the first is sent and meets the hang; the rest are answered
            # from local state (degraded). Enqueues and claims have no local fallback: 503, outcome unknown.
            for client in clients:
                for _ in range(3):
                    answer, took = await timed(client.post("/breakers/payments/record", json={"outcome": "failure"}))
                    times.append(took)
                    assert answer.status_code in (200, 503)
            enqueues = [
                await timed(clients[i % 2].post("/queues/sms/jobs", json={"payload": i, "idempotency_key": f"k{i}"}))
                for i in range(3)
            ]
            claim, took = await timed(
                clients[0].post("/queues/sms/claim", json={"consumer": "c1", "max": 1, "lease_s": 600})
            )
            times += [took for _, took in enqueues] + [took]
            assert all(answer.status_code == 503 for answer, _ in enqueues)
            assert claim.status_code == 503
            remaining = PAUSE_S - (time.monotonic() - paused_at)
            if remaining > 0:
                await asyncio.sleep(remaining)  # the outage itself: Redis stays stopped PAUSE_S in all
        finally:
            server.resume()
        print("answer times while Redis was stopped (s):", " ".join(f"{t:.2f}" for t in times))

        async def both_ready() -> bool:
            return [(await c.get("/health/ready")).status_code for c in clients] == [200, 200]

        await wait_until(both_ready, "both replicas back on Redis")
        snapshot = ok(await clients[0].get("/breakers/payments"))
        # One record per replica reached Redis (the rest were answered from local state): each ran at most once when
        # Redis resumed (on a connection opened during the pause it was never sent: redis-py's handshake timed out).
        print("failures counted in Redis:", snapshot["counts"]["failure"])
        assert snapshot["counts"]["failure"] <= 2
        assert snapshot["consecutive_failures"] == snapshot["counts"]["failure"]

        # The enqueues answered 503 (outcome unknown); sent again with their keys, each is one job, never two.
        again = [
            ok(await clients[(i + 1) % 2].post("/queues/sms/jobs", json={"payload": i, "idempotency_key": f"k{i}"}))
            for i in range(3)
        ]
        assert len({job["id"] for job in again}) == 3
        # Whether the lost claim ran or not, the consumer's next claim answers three distinct first attempts.
        held = ok(await clients[1].post("/queues/sms/claim", json={"consumer": "c1", "max": 3, "lease_s": 60}))
        assert sorted(job["id"] for job in held["jobs"]) == sorted(job["id"] for job in again)
        assert [job["attempts"] for job in held["jobs"]] == [1, 1, 1]
        stats = ok(await clients[0].get("/queues/sms"))
        assert (stats["ready"], stats["pending"]) == (0, 3), "three jobs, none twice"
