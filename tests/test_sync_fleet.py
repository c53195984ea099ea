"""`SyncBreakerClient` in a fleet: 4 processes with 16 caller threads each share one breaker through two real
replicas on real Redis; a dead dependency gets exactly `failure_threshold` calls, however many threads call.

Per-thread or per-process breakers would let 64 x 5 or 4 x 5 calls through; the shared one must not. Runs start
together (a barrier), every wait is bounded, nothing asserts a duration.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from tests.fixtures.dependency import Dependency, Mode, running_dependency
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceFactory
from tests.fleet.fleet import Fleet
from tests.fleet.protocol import Run, WorkerSpec
from tests.test_fleet import SIZE, THRESHOLD, assert_clean, configure, snapshot, transitions

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.service import ServiceProcess

THREADS: Final = 16


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    factory = ServiceFactory(tmp_path_factory.mktemp("sync-fleet-services"))
    try:
        yield [factory(redis_url), factory(redis_url)]
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def fleet(replicas: list[ServiceProcess]) -> Iterator[Fleet]:
    spec = WorkerSpec(
        kind="sync",
        service_urls=tuple(r.url for r in replicas),
        token=CLIENT_TOKEN,
        budget_wait_s=10.0,
        threads=THREADS,
    )
    with Fleet(SIZE, spec) as started:
        assert all(ready.live for ready in started.ready)
        yield started


@pytest.fixture(scope="module")
def admin(replicas: list[ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replicas[1].url, headers=ADMIN_HEADERS, timeout=10.0) as client:
        yield client


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    with running_dependency() as started:
        yield started


def test_sixteen_threads_in_each_of_four_processes_send_a_dead_dependency_only_the_failure_budget(
    fleet: Fleet, admin: httpx.Client, dependency: Dependency
) -> None:
    configure(admin, "sync-fleet-cold", open_timeout_s=600)
    dependency.set_mode(Mode.DEAD)

    results = fleet.run(Run(breaker="sync-fleet-cold", url=dependency.url, until="refused", retry_attempts=3))

    assert_clean(results)
    assert all(r.stopped_by == "refused" for r in results)  # every thread of every process stopped calling
    assert dependency.hits == THRESHOLD  # per-thread breakers: 64 x 5; per-process: 4 x 5
    final = snapshot(admin, "sync-fleet-cold")
    assert final["state"] == "OPEN"
    assert final["counts"]["failure"] == THRESHOLD
    assert transitions(admin, "sync-fleet-cold", "CLOSED", "OPEN") == 1


def test_a_healthy_dependency_is_called_by_every_thread_on_the_fast_path(
    fleet: Fleet, admin: httpx.Client, dependency: Dependency
) -> None:
    configure(admin, "sync-fleet-warm")
    dependency.set_mode(Mode.HEALTHY)
    # 64 threads share two cores with the rest of the suite: no call may time out, and no thread's run may be cut
    # short by its time bound, for want of a core (a run ends by its call count; the bound only stops a hang).
    warm = Run(
        breaker="sync-fleet-warm", url=dependency.url, until="stopped", max_calls=5, max_s=300.0, call_timeout_s=60.0
    )
    assert all(r.stopped_by == "max_calls" for r in fleet.run(warm))  # earns trust

    results = fleet.run(dataclasses.replace(warm, max_calls=20))

    assert_clean(results)
    assert [(r.stopped_by, r.failed) for r in results] == [("max_calls", 0)] * SIZE
    assert [r.ok for r in results] == [THREADS * 20] * SIZE
    assert sum(r.acquires for r in results) == 0  # not one request to the service before a call
    assert snapshot(admin, "sync-fleet-warm")["counts"]["success"] == SIZE * THREADS * 25
