"""A fleet of client processes against real service replicas on real Redis, calling a real local dependency.

Four worker processes (tests/fleet/), each one `BreakerClient` with one call in flight at a time, share one breaker
(failure threshold 5) through two `python -m breaker_service` replicas. Per-process breakers would let
4 x 5 = 20 calls reach a dead dependency and send it a probe per process per half-open window; the shared breaker
must not. Every count here is of requests the dependency actually received. Runs start together (a barrier);
every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from tests._waiting import poll_until
from tests.fixtures.dependency import Dependency, Mode, running_dependency
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceFactory
from tests.fleet.fleet import Fleet, total
from tests.fleet.protocol import Run, RunResult, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.service import ServiceProcess

SIZE: Final = 4
THRESHOLD: Final = 5
HALF_OPEN_MAX_CALLS: Final = 2
WAIT_TIMEOUT_S: Final = 20.0
WARM_UP_ROUNDS: Final = 5


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    factory = ServiceFactory(tmp_path_factory.mktemp("fleet-services"))
    try:
        yield [factory(redis_url), factory(redis_url)]
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def fleet(replicas: list[ServiceProcess]) -> Iterator[Fleet]:
    # Workers alternate between the replicas; a generous budget wait: the budget's holders fail fast anyway.
    spec = WorkerSpec(service_urls=tuple(r.url for r in replicas), token=CLIENT_TOKEN, budget_wait_s=10.0)
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


def configure(admin: httpx.Client, name: str, **config: float) -> None:
    """A fresh breaker: deleted if a previous run left one, then created with `config` (unproven)."""
    admin.delete(f"/breakers/{name}")
    response = admin.put(f"/breakers/{name}", json={"failure_threshold": THRESHOLD, **config})
    assert response.status_code == 200, response.text


def snapshot(admin: httpx.Client, name: str) -> dict[str, Any]:
    response = admin.get(f"/breakers/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def transitions(admin: httpx.Client, name: str, from_state: str, to_state: str) -> int:
    history = admin.get(f"/breakers/{name}/history").json()["transitions"]
    return sum(1 for t in history if t["from"] == from_state and t["to"] == to_state)


def assert_clean(results: list[RunResult]) -> None:
    """No error of the client's own plumbing reached a caller, and no client fell back to local state."""
    assert [r.unexpected for r in results] == [()] * SIZE
    assert not any(r.degraded for r in results)


def trip(fleet: Fleet, dependency: Dependency, name: str) -> None:
    """Kill the dependency and let the fleet open the breaker."""
    dependency.set_mode(Mode.DEAD)
    results = fleet.run(Run(breaker=name, url=dependency.url, until="refused"))
    assert_clean(results)
    assert all(r.stopped_by == "refused" for r in results)


def warm_up(fleet: Fleet, dependency: Dependency, name: str) -> None:
    """Healthy calls until every process is on the fast path: a whole run without a request to the service."""
    for _ in range(WARM_UP_ROUNDS):
        results = fleet.run(Run(breaker=name, url=dependency.url, until="stopped", max_calls=20))
        assert_clean(results)
        assert all(r.ok == r.calls for r in results)
        if total(results, "acquires") == 0:
            return
    raise AssertionError(f"the fleet did not reach the fast path in {WARM_UP_ROUNDS} rounds")


def test_cold_fleet_sends_a_dead_dependency_only_the_failure_budget(
    fleet: Fleet, admin: httpx.Client, dependency: Dependency
) -> None:
    configure(admin, "fleet-cold", open_timeout_s=600)
    dependency.set_mode(Mode.DEAD)

    results = fleet.run(Run(breaker="fleet-cold", url=dependency.url, until="refused", retry_attempts=3))

    assert_clean(results)
    assert all(r.stopped_by == "refused" for r in results)  # every process stopped calling
    assert dependency.hits == THRESHOLD  # per-process breakers: SIZE * THRESHOLD
    final = snapshot(admin, "fleet-cold")
    assert final["state"] == "OPEN"
    assert final["counts"]["failure"] == THRESHOLD
    assert transitions(admin, "fleet-cold", "CLOSED", "OPEN") == 1


def test_warm_fleet_sends_at_most_one_call_per_process_beyond_the_budget(
    fleet: Fleet, admin: httpx.Client, dependency: Dependency
) -> None:
    configure(admin, "fleet-warm", open_timeout_s=600)
    warm_up(fleet, dependency, "fleet-warm")
    dependency.set_mode(Mode.DEAD)

    results = fleet.run(Run(breaker="fleet-warm", url=dependency.url, until="refused"))

    assert_clean(results)
    assert all(r.stopped_by == "refused" for r in results)
    # Each process's first call is on the fast path (no request first); every later one leases from the budget.
    assert THRESHOLD <= dependency.hits_in(Mode.DEAD) <= THRESHOLD + SIZE
    assert snapshot(admin, "fleet-warm")["state"] == "OPEN"
    assert transitions(admin, "fleet-warm", "CLOSED", "OPEN") == 1


def test_open_breaker_takes_no_retry_storm(fleet: Fleet, admin: httpx.Client, dependency: Dependency) -> None:
    configure(admin, "fleet-open", open_timeout_s=600)
    trip(fleet, dependency, "fleet-open")
    hits = dependency.hits
    calls_each = 25

    results = fleet.run(
        # Ended by the call count: the time bound (generous, for a starved core) only stops a hang.
        Run(
            breaker="fleet-open", url=dependency.url, until="stopped", max_calls=calls_each, max_s=300, retry_attempts=5
        )
    )

    assert_clean(results)
    assert dependency.hits == hits  # not one call, let alone five retries of each
    assert [r.refused for r in results] == [calls_each] * SIZE
    assert total(results, "acquires") <= SIZE  # a process may ask once to learn the deadline; then it knows it


def test_one_half_open_window_takes_at_most_half_open_max_calls_probes(
    fleet: Fleet, admin: httpx.Client, dependency: Dependency
) -> None:
    # The second open time is 100 x the first: the window below is the only one this test can see.
    configure(
        admin,
        "fleet-probe",
        open_timeout_s=1.0,
        open_backoff=100,
        half_open_max_calls=HALF_OPEN_MAX_CALLS,
        success_threshold=HALF_OPEN_MAX_CALLS,
    )
    trip(fleet, dependency, "fleet-probe")
    hits = dependency.hits

    fleet.begin(Run(breaker="fleet-probe", url=dependency.url, until="stopped", max_s=60))
    try:
        poll_until(
            lambda: transitions(admin, "fleet-probe", "HALF_OPEN", "OPEN") == 1,
            "a probe to reopen it",
            timeout_s=WAIT_TIMEOUT_S,
        )
    finally:
        fleet.stop()
        results = fleet.collect()

    assert_clean(results)
    assert 1 <= dependency.hits - hits <= HALF_OPEN_MAX_CALLS  # per-process breakers: one probe per process
    assert transitions(admin, "fleet-probe", "OPEN", "HALF_OPEN") == 1
    assert snapshot(admin, "fleet-probe")["state"] == "OPEN"


def test_fleet_recovers_when_the_dependency_heals(fleet: Fleet, admin: httpx.Client, dependency: Dependency) -> None:
    configure(
        admin,
        "fleet-heal",
        open_timeout_s=0.5,
        half_open_max_calls=HALF_OPEN_MAX_CALLS,
        success_threshold=HALF_OPEN_MAX_CALLS,
    )
    trip(fleet, dependency, "fleet-heal")
    dependency.set_mode(Mode.HEALTHY)

    results = fleet.run(Run(breaker="fleet-heal", url=dependency.url, until="ok", max_s=60))

    assert_clean(results)
    assert [r.ok for r in results] == [1] * SIZE
    assert snapshot(admin, "fleet-heal")["state"] == "CLOSED"
    assert transitions(admin, "fleet-heal", "HALF_OPEN", "CLOSED") == 1
    assert transitions(admin, "fleet-heal", "HALF_OPEN", "OPEN") == 0
    warm_up(fleet, dependency, "fleet-heal")  # and back on the fast path
