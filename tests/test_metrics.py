"""`GET /metrics` across two real replicas on one Redis: store gauges agree, counters add up to the fleet's.

Also the memory store in-process (its transitions are counted from its own events) and the rate-window reading.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from breaker_client.protocol.models import State
from breaker_service.store.scripts_redis import made_transitions
from breaker_service.store.window import bucket_ms, window_totals
from tests._waiting import wait_until
from tests.fixtures.app import ADMIN, CLIENT
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import redis.asyncio

    from tests.fixtures.redis_server import RedisServerFactory
    from tests.fixtures.service import ServiceFactory, ServiceProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STATES: Final = ("CLOSED", "OPEN", "HALF_OPEN")


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented is not exposed)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def only(samples: Samples, prefix: str) -> Samples:
    return {key: v for key, v in samples.items() if key[0].startswith(prefix)}


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@contextlib.asynccontextmanager
async def clients_of(services: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS, timeout=10.0)
            )
            for service in services
        ]


@pytest.fixture
async def pair(
    service_factory: ServiceFactory, redis_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[list[httpx.AsyncClient]]:
    # `redis_client` flushes the shared database before the replicas start.
    async with clients_of([service_factory(redis_url), service_factory(redis_url)]) as both:
        yield both


async def put(client: httpx.AsyncClient, name: str, config: Mapping[str, float]) -> None:
    response = await client.put(f"/breakers/{name}", json=dict(config), headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text


async def record(client: httpx.AsyncClient, name: str, outcome: str, **extra: float) -> None:
    response = await client.post(f"/breakers/{name}/record", json={"outcome": outcome, **extra})
    assert response.status_code == 200, response.text


async def test_state_gauges_are_the_same_on_both_replicas_and_follow_a_trip(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    await put(first, "payments", {"failure_threshold": 2, "open_timeout_s": 600})
    before = await scrape(second)
    assert [value(before, "breaker_state", breaker="payments", state=s) for s in STATES] == [1.0, 0.0, 0.0]
    trip = {"breaker": "payments", "from_state": "CLOSED", "to_state": "OPEN"}
    assert ("breaker_transitions_total", frozenset(trip.items())) in before  # at 0, so increase() sees the first

    await record(second, "payments", "failure")
    await record(second, "payments", "failure")

    one, two = await scrape(first), await scrape(second)
    for samples in (one, two):
        assert [value(samples, "breaker_state", breaker="payments", state=s) for s in STATES] == [0.0, 1.0, 0.0]
        assert value(samples, "breaker_consecutive_failures", breaker="payments") == 0.0  # a trip starts afresh
        assert value(samples, "breaker_store_up") == 1.0
    assert only(one, "breaker_state") == only(two, "breaker_state")


async def test_transitions_are_counted_once_for_the_fleet(pair: list[httpx.AsyncClient]) -> None:
    """Both replicas hear the transition on the events channel; only the one whose script made it counts it."""
    first, second = pair
    await put(first, "ledger", {"failure_threshold": 1, "open_timeout_s": 600})
    await record(second, "ledger", "failure")
    forced = await first.post("/breakers/ledger/force-close", json={"reason": "drill"}, headers=ADMIN_HEADERS)
    assert forced.status_code == 200, forced.text

    one, two = await scrape(first), await scrape(second)
    trip = {"breaker": "ledger", "from_state": "CLOSED", "to_state": "OPEN"}
    force = {"breaker": "ledger", "from_state": "OPEN", "to_state": "CLOSED"}
    assert (value(one, "breaker_transitions_total", **trip), value(two, "breaker_transitions_total", **trip)) == (0, 1)
    assert (value(one, "breaker_transitions_total", **force), value(two, "breaker_transitions_total", **force)) == (
        1,
        0,
    )


async def test_call_counters_sum_to_the_fleet_and_durations_are_observed(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    slow = {"window_s": 60, "min_calls": 1000, "slow_call_ms": 500, "slow_call_rate": 1.0, "failure_threshold": 1000}
    await put(first, "search", slow)
    await record(first, "search", "success", count=3, duration_ms=20)
    await record(second, "search", "success", count=2, duration_ms=900)  # slow: at or above slow_call_ms
    await record(second, "search", "failure", duration_ms=1200)  # slow too
    await record(first, "search", "failure")  # no duration: counted, not timed

    one, two = await scrape(first), await scrape(second)

    def fleet(name: str, **labels: str) -> float:
        return value(one, name, **labels) + value(two, name, **labels)

    assert fleet("breaker_calls_total", breaker="search", kind="success") == 5
    assert fleet("breaker_calls_total", breaker="search", kind="failure") == 2
    assert fleet("breaker_calls_total", breaker="search", kind="slow") == 3
    assert value(one, "breaker_calls_total", breaker="search", kind="success") == 3
    assert fleet("breaker_call_duration_seconds_count", breaker="search") == 3  # one observation per report
    assert fleet("breaker_call_duration_seconds_sum", breaker="search") == pytest.approx(0.02 + 0.9 + 1.2)
    assert value(two, "breaker_call_duration_seconds_bucket", breaker="search", le="1.0") == 1


async def test_denied_acquires_count_as_rejected_calls(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    path = "/breakers/inventory/force-open?create=true"
    opened = await first.post(path, json={"reason": "drill"}, headers=ADMIN_HEADERS)
    assert opened.status_code == 200, opened.text
    for client in (first, second, second):
        decision = await client.post("/breakers/inventory/acquire", json={})
        assert decision.json()["allowed"] is False
    one, two = await scrape(first), await scrape(second)
    assert value(one, "breaker_calls_total", breaker="inventory", kind="rejected") == 1
    assert value(two, "breaker_calls_total", breaker="inventory", kind="rejected") == 2
    assert value(one, "breaker_forced", breaker="inventory") == value(two, "breaker_forced", breaker="inventory") == 1


async def test_window_rate_gauges_read_the_shared_window(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    await put(first, "quotes", {"window_s": 600, "min_calls": 1000, "failure_rate": 0.9})
    await record(first, "quotes", "failure")
    await record(second, "quotes", "success", count=3)
    for samples in (await scrape(first), await scrape(second)):
        assert value(samples, "breaker_window_failure_rate", breaker="quotes") == 0.25
        assert value(samples, "breaker_window_slow_call_rate", breaker="quotes") == 0.0
        assert ("breaker_window_failure_rate", frozenset({("breaker", "openai")})) not in samples  # not rate mode


async def test_degradation_gauge_shows_the_fleet_mode_on_every_replica(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    assert value(await scrape(second), "breaker_degradation_mode", mode="NORMAL") == 1
    body = {"mode": "EMERGENCY", "reason": "drill", "ttl_s": 600}
    forced = await first.put("/degradation", json=body, headers=ADMIN_HEADERS)
    assert forced.status_code == 200, forced.text
    for samples in (await scrape(first), await scrape(second)):
        assert value(samples, "breaker_degradation_mode", mode="EMERGENCY") == 1
        assert value(samples, "breaker_degradation_mode", mode="NORMAL") == 0
        assert value(samples, "breaker_degradation_forced") == 1


async def test_process_collectors_are_exposed(pair: list[httpx.AsyncClient]) -> None:
    samples = await scrape(pair[0])
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert any(name.startswith("python_gc_") for name in names)


async def test_memory_store_counts_its_own_transitions(client: httpx.AsyncClient) -> None:
    await client.put("/breakers/solo", json={"failure_threshold": 1}, headers=ADMIN)
    await client.post("/breakers/solo/record", json={"outcome": "failure"}, headers=CLIENT)
    trip = {"breaker": "solo", "from_state": "CLOSED", "to_state": "OPEN"}

    async def counted() -> bool:  # the hub hands the event to the transition watcher task
        return value(await scrape_in_process(client), "breaker_transitions_total", **trip) > 0

    await wait_until(counted, "the memory store's transition to be counted")
    samples = await scrape_in_process(client)
    assert value(samples, "breaker_transitions_total", **trip) == 1
    assert value(samples, "breaker_state", breaker="solo", state="OPEN") == 1


async def scrape_in_process(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=CLIENT)
    assert response.status_code == 200
    return parse(response.text)


def test_window_totals_drop_buckets_that_left_the_window() -> None:
    width = bucket_ms(10.0)  # ten buckets of a second
    now_ms = 1_000 * width + width // 2
    counters = {"1000:c": 4, "1000:f": 1, "995:c": 2, "995:s": 2, "990:c": 7, "990:f": 7, "junk": 3}
    assert window_totals(counters, now_ms, 10.0) == (6, 1, 2)


def test_made_transitions_reads_only_a_well_formed_made_element() -> None:
    tail = [b"CLOSED", b"", 3]
    assert made_transitions([*tail, b"CLOSED>OPEN,OPEN>HALF_OPEN"]) == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
    ]
    assert made_transitions([*tail, b""]) == []
    assert made_transitions([*tail, b'{"failure_threshold": 5}']) == []
    assert made_transitions([*tail, 7]) == []
    assert made_transitions(1) == []


async def test_a_replica_that_loses_its_store_still_answers_the_scrape_with_store_up_0(
    service_factory: ServiceFactory, redis_server_factory: RedisServerFactory
) -> None:
    """What BreakerStoreUnreachable fires on: the scrape still answers, from a replica whose Redis hangs."""
    redis_server = redis_server_factory()
    service = service_factory(redis_server.url)
    async with httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS, timeout=30.0) as client:
        assert value(await scrape(client), "breaker_store_up") == 1
        redis_server.pause()
        try:
            samples = await scrape(client)
        finally:
            redis_server.resume()
    assert value(samples, "breaker_store_up") == 0
    assert value(samples, "process_cpu_seconds_total") > 0


async def test_refusals_reported_by_clients_count_as_rejected_calls(pair: list[httpx.AsyncClient]) -> None:
    first, second = pair
    await put(first, "mailer", {"failure_threshold": 5})
    await record(first, "mailer", "rejected", count=4)
    await record(second, "mailer", "rejected", count=6)
    one, two = await scrape(first), await scrape(second)
    assert value(one, "breaker_calls_total", breaker="mailer", kind="rejected") == 4
    fleet = sum(value(s, "breaker_calls_total", breaker="mailer", kind="rejected") for s in (one, two))
    assert fleet == 10
    assert [value(two, "breaker_state", breaker="mailer", state=s) for s in STATES] == [1.0, 0.0, 0.0]
