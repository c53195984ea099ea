"""Two real service replicas on one real Redis: the cluster-wide guarantees hold over HTTP.

Every replica is a `python -m breaker_service` subprocess (tests/fixtures/service.py). The tests wait on changes
they can observe (a snapshot, a readiness answer), bounded, and assert no timings.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from tests._waiting import wait_until
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio

    from tests.fixtures.redis_server import RedisServerFactory
    from tests.fixtures.service import ServiceFactory, ServiceProcess

FAILURES: Final = 120
ACQUIRES: Final = 24


@contextlib.asynccontextmanager
async def http_clients(services: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS, timeout=10.0)
            )
            for service in services
        ]
        yield clients


@pytest.fixture
def replicas(
    service_factory: ServiceFactory, redis_url: str, redis_client: redis.asyncio.Redis
) -> list[ServiceProcess]:
    # `redis_client` flushes the shared database before the replicas start.
    return [service_factory(redis_url), service_factory(redis_url)]


@pytest.fixture
async def clients(replicas: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with http_clients(replicas) as both:
        yield both


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def configure(client: httpx.AsyncClient, name: str, **config: float) -> dict[str, Any]:
    body: dict[str, Any] = ok(await client.put(f"/breakers/{name}", json=config, headers=ADMIN_HEADERS))
    return body


async def snapshot(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(await client.get(f"/breakers/{name}"))
    return body


async def acquire(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(await client.post(f"/breakers/{name}/acquire", json={}))
    return body


async def record(client: httpx.AsyncClient, name: str, outcome: str, **extra: object) -> dict[str, Any]:
    body: dict[str, Any] = ok(await client.post(f"/breakers/{name}/record", json={"outcome": outcome, **extra}))
    return body


async def transitions(client: httpx.AsyncClient, name: str, from_state: str, to_state: str) -> int:
    history = ok(await client.get(f"/breakers/{name}/history"))["transitions"]
    return sum(1 for t in history if t["from"] == from_state and t["to"] == to_state)


async def open_until_probes_allowed(clients: list[httpx.AsyncClient], name: str) -> None:
    """Trip the breaker (failure_threshold 1) and wait until its short open time has run out."""
    assert (await record(clients[0], name, "failure"))["state"] == "OPEN"

    async def timed_out() -> bool:
        return bool((await snapshot(clients[1], name))["retry_after_s"] == 0)

    await wait_until(timed_out, f"{name}'s open time to run out")


async def test_concurrent_failures_across_replicas_trip_the_breaker_exactly_once(
    clients: list[httpx.AsyncClient],
) -> None:
    await configure(clients[0], "trip", failure_threshold=10, open_timeout_s=600)
    await asyncio.gather(*(record(clients[i % 2], "trip", "failure") for i in range(FAILURES)))

    final = await snapshot(clients[1], "trip")
    assert final["state"] == "OPEN"
    assert final["counts"]["failure"] == FAILURES
    assert await transitions(clients[0], "trip", "CLOSED", "OPEN") == 1


async def test_half_open_permits_are_capped_cluster_wide(clients: list[httpx.AsyncClient]) -> None:
    await configure(clients[0], "probe", failure_threshold=1, open_timeout_s=0.05, half_open_max_calls=3)
    await open_until_probes_allowed(clients, "probe")

    decisions = await asyncio.gather(*(acquire(clients[i % 2], "probe") for i in range(ACQUIRES)))
    allowed = [d for d in decisions if d["allowed"]]
    assert len(allowed) == 3
    assert len({d["permit"] for d in allowed}) == 3
    assert all(d["state"] == "HALF_OPEN" for d in decisions)
    assert await transitions(clients[1], "probe", "OPEN", "HALF_OPEN") == 1


async def test_an_expired_permit_frees_its_slot(
    clients: list[httpx.AsyncClient], redis_client: redis.asyncio.Redis
) -> None:
    # A permit lives far longer than the test's requests take on a busy machine; the test ends it itself.
    await configure(
        clients[0],
        "lease",
        failure_threshold=1,
        open_timeout_s=0.05,
        half_open_max_calls=1,
        success_threshold=1,
        permit_ttl_s=600,
    )
    await open_until_probes_allowed(clients, "lease")
    first = await acquire(clients[0], "lease")
    assert first["allowed"]
    assert not (await acquire(clients[1], "lease"))["allowed"]

    await redis_client.zadd("brk:{lease}:permits", {first["permit"]: 0}, xx=True)  # its ttl has run out
    second = await acquire(clients[1], "lease")
    assert second["allowed"]
    assert second["permit"] != first["permit"]
    # The expired permit is no longer valid: its success counts, and changes no state.
    late = await record(clients[0], "lease", "success", permit=first["permit"], generation=first["generation"])
    assert late["state"] == "HALF_OPEN"
    assert late["consecutive_successes"] == 0
    assert late["counts"]["success"] == 1


async def test_an_outcome_from_a_stale_generation_changes_nothing(clients: list[httpx.AsyncClient]) -> None:
    await configure(clients[0], "stale", failure_threshold=1, open_timeout_s=600)
    before_trip = await acquire(clients[0], "stale")
    assert (await record(clients[0], "stale", "failure"))["state"] == "OPEN"
    reset = ok(await clients[0].post("/breakers/stale/reset", json={"reason": "test"}, headers=ADMIN_HEADERS))
    assert reset["state"] == "CLOSED"

    late = await record(clients[1], "stale", "failure", generation=before_trip["generation"])
    assert late["state"] == "CLOSED"
    assert late["generation"] == reset["generation"]
    assert late["consecutive_failures"] == 0
    assert late["counts"]["failure"] == 1


async def test_a_forced_state_set_on_one_replica_is_seen_by_the_other(clients: list[httpx.AsyncClient]) -> None:
    forced = ok(
        await clients[0].post(
            "/breakers/forced/force-open?create=true",
            json={"reason": "maintenance", "ttl_s": None},
            headers=ADMIN_HEADERS,
        )
    )
    assert forced["forced"] == "OPEN"

    seen = await snapshot(clients[1], "forced")
    assert seen["forced"] == "OPEN"
    assert seen["generation"] == forced["generation"]
    decision = await acquire(clients[1], "forced")
    assert not decision["allowed"]
    assert decision["state"] == "OPEN"


async def test_a_flushed_script_cache_is_reloaded(
    clients: list[httpx.AsyncClient], redis_client: redis.asyncio.Redis
) -> None:
    await configure(clients[0], "flushed", failure_threshold=5)
    assert (await acquire(clients[0], "flushed"))["allowed"]
    await redis_client.script_flush()

    for client in clients:
        assert (await acquire(client, "flushed"))["allowed"]
        assert (await record(client, "flushed", "failure"))["counts"]["failure"] >= 1
        assert (await snapshot(client, "flushed"))["name"] == "flushed"
    assert ok(await clients[1].get("/breakers"))["breakers"]


async def test_a_replica_degrades_while_redis_is_down_and_returns_by_itself(
    service_factory: ServiceFactory, redis_server_factory: RedisServerFactory
) -> None:
    server = redis_server_factory()
    services = [service_factory(server.url), service_factory(server.url)]
    async with http_clients(services) as clients:
        await configure(clients[0], "outage", failure_threshold=5)
        for client in clients:
            assert not (await acquire(client, "outage"))["degraded"]
            assert (await client.get("/health/ready")).status_code == 200

        # Traffic keeps flowing through the outage and the recovery, and never sees an error.
        statuses: list[int] = []
        done = asyncio.Event()

        async def traffic() -> None:
            sent = 0
            while not done.is_set():
                response = await clients[sent % 2].post("/breakers/background/acquire", json={})
                statuses.append(response.status_code)
                sent += 1

        background = asyncio.create_task(traffic())
        server.kill()
        for client in clients:
            decision = await acquire(client, "outage")
            assert decision["degraded"] is True
            assert decision["allowed"]
            assert (await client.get("/health/ready")).status_code == 503
        refused = await clients[0].post(
            "/breakers/outage/force-open?create=true",
            json={"reason": "during outage", "ttl_s": None},
            headers=ADMIN_HEADERS,
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "ORC_005"
        # Local state: failures on one replica open its local breaker; the other replica's stays closed.
        for _ in range(5):
            await record(clients[0], "outage", "failure")
        assert not (await acquire(clients[0], "outage"))["allowed"]
        assert (await acquire(clients[1], "outage"))["allowed"]

        server.restart()
        for client in clients:

            async def ready(client: httpx.AsyncClient = client) -> bool:
                return (await client.get("/health/ready")).status_code == 200

            await wait_until(ready, f"{client.base_url} to be ready again")
            back = await acquire(client, "outage")
            assert back["degraded"] is False
            assert back["allowed"]  # the Redis that came back is empty: shared state wins over the local OPEN
        done.set()
        await background
        assert statuses
        assert set(statuses) == {200}

        forced = await clients[0].post(
            "/breakers/outage/force-open?create=true",
            json={"reason": "after outage", "ttl_s": None},
            headers=ADMIN_HEADERS,
        )
        assert ok(forced)["forced"] == "OPEN"
        assert not (await acquire(clients[1], "outage"))["allowed"]


async def test_the_classic_sequence_over_raw_http_across_two_replicas(clients: list[httpx.AsyncClient]) -> None:
    # A caller that speaks plain HTTP: acquire `{}`, call, record without a permit, on whichever replica answers.
    await configure(clients[0], "classic", failure_threshold=5, open_timeout_s=600)

    decisions: list[dict[str, Any]] = []
    for i in range(4):  # a fresh (unproven) breaker: v1 denied the 4th acquire with state CLOSED here
        decisions.append(await acquire(clients[i % 2], "classic"))
        await record(clients[(i + 1) % 2], "classic", "failure")
    assert all((d["allowed"], d["permit"], d["state"]) == (True, None, "CLOSED") for d in decisions)
    assert (await snapshot(clients[1], "classic"))["consecutive_failures"] == 4

    ended = await record(clients[0], "classic", "success")  # a success ends the streak, as in every breaker
    assert (ended["state"], ended["consecutive_failures"]) == ("CLOSED", 0)

    for i in range(5):
        assert (await acquire(clients[i % 2], "classic"))["allowed"]
        last = await record(clients[(i + 1) % 2], "classic", "failure")
    assert last["state"] == "OPEN"
    denied = await acquire(clients[1], "classic")
    assert (denied["allowed"], denied["state"]) == (False, "OPEN")
    assert 0 < denied["retry_after_s"] <= 600


async def test_a_force_shows_in_state_and_a_report_id_counts_once_across_replicas(
    clients: list[httpx.AsyncClient],
) -> None:
    await configure(clients[0], "pinned", failure_threshold=5)
    forced = ok(
        await clients[0].post("/breakers/pinned/force-open", json={"reason": "maintenance"}, headers=ADMIN_HEADERS)
    )
    seen = await snapshot(clients[1], "pinned")
    assert (seen["state"], seen["machine_state"], seen["forced"]) == ("OPEN", "CLOSED", "OPEN")
    assert seen["force"] == {"mode": "OPEN", "until": None, "actor": "test-admin", "reason": "maintenance"}
    assert seen["generation"] == forced["generation"]

    first = await record(clients[0], "pinned", "failure", count=2, report_id="retry-me.1")
    again = await record(clients[1], "pinned", "failure", count=2, report_id="retry-me.1")  # a retry elsewhere
    refused = await record(clients[1], "pinned", "rejected", count=3)
    assert (first["counts"]["failure"], again["counts"]["failure"]) == (2, 2)
    assert refused["counts"]["rejected"] == 3
