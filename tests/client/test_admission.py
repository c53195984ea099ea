"""Admission against the real service: fast path, strict path, open, half-open, reporting, deletion."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from breaker_client import BreakerClient, CircuitOpenError, RetryPolicy, State
from tests._waiting import wait_until
from tests.client._calls import NO_RETRY, DependencyDown, down, ok

if TYPE_CHECKING:
    from tests.client._harness import Exchange, FakeClock, RecordingTransport, ServiceHarness
    from tests.client.conftest import ClientFactory


async def earn_fast_path(client: BreakerClient, name: str) -> None:
    """One success through the strict path, then wait until the breaker is known: the next calls are fast."""
    await client.breaker(name).call(ok)
    await client.wait_for(lambda c: (v := c.view(name)) is not None and v.healthy)


def calls_to_service(transport: RecordingTransport) -> list[Exchange]:
    """Acquires and records; background refreshes of what the client knows are not counted."""
    return [e for e in transport.exchanges if e.method == "POST"]


async def fail(client: BreakerClient, name: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(DependencyDown):
            await client.breaker(name, retry=NO_RETRY).call(down)


async def test_healthy_breaker_makes_no_request_before_calls(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    transport.clear()

    for _ in range(20):
        assert await client.breaker("payments").call(ok) == "ok"

    assert transport.exchanges == []


async def test_successes_are_sent_in_one_batch_with_count(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    await client.flush()
    transport.clear()

    for _ in range(7):
        await client.breaker("payments").call(ok)
    await client.flush()

    [record] = transport.to("/record")
    assert record.body["outcome"] == "success"
    assert record.body["count"] == 7
    assert record.body["generation"] == 1
    assert record.body["duration_ms"] is not None


async def test_first_call_of_a_process_is_strict(make_client: ClientFactory) -> None:
    client, transport = await make_client()

    await client.breaker("payments").call(ok)

    assert len(transport.to("/acquire")) == 1


async def test_failure_is_reported_before_the_call_returns(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    transport.clear()

    await fail(client, "payments", 1)

    [record] = calls_to_service(transport)
    assert record.path == "/breakers/payments/record"
    assert record.body["outcome"] == "failure"
    assert record.body["count"] == 1
    assert record.body["generation"] == 1
    view = client.view("payments")
    assert view is not None
    assert view.consecutive_failures == 1


async def test_failure_makes_the_next_call_strict(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    await fail(client, "payments", 1)
    transport.clear()

    await client.breaker("payments").call(ok)

    [acquire, record] = calls_to_service(transport)
    assert acquire.path.endswith("/acquire")
    # With failures accumulating the service lends a permit, and an outcome with a permit goes out at once.
    assert record.body["permit"] is not None
    assert record.body["outcome"] == "success"


async def test_failures_signal_from_another_process_makes_this_one_strict(make_client: ClientFactory) -> None:
    watcher, watcher_requests = await make_client()
    failing, _ = await make_client()
    await earn_fast_path(watcher, "payments")

    await fail(failing, "payments", 1)
    await watcher.wait_for(lambda c: (v := c.view("payments")) is not None and v.consecutive_failures == 1)
    watcher_requests.clear()
    await watcher.breaker("payments").call(ok)

    assert len(watcher_requests.to("/acquire")) == 1


async def test_fast_path_needs_a_success_after_failures_return_to_zero(make_client: ClientFactory) -> None:
    watcher, watcher_requests = await make_client()
    other, _ = await make_client()
    await earn_fast_path(watcher, "payments")
    await fail(other, "payments", 1)
    await watcher.wait_for(lambda c: (v := c.view("payments")) is not None and v.consecutive_failures == 1)
    await other.breaker("payments").call(ok)  # strict: a permit, reported at once; consecutive failures back to 0
    await watcher.wait_for(lambda c: (v := c.view("payments")) is not None and v.healthy)
    watcher_requests.clear()

    await watcher.breaker("payments").call(ok)
    await watcher.breaker("payments").call(ok)

    assert len(watcher_requests.to("/acquire")) == 1


async def test_open_breaker_refuses_without_a_request(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    await fail(client, "payments", 3)
    await client.wait_for(
        lambda c: (v := c.view("payments")) is not None and v.state is State.OPEN and v.deadline is not None
    )
    transport.clear()
    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(CircuitOpenError) as refused:
        await client.breaker("payments", retry=RetryPolicy(attempts=5, base_s=0)).call(counted)

    assert calls_to_service(transport) == []
    assert calls == 0
    assert refused.value.retry_after_s == pytest.approx(30.0)


async def test_lease_budget_refuses_while_failures_accumulate(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    await fail(client, "payments", 2)
    gate_entered: list[int] = []

    async def hold(release: BreakerClient) -> str:
        gate_entered.append(1)
        with pytest.raises(CircuitOpenError):
            # 2 failures + this call's lease = failure_threshold: nobody else may go.
            await release.breaker("payments").call(ok)
        return "ok"

    assert await client.breaker("payments", retry=NO_RETRY).call(hold, client) == "ok"
    assert gate_entered == [1]


async def test_half_open_probe_carries_its_permit_and_closes(make_client: ClientFactory, clock: FakeClock) -> None:
    client, transport = await make_client()
    await fail(client, "payments", 3)
    await client.wait_for(
        lambda c: (v := c.view("payments")) is not None and v.state is State.OPEN and v.deadline is not None
    )
    clock.advance(30.0)
    transport.clear()

    assert await client.breaker("payments").call(ok) == "ok"

    [acquire, record] = calls_to_service(transport)
    assert acquire.path.endswith("/acquire")
    assert record.body["permit"] is not None
    assert record.body["generation"] == 3  # CLOSED -> OPEN -> HALF_OPEN
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.state is State.CLOSED)


async def test_half_open_failure_reopens(make_client: ClientFactory, clock: FakeClock) -> None:
    client, _ = await make_client()
    await fail(client, "payments", 3)
    clock.advance(30.0)

    await fail(client, "payments", 1)

    await client.wait_for(
        lambda c: (v := c.view("payments")) is not None and v.state is State.OPEN and v.deadline is not None
    )
    with pytest.raises(CircuitOpenError):
        await client.breaker("payments").call(ok)


async def test_forced_open_refuses_and_forced_closed_is_fast(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    await service.admin("POST", "/breakers/payments/force-open?create=true", {"reason": "maintenance"})
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.forced is State.OPEN)
    transport.clear()

    with pytest.raises(CircuitOpenError) as refused:
        await client.breaker("payments").call(ok)
    assert refused.value.retry_after_s is None
    assert calls_to_service(transport) == []

    await service.admin("POST", "/breakers/payments/force-close?create=true", {"reason": "trust me"})
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.forced is State.CLOSED)
    await client.breaker("payments").call(ok)
    assert calls_to_service(transport) == []


async def test_breaker_deleted_while_in_use_is_created_again(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    await fail(client, "payments", 1)

    await service.admin("DELETE", "/breakers/payments")
    await client.wait_for(lambda c: c.view("payments") is None)
    transport.clear()

    assert await client.breaker("payments").call(ok) == "ok"
    assert [e.status for e in transport.to("/acquire")] == [200]
    assert not client.degraded
    snapshot = await service.store.snapshot("payments")
    assert snapshot.generation == 1


async def test_late_outcome_for_a_deleted_breaker_does_not_break_the_caller(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client()
    await fail(client, "payments", 1)

    async def deleted_meanwhile() -> str:
        await service.admin("DELETE", "/breakers/payments")
        raise DependencyDown("and it failed")

    with pytest.raises(DependencyDown):
        await client.breaker("payments", retry=NO_RETRY).call(deleted_meanwhile)
    assert not client.degraded


async def test_async_with_admits_and_reports_a_failure_at_once(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    breaker = client.breaker("payments")

    with pytest.raises(DependencyDown):
        async with breaker:
            raise DependencyDown("inside the block")

    [acquire, record] = calls_to_service(transport)
    assert acquire.path.endswith("/acquire")
    assert record.body["outcome"] == "failure"


async def test_async_with_refused_block_does_not_run(make_client: ClientFactory, service: ServiceHarness) -> None:
    client, _ = await make_client()
    await service.admin("POST", "/breakers/payments/force-open?create=true", {"reason": "maintenance"})
    ran = False

    with pytest.raises(CircuitOpenError):
        async with client.breaker("payments"):
            ran = True

    assert not ran


async def test_protect_decorates_an_async_function(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    breaker = client.breaker("payments")

    @breaker.protect()
    async def greet(name: str, *, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    assert await greet("ops", punctuation="?") == "hello ops?"
    assert len(transport.to("/acquire")) == 1


async def test_a_call_waits_for_a_slot_while_the_failure_budget_is_in_flight(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client(budget_wait_s=30.0)
    await service.admin("PUT", "/breakers/budget", {})
    threshold = service.config.defaults.failure_threshold
    release = asyncio.Event()
    in_flight = 0

    async def held() -> str:
        nonlocal in_flight
        in_flight += 1
        await release.wait()
        return "ok"

    # An unproven breaker leases `threshold` calls; the next one is denied in CLOSED and must wait, not fail.
    calls = [asyncio.create_task(client.breaker("budget", retry=NO_RETRY).call(held)) for _ in range(threshold + 1)]

    async def denied_once() -> bool:
        return bool((await service.admin("GET", "/breakers/budget")).json()["counts"]["rejected"] >= 1)

    await wait_until(denied_once, "the call past the budget denied")
    assert in_flight == threshold
    release.set()

    assert await asyncio.gather(*calls) == ["ok"] * (threshold + 1)
    assert in_flight == threshold + 1


async def test_a_transition_is_learned_from_the_stream_without_a_request(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    await earn_fast_path(client, "payments")
    transport.clear()

    await service.admin("POST", "/breakers/payments/force-open?create=true", {"reason": "drill", "ttl_s": 60})
    await client.wait_for(
        lambda c: (v := c.view("payments")) is not None and v.forced is State.OPEN and v.deadline is not None
    )

    assert transport.to("/breakers/payments") == [], "the snapshot came on the stream: no client fetched it"
    with pytest.raises(CircuitOpenError):
        await client.breaker("payments").call(ok)
    assert transport.exchanges == [], "a breaker known forced OPEN is refused without a request"
