"""The async client's edges, against the real service in this process: a plain function is refused before
anything is reported, fallbacks see the call's arguments, and `on_transition` calls back (sync and async)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from breaker_client import BreakerTransport, RetryPolicy, State, StateChange
from tests.client._calls import DependencyDown, down, ok

if TYPE_CHECKING:
    from tests.client._harness import ServiceHarness
    from tests.client.conftest import ClientFactory

ONCE = RetryPolicy(attempts=1)


def plain(value: int) -> int:
    return value


async def test_protect_refuses_a_plain_function_at_decoration(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    breaker = client.breaker("typed")

    with pytest.raises(TypeError, match="async function"):
        breaker.protect()(plain)  # type: ignore[arg-type]

    assert transport.exchanges == []


async def test_call_of_a_plain_function_raises_type_error_and_reports_nothing(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    breaker = client.breaker("typed-call", fallback="never used", retry=RetryPolicy(attempts=3, base_s=0))

    for _ in range(2):
        with pytest.raises(TypeError, match="not an awaitable"):
            await breaker.call(plain, 1)  # type: ignore[arg-type]
    await client.flush()

    assert transport.exchanges == []  # no acquire, no record: the fleet's breaker never heard of it
    assert "typed-call" not in [s.name for s in await service.store.snapshots()]


async def test_a_lambda_returning_a_coroutine_is_accepted(make_client: ClientFactory) -> None:
    client, _ = await make_client()

    assert await client.breaker("typed-lambda").call(lambda: ok()) == "ok"


async def test_a_refused_call_closes_the_coroutine_it_never_ran(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client()
    await service.admin("POST", "/breakers/typed-open/force-open?create=true", {"reason": "test"})
    await client.wait_for(lambda c: (v := c.view("typed-open")) is not None and v.forced is State.OPEN)
    ran: list[int] = []

    async def record_run() -> str:
        ran.append(1)
        return "ran"

    # A coroutine left unawaited would warn (an error under this suite's filterwarnings).
    assert await client.breaker("typed-open", fallback="refused").call(record_run) == "refused"
    assert ran == []


async def test_a_fallback_receives_the_calls_arguments(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    outbox: list[tuple[str, str]] = []

    async def queue_for_later(exc: Exception, to: str, *, body: str) -> str:
        outbox.append((to, body))
        return f"queued: {type(exc).__name__}"

    async def send_sms(to: str, *, body: str) -> str:
        raise DependencyDown(to)

    breaker = client.breaker("fallback-args", retry=ONCE, fallback=queue_for_later)

    assert await breaker.call(send_sms, "+15550100", body="hi") == "queued: DependencyDown"
    assert outbox == [("+15550100", "hi")]


async def test_transport_fallback_gets_the_request(make_client: ClientFactory) -> None:
    import httpx

    client, _ = await make_client()
    seen: list[str] = []

    def answer(exc: Exception, request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(202)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = BreakerTransport(client, httpx.MockTransport(refuse), name="transport-fallback", fallback=answer)
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.post("http://sms.example/send", json={})).status_code == 202

    assert seen == ["POST"]


async def test_on_transition_calls_sync_and_async_callbacks(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client()
    sync_seen: list[StateChange] = []
    async_seen: list[StateChange] = []
    opened = asyncio.Event()

    async def later(change: StateChange) -> None:
        async_seen.append(change)
        if change.to_state is State.OPEN:
            opened.set()

    def broken(change: StateChange) -> None:
        raise RuntimeError("a bad callback must not stop the others")

    client.on_transition(broken)
    client.on_transition(sync_seen.append)
    client.on_transition(later)
    breaker = client.breaker("watched", retry=ONCE)
    await breaker.call(ok)
    for _ in range(3):  # the harness's failure_threshold
        with pytest.raises(DependencyDown):
            await breaker.call(down)
    await asyncio.wait_for(opened.wait(), 10)

    expected: list[Any] = [StateChange(name="watched", from_state=State.CLOSED, to_state=State.OPEN)]
    assert sync_seen == expected
    assert async_seen == expected


async def test_on_transition_reports_local_transitions_while_the_service_is_away(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client(recheck_s=3600)
    seen: list[StateChange] = []
    client.on_transition(seen.append)
    breaker = client.breaker("local-watch", retry=ONCE)
    await breaker.call(ok)
    await service.stop()

    for _ in range(3):
        with pytest.raises(DependencyDown):
            await breaker.call(down)

    assert client.degraded
    assert StateChange(name="local-watch", from_state=State.CLOSED, to_state=State.OPEN, local=True) in seen
