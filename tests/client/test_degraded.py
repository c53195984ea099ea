"""When the service fails: local breakers, the degraded flag, and the way back to shared state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from breaker_client import AuthenticationError, BreakerClient, CircuitOpenError, State
from tests.client._calls import NO_RETRY, DependencyDown, down, ok
from tests.client._fake import FakeService, allowed, error
from tests.client._harness import TEST_CONFIG, free_port_url
from tests.client._logs import capture_client_logs

if TYPE_CHECKING:
    from tests.client._harness import FakeClock, ServiceHarness
    from tests.client.conftest import ClientFactory


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, text="Internal Server Error"),
        httpx.Response(200, text="<html>a captive portal</html>"),
        error(503, "ORC_005"),
    ],
    ids=["500", "garbage", "503"],
)
async def test_failing_service_falls_back_to_a_local_breaker(answer: httpx.Response) -> None:
    fake = FakeService(handler=lambda request: answer)
    async with BreakerClient("http://fake.example", transport=fake.transport, events=False, recheck_s=3600) as client:
        with capture_client_logs() as logs:
            assert await client.breaker("payments").call(ok) == "ok"
            assert await client.breaker("payments").call(ok) == "ok"

        assert client.degraded
        assert len(fake.to("/acquire")) == 1  # the second call did not ask again: local until the recheck
        assert [e["event"] for e in logs].count("breaker.degraded") == 1


async def test_failure_report_to_a_failing_service_does_not_reach_the_caller() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return allowed() if request.url.path.endswith("/acquire") else httpx.Response(502)

    fake = FakeService(handler=handler)
    async with BreakerClient("http://fake.example", transport=fake.transport, events=False, recheck_s=3600) as client:
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)

        assert client.degraded


async def test_degraded_client_asks_again_and_recovers() -> None:
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:
        return allowed() if healthy else httpx.Response(503)

    fake = FakeService(handler=handler)
    async with BreakerClient("http://fake.example", transport=fake.transport, events=False, recheck_s=0) as client:
        await client.breaker("payments").call(ok)
        assert client.degraded

        healthy = True
        await client.breaker("payments").call(ok)

        assert not client.degraded


async def test_breaker_unknown_even_after_a_second_acquire_runs_locally() -> None:
    fake = FakeService(handler=lambda request: error(404, "ORC_009"))
    async with BreakerClient("http://fake.example", transport=fake.transport, events=False) as client:
        assert await client.breaker("payments").call(ok) == "ok"

        assert len(fake.to("/acquire")) == 2
        assert not client.degraded


async def test_rejected_credentials_are_raised(make_client: ClientFactory) -> None:
    client, _ = await make_client(token="not-a-token", live=False)

    with pytest.raises(AuthenticationError) as refused:
        await client.breaker("payments").call(ok)

    assert refused.value.status == 401
    assert refused.value.error_code == "ORC_007"


async def test_killed_service_local_breaker_protects_from_the_last_known_state(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client(recheck_s=3600)
    await client.breaker("payments").call(ok)
    for _ in range(2):
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.consecutive_failures == 2)

    await service.stop()
    await client.wait_for(lambda c: not c.live)
    with pytest.raises(DependencyDown):
        await client.breaker("payments", retry=NO_RETRY).call(down)  # the third failure in a row: local OPEN
    assert client.degraded
    before = len(transport.exchanges)

    with pytest.raises(CircuitOpenError) as refused:
        await client.breaker("payments").call(ok)

    assert len(transport.exchanges) == before
    assert refused.value.retry_after_s == pytest.approx(30.0)


async def test_service_back_returns_the_client_to_shared_state(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client(recheck_s=3600)
    await service.stop()
    await client.wait_for(lambda c: not c.live)
    assert await client.breaker("payments").call(ok) == "ok"
    assert client.degraded

    await service.start()
    await client.wait_for(lambda c: c.live and not c.degraded)
    transport.clear()
    await client.breaker("payments").call(ok)

    assert [e.status for e in transport.to("/acquire")] == [200]


async def test_service_state_is_used_again_after_recovery(make_client: ClientFactory, service: ServiceHarness) -> None:
    client, _ = await make_client(recheck_s=3600, default_config=TEST_CONFIG)  # never seen: this config applies
    await service.stop()
    await client.wait_for(lambda c: not c.live)
    for _ in range(3):
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)
    with pytest.raises(CircuitOpenError):
        await client.breaker("payments").call(ok)  # locally OPEN

    await service.start()
    await client.wait_for(lambda c: c.live and not c.degraded)

    assert await client.breaker("payments").call(ok) == "ok"  # the shared breaker never saw those failures
    snapshot = await service.store.snapshot("payments")
    assert snapshot.state is State.CLOSED


async def test_next_base_url_is_used_when_one_is_down(make_client: ClientFactory, service: ServiceHarness) -> None:
    dead = free_port_url()
    client, transport = await make_client(base_url=[dead, service.url])

    assert await client.breaker("payments").call(ok) == "ok"

    assert not client.degraded
    assert transport.to("/acquire")[-1].status == 200


async def test_a_breaker_known_open_stays_open_locally_for_the_time_it_had_left(
    make_client: ClientFactory, service: ServiceHarness, clock: FakeClock
) -> None:
    client, _ = await make_client(recheck_s=3600)
    for _ in range(TEST_CONFIG.failure_threshold):
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.deadline is not None)
    clock.advance(10.0)
    await service.stop()
    await client.wait_for(lambda c: not c.live)
    assert await client.breaker("other").call(ok) == "ok"  # finds the service gone: degraded from here on
    assert client.degraded

    with pytest.raises(CircuitOpenError) as refused:
        await client.breaker("payments").call(ok)
    clock.advance(TEST_CONFIG.open_timeout_s - 10.0)
    probe = await client.breaker("payments").call(ok)  # the local breaker's own half-open probe

    assert refused.value.retry_after_s == pytest.approx(TEST_CONFIG.open_timeout_s - 10.0)
    assert probe == "ok"
