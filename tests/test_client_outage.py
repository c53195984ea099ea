"""The breaker service dies under a running fleet: calls go on, protected by local breakers, and never see an
error of the client's own; when the service returns, the shared breaker decides again.

The service is a real `python -m breaker_service` on real Redis, killed with SIGKILL (a crash: connections reset,
nothing flushed) and started again on the same port. The clients are worker processes (tests/fleet/) or, where a
test must watch one call closely, a `BreakerClient` in this process. Waits are bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from breaker_client import BreakerClient, CircuitOpenError, State
from tests.client._calls import NO_RETRY, DependencyDown
from tests.fixtures.dependency import Dependency, Mode, running_dependency
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN
from tests.fleet.fleet import Fleet
from tests.fleet.protocol import Run, RunResult, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.fixtures.service import ServiceFactory, ServiceProcess

SIZE: Final = 3
THRESHOLD: Final = 3
"""Not the default (5): a local breaker that trips at 3 was seeded from the shared breaker's config."""
WAIT_TIMEOUT_S: Final = 20.0


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    with running_dependency() as started:
        yield started


@pytest.fixture
def service(service_factory: ServiceFactory, redis_url: str) -> ServiceProcess:
    return service_factory(redis_url)


def kill(service: ServiceProcess) -> None:
    """SIGKILL the running replica, as a crash would; `service.start()` brings it back on the same port."""
    assert service.running
    service.kill()


def admin(service: ServiceProcess, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = httpx.request(method, service.url + path, json=body, headers=ADMIN_HEADERS, timeout=10.0)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def configure(service: ServiceProcess, name: str) -> None:
    admin(service, "PUT", f"/breakers/{name}", {"failure_threshold": THRESHOLD, "open_timeout_s": 600})


def wait_for_hits(dependency: Dependency, count: int) -> None:
    assert dependency.wait_for_hits(count, timeout_s=WAIT_TIMEOUT_S), f"the dependency did not get {count} hits"


def assert_clean(results: list[RunResult]) -> None:
    assert [r.unexpected for r in results] == [()] * len(results)


def test_fleet_is_protected_locally_while_the_service_is_down_and_shared_again_after(
    service: ServiceProcess, dependency: Dependency
) -> None:
    configure(service, "outage")
    spec = WorkerSpec(service_urls=(service.url,), token=CLIENT_TOKEN, recheck_s=0.2, timeout_s=2.0)
    with Fleet(SIZE, spec) as fleet:
        warm = fleet.run(Run(breaker="outage", url=dependency.url, until="stopped", max_calls=20))
        assert_clean(warm)

        # Mid-run: the service dies while every process is calling; the calls go on.
        fleet.begin(Run(breaker="outage", url=dependency.url, until="stopped", max_s=60, pause_s=0.002))
        try:
            wait_for_hits(dependency, dependency.hits + 20)
            kill(service)
            before = {str(i): dependency.hits_from(str(i)) for i in range(SIZE)}
            # Every process goes on calling: 20 more calls each reach the dependency.
            assert dependency.wait_for(
                lambda hits: all(sum(1 for h in hits if h.caller == i) >= n + 20 for i, n in before.items()),
                timeout_s=WAIT_TIMEOUT_S,
            )
        finally:
            fleet.stop()
            through = fleet.collect()
        assert_clean(through)
        assert all(r.ok == r.calls for r in through)
        assert all(r.degraded and not r.live for r in through)

        # Still down, and now the dependency dies too: each local breaker (threshold 3, from the shared config)
        # stops its process after 3 failures.
        dependency.set_mode(Mode.DEAD)
        local = fleet.run(Run(breaker="outage", url=dependency.url, until="refused"))
        assert_clean(local)
        assert [(r.failed, r.stopped_by) for r in local] == [(THRESHOLD, "refused")] * SIZE
        assert dependency.hits_in(Mode.DEAD) == THRESHOLD * SIZE
        dead_hits = dependency.hits_in(Mode.DEAD)
        more = fleet.run(Run(breaker="outage", url=dependency.url, until="stopped", max_calls=10))
        assert_clean(more)
        assert dependency.hits_in(Mode.DEAD) == dead_hits  # locally OPEN: no call reaches it
        assert all(r.refused == r.calls for r in more)

        # The service returns. Shared state (CLOSED: it never saw those failures) wins over the local OPEN,
        # which would refuse for 600 s.
        service.start()
        dependency.set_mode(Mode.HEALTHY)
        back = fleet.run(Run(breaker="outage", url=dependency.url, until="ok", max_s=WAIT_TIMEOUT_S))
        assert_clean(back)
        assert all(r.ok == 1 and not r.degraded and r.acquires >= 1 for r in back)

        # And an admin's decision there reaches every process (by its event stream or its next acquire).
        admin(service, "POST", "/breakers/outage/force-open?create=true", {"reason": "after the outage", "ttl_s": None})
        forced = fleet.run(Run(breaker="outage", url=dependency.url, until="refused", max_s=WAIT_TIMEOUT_S))
        assert_clean(forced)
        assert all(r.stopped_by == "refused" and not r.degraded for r in forced)
        hits = dependency.hits
        after = fleet.run(Run(breaker="outage", url=dependency.url, until="stopped", max_calls=10))
        assert_clean(after)
        assert all(r.refused == r.calls for r in after)
        assert dependency.hits == hits


@pytest.fixture
async def client(service: ServiceProcess) -> AsyncIterator[BreakerClient]:
    async with BreakerClient(service.url, token=CLIENT_TOKEN, recheck_s=3600, timeout_s=2.0) as started:
        await started.wait_for(lambda c: c.live)
        yield started


async def test_call_in_flight_when_the_service_dies_gets_its_own_outcome(
    service: ServiceProcess, dependency: Dependency, client: BreakerClient
) -> None:
    configure(service, "inflight")
    breaker = client.breaker("inflight", retry=NO_RETRY)
    dependency.set_mode(Mode.SLOW)

    async def call_then_fail() -> str:
        async with httpx.AsyncClient() as http:
            await http.get(dependency.url)
        raise DependencyDown("answered, but wrong")

    in_flight = asyncio.create_task(breaker.call(call_then_fail))
    assert await asyncio.to_thread(dependency.wait_for_hits, 1)
    kill(service)
    dependency.release()

    with pytest.raises(DependencyDown):  # its own error: the failed report is the client's business
        await in_flight
    assert client.degraded
    # That failure went to the local breaker: two more and it is locally OPEN.
    dependency.set_mode(Mode.DEAD)

    async def call() -> str:
        async with httpx.AsyncClient() as http:
            response = await http.get(dependency.url)
        response.raise_for_status()
        return response.text

    for _ in range(THRESHOLD - 1):
        with pytest.raises(httpx.HTTPStatusError):
            await breaker.call(call)
    hits = dependency.hits
    with pytest.raises(CircuitOpenError):
        await breaker.call(call)
    assert dependency.hits == hits


async def test_service_back_after_a_crash_is_followed_again(
    service: ServiceProcess, dependency: Dependency, client: BreakerClient
) -> None:
    configure(service, "followed")
    kill(service)
    await client.wait_for(lambda c: not c.live)
    service.start()

    await client.wait_for(lambda c: c.live, timeout_s=WAIT_TIMEOUT_S)  # the event stream reconnects by itself
    admin(service, "POST", "/breakers/followed/force-open?create=true", {"reason": "after the crash", "ttl_s": None})
    await client.wait_for(lambda c: (v := c.view("followed")) is not None and v.effective_state is State.OPEN)

    with pytest.raises(CircuitOpenError):
        await client.breaker("followed").call(dependency_call(dependency))
    assert dependency.hits == 0
    assert not client.degraded


def dependency_call(dependency: Dependency) -> Any:
    async def call() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(dependency.url)).text

    return call


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(500, text="oops"), httpx.Response(200, text="<html>not an event stream</html>")],
    ids=["500", "garbage"],
)
async def test_event_stream_answering_nonsense_keeps_the_client_strict_and_working(answer: httpx.Response) -> None:
    acquires = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal acquires
        if request.url.path == "/events":
            return answer
        acquires += 1
        return httpx.Response(200, json={"allowed": True, "state": "CLOSED", "generation": 1, "permit": None})

    async def ok() -> str:
        return "ok"

    transport = httpx.MockTransport(handler)
    async with BreakerClient("http://fake.example", transport=transport, flush_interval_s=3600) as client:
        for _ in range(3):
            assert await client.breaker("payments").call(ok) == "ok"

        assert not client.live
        assert not client.degraded
        assert acquires == 3  # never live, so never on the fast path
