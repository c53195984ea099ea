"""`Breaker` and `BreakerTransport` against the real service: fallbacks, retries, timeouts, correlation ids."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

from breaker_client import (
    CORRELATION_HEADER,
    BreakerClient,
    BreakerTransport,
    CircuitOpenError,
    FailurePolicy,
    RetryPolicy,
    State,
    host_breaker_name,
    use_correlation_id,
)
from tests.client._calls import DependencyDown, down, ok

if TYPE_CHECKING:
    from tests.client._harness import ServiceHarness
    from tests.client.conftest import ClientFactory

FAST_RETRY = RetryPolicy(attempts=3, base_s=0, jitter=False)


async def force_open(client: BreakerClient, service: ServiceHarness, name: str) -> None:
    await service.admin("POST", f"/breakers/{name}/force-open?create=true", {"reason": "test"})
    await client.wait_for(lambda c: (v := c.view(name)) is not None and v.forced is State.OPEN)


class Dependency:
    """A protected HTTP dependency on a MockTransport: answers `status`, keeps the requests it got."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json={"sent": self.status < 400})


async def test_fallback_value_answers_an_open_circuit(make_client: ClientFactory, service: ServiceHarness) -> None:
    client, _ = await make_client()
    await force_open(client, service, "sms")

    assert await client.breaker("sms", fallback="queued").call(ok) == "queued"


async def test_fallback_callable_receives_the_refusal(make_client: ClientFactory, service: ServiceHarness) -> None:
    client, _ = await make_client()
    await force_open(client, service, "sms")
    seen: list[Exception] = []

    def sync_fallback(exc: Exception) -> str:
        seen.append(exc)
        return "sync"

    async def async_fallback(exc: Exception) -> str:
        seen.append(exc)
        return "async"

    assert await client.breaker("sms", fallback=sync_fallback).call(ok) == "sync"
    assert await client.breaker("sms").protect(fallback=async_fallback)(ok)() == "async"
    assert [type(exc) for exc in seen] == [CircuitOpenError, CircuitOpenError]


async def test_fallback_answers_a_failure_after_its_retries(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("reset")

    result = await client.breaker("sms", retry=FAST_RETRY, fallback=lambda exc: f"fallback after {exc}").call(flaky)

    assert result == "fallback after reset"
    assert attempts == 3


async def test_fallback_is_not_used_for_an_error_that_is_not_a_failure(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    breaker = client.breaker("sms", fallback="nope", failure=FailurePolicy(ignore=(KeyError,)))

    async def caller_bug() -> str:
        raise KeyError("missing field")

    with pytest.raises(KeyError):
        await breaker.call(caller_bug)
    await client.flush()

    assert transport.to("/record")[0].body["outcome"] == "success"  # the dependency answered


async def test_retries_are_admitted_and_reported_one_by_one(make_client: ClientFactory) -> None:
    client, transport = await make_client()

    with pytest.raises(DependencyDown):
        await client.breaker("sms", retry=RetryPolicy(attempts=3, base_s=0), failure=FailurePolicy()).call(down)

    # DependencyDown is a failure but not retryable: one attempt, one report.
    assert [e.body["outcome"] for e in transport.to("/record")] == ["failure"]


async def test_breaker_opening_between_retries_ends_them(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    attempts = 0

    async def refused_connection() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("down")

    with pytest.raises(CircuitOpenError):
        await client.breaker("sms", retry=RetryPolicy(attempts=10, base_s=0)).call(refused_connection)

    assert attempts == 3  # failure_threshold; the fourth attempt was refused and not retried


async def test_timeout_bounds_each_attempt(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    attempts = 0

    async def hangs_once() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.Event().wait()
        return "second time lucky"

    policy = RetryPolicy(attempts=2, base_s=0, timeout_s=0.05)

    assert await client.breaker("sms", retry=policy).call(hangs_once) == "second time lucky"
    assert [e.body["outcome"] for e in transport.to("/record")] == ["failure", "success"]


async def test_correlation_id_reaches_the_service_and_the_dependency(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    dependency = Dependency()
    mounts = {"https://sms.example": BreakerTransport(client, dependency.transport)}

    async with httpx.AsyncClient(mounts=mounts) as http:
        with use_correlation_id("corr-42"):
            await http.post("https://sms.example/send")

    [acquire] = transport.to("/acquire")
    assert acquire.headers[CORRELATION_HEADER] == "corr-42"
    assert acquire.response_headers is not None
    assert acquire.response_headers[CORRELATION_HEADER] == "corr-42"
    assert dependency.requests[0].headers[CORRELATION_HEADER] == "corr-42"


async def test_one_generated_correlation_id_per_call(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    dependency = Dependency()

    async with httpx.AsyncClient(transport=BreakerTransport(client, dependency.transport)) as http:
        await http.get("https://sms.example/a")

    generated = dependency.requests[0].headers[CORRELATION_HEADER]
    assert generated
    assert transport.to("/acquire")[0].headers[CORRELATION_HEADER] == generated


async def test_transport_returns_the_last_5xx_after_its_retries(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    dependency = Dependency(status=503)
    protected = BreakerTransport(client, dependency.transport, retry=RetryPolicy(attempts=2, base_s=0))

    async with httpx.AsyncClient(transport=protected) as http:
        response = await http.get("https://sms.example/send")

    assert response.status_code == 503
    assert response.json() == {"sent": False}
    assert len(dependency.requests) == 2
    assert [e.body["outcome"] for e in transport.to("/record")] == ["failure", "failure"]


async def test_transport_refuses_when_open_or_answers_the_fallback(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client()
    dependency = Dependency()
    await force_open(client, service, "sms.example")
    queued = BreakerTransport(
        client, dependency.transport, fallback=lambda exc: httpx.Response(202, json={"queued": 1})
    )

    async with httpx.AsyncClient(transport=BreakerTransport(client, dependency.transport)) as http:
        with pytest.raises(CircuitOpenError):
            await http.get("https://sms.example/send")
    async with httpx.AsyncClient(transport=queued) as http:
        response = await http.get("https://sms.example/send")

    assert response.status_code == 202
    assert dependency.requests == []


async def test_transport_breaker_names() -> None:
    dependency = Dependency()

    async with httpx.AsyncClient(transport=dependency.transport) as http:
        plain = http.build_request("GET", "https://sms.example/send")
        with_port = http.build_request("GET", "http://[::1]:8443/x")

    assert host_breaker_name(plain) == "sms.example"
    assert host_breaker_name(with_port) == "1-8443"


async def test_transport_name_by_route(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    dependency = Dependency()
    protected = BreakerTransport(client, dependency.transport, name=lambda r: f"api-{r.url.path.strip('/')}")

    async with httpx.AsyncClient(transport=protected) as http:
        await http.get("https://api.example/users")

    assert transport.to("/acquire")[0].path == "/breakers/api-users/acquire"


async def test_invalid_breaker_name_is_refused_early() -> None:
    async with BreakerClient("http://unused.example", events=False) as client:
        with pytest.raises(ValueError, match="invalid breaker name"):
            client.breaker("no spaces allowed")
