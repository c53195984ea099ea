"""A fleet of client processes on two replicas through a Redis kill and an empty restart: no error reaches a caller,
and every client is back on its fast path afterwards (no request to the service per call) (DESIGN.md v1.1).

The replicas are real `python -m breaker_service` processes on a dedicated redis-server; the clients are worker
processes (tests/fleet/). Waits are bounded; nothing asserts a duration (scripts/chaos.py measures them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from tests._waiting import poll_until
from tests.fixtures.dependency import Dependency, Mode, running_dependency
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN
from tests.fleet.fleet import Fleet
from tests.fleet.protocol import Run, RunResult, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.redis_server import RedisServerFactory
    from tests.fixtures.service import ServiceFactory, ServiceProcess

SIZE: Final = 3
WAIT_TIMEOUT_S: Final = 30.0


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    with running_dependency() as started:
        yield started


def ready(replicas: list[ServiceProcess]) -> bool:
    try:
        return all(httpx.get(r.url + "/health/ready", timeout=5.0).status_code == 200 for r in replicas)
    except httpx.TransportError:
        return False


def on_fast_path(results: list[RunResult]) -> bool:
    return all(r.calls > 0 and r.acquires == 0 and r.live and not r.degraded for r in results)


def test_a_client_fleet_through_a_redis_kill_is_back_on_its_fast_path(
    service_factory: ServiceFactory, redis_server_factory: RedisServerFactory, dependency: Dependency
) -> None:
    server = redis_server_factory()
    replicas = [service_factory(server.url), service_factory(server.url)]
    answer = httpx.put(replicas[0].url + "/breakers/payments", json={"failure_threshold": 3}, headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.text
    spec = WorkerSpec(service_urls=tuple(r.url for r in replicas), token=CLIENT_TOKEN, recheck_s=0.2, timeout_s=2.0)
    with Fleet(SIZE, spec) as fleet:
        run = Run(breaker="payments", url=dependency.url, until="stopped", max_calls=40, pause_s=0.002)
        warm = fleet.run(run)
        assert [r.unexpected for r in warm] == [()] * SIZE

        fleet.begin(Run(breaker="payments", url=dependency.url, until="stopped", max_s=120, pause_s=0.005))
        try:
            assert dependency.wait_for_hits(dependency.hits + 20, timeout_s=WAIT_TIMEOUT_S)
            server.kill()
            assert dependency.wait_for_hits(dependency.hits + 30, timeout_s=WAIT_TIMEOUT_S), "calls go on"
            server.start()  # empty: the replicas restore what they know
            poll_until(lambda: ready(replicas), "both replicas back on Redis", timeout_s=WAIT_TIMEOUT_S)
        finally:
            fleet.stop()
            through = fleet.collect()
        assert [r.unexpected for r in through] == [()] * SIZE, "no error of the client's own reaches a caller"
        assert all(r.failed == 0 for r in through)

        # Back on the fast path: a phase in which no client sends a request to the service per call.
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        phases = [fleet.run(run)]
        while not on_fast_path(phases[-1]) and time.monotonic() < deadline:
            phases.append(fleet.run(run))
        assert on_fast_path(phases[-1]), [(r.acquires, r.live, r.degraded) for r in phases[-1]]
        print(f"fast path again after {len(phases)} phases of {run.max_calls} calls per client")


def test_what_a_degraded_replica_made_up_does_not_outlive_the_outage(
    service_factory: ServiceFactory, redis_server_factory: RedisServerFactory, dependency: Dependency
) -> None:
    """During the outage the replicas' local breakers open (the dependency fails too); the shared breaker never saw
    it. Once Redis is back (with its data: AOF, so nothing is restored) and the dependency healthy, every client calls
    again on its fast path, instead of keeping the OPEN (for 600 s) that only a replica's local state produced."""
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always")
    replicas = [service_factory(server.url), service_factory(server.url)]
    config = {"failure_threshold": 3, "open_timeout_s": 600}
    answer = httpx.put(replicas[0].url + "/breakers/payments", json=config, headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.text
    spec = WorkerSpec(service_urls=tuple(r.url for r in replicas), token=CLIENT_TOKEN, recheck_s=0.2, timeout_s=2.0)
    with Fleet(SIZE, spec) as fleet:
        run = Run(breaker="payments", url=dependency.url, until="stopped", max_calls=40, pause_s=0.002)
        assert [r.unexpected for r in fleet.run(run)] == [()] * SIZE

        server.kill()
        dependency.set_mode(Mode.DEAD)
        tripped = fleet.run(Run(breaker="payments", url=dependency.url, until="refused", max_s=WAIT_TIMEOUT_S))
        assert [r.stopped_by for r in tripped] == ["refused"] * SIZE, "the local breakers opened"

        dependency.set_mode(Mode.HEALTHY)
        server.start()
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        poll_until(lambda: ready(replicas), "both replicas back on Redis", timeout_s=WAIT_TIMEOUT_S)

        phases = [fleet.run(run)]
        while not (on_fast_path(phases[-1]) and all(r.ok == r.calls for r in phases[-1])):
            assert time.monotonic() < deadline + WAIT_TIMEOUT_S, [(r.ok, r.refused, r.acquires) for r in phases[-1]]
            phases.append(fleet.run(run))
        assert all(r.unexpected == () for p in phases for r in p)
