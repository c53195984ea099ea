"""`when_unknown` in the async client: what a call does while the service cannot be reached and this process never
saw the breaker ("deny": refused as if OPEN, the call not made; "allow": a fresh local breaker, as before).

The service is the real app (tests/client/_harness.py), stopped so that its port refuses; a client of a port where
nothing listens has never reached a service at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from breaker_client import BreakerClient, BreakerTransport, CircuitOpenError, SyncBreakerClient, SyncBreakerTransport
from breaker_client.requests_adapter import BreakerAdapter
from tests.client._calls import FALLBACK, NO_RETRY, Dependency, seen_then_fallback
from tests.client._harness import free_port_url
from tests.client._logs import capture_client_logs

if TYPE_CHECKING:
    from tests.client._harness import ServiceHarness
    from tests.client.conftest import ClientFactory


async def outage(service: ServiceHarness, client: BreakerClient) -> None:
    """Stop the service and return once the client has seen its event stream end."""
    await service.stop()
    await client.wait_for(lambda c: not c.live)


def refusals(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "breaker.unknown_denied"]


async def test_deny_refuses_a_breaker_never_seen_without_calling_it() -> None:
    dependency = Dependency()
    seen: list[BaseException] = []
    async with BreakerClient(free_port_url(), recheck_s=3600) as client:
        payments = client.breaker("payments", when_unknown="deny", fallback=seen_then_fallback(seen))
        with capture_client_logs() as logs:
            first = await payments.call(dependency.charge_async)
            second = await payments.call(dependency.charge_async)
        with pytest.raises(CircuitOpenError) as refused:
            await client.breaker("payments", when_unknown="deny", retry=NO_RETRY).call(dependency.charge_async)

        assert (first, second) == (FALLBACK, FALLBACK)
        assert dependency.calls == 0
        assert client.degraded
        assert all(isinstance(exc, CircuitOpenError) and exc.degraded for exc in seen)
        assert refused.value.degraded
        assert refused.value.retry_after_s == 3600  # when this client asks the service again
        assert [(r["breaker"], r["source"], r["log_level"]) for r in refusals(logs)] == [
            ("payments", "declared", "warning")
        ]  # once per breaker per outage, not once per call


async def test_deny_refuses_with_breaker_as_a_context_manager() -> None:
    async with BreakerClient(free_port_url(), recheck_s=3600) as client:
        with pytest.raises(CircuitOpenError):
            async with client.breaker("payments", when_unknown="deny"):
                pytest.fail("the block must not run")


async def test_allow_is_the_default_and_runs_a_fresh_local_breaker() -> None:
    dependency = Dependency()
    async with BreakerClient(free_port_url(), recheck_s=3600) as client:
        with capture_client_logs() as logs:
            assert await client.breaker("payments").call(dependency.charge_async) == "charged"
            assert await client.breaker("sms", when_unknown="allow").call(dependency.charge_async) == "charged"

        assert dependency.calls == 2
        assert client.degraded
        assert refusals(logs) == []


async def test_the_client_wide_default_applies_where_nothing_is_declared() -> None:
    dependency = Dependency()
    async with BreakerClient(free_port_url(), recheck_s=3600, when_unknown="deny") as client:
        with pytest.raises(CircuitOpenError):
            await client.breaker("payments").call(dependency.charge_async)
        assert await client.breaker("sms", when_unknown="allow").call(dependency.charge_async) == "charged"

        assert dependency.calls == 1


async def test_a_breaker_seen_before_the_outage_keeps_its_local_machine(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    dependency = Dependency()
    client, _ = await make_client(recheck_s=3600)
    await client.breaker("payments", when_unknown="deny").call(dependency.charge_async)
    await client.wait_for(lambda c: c.view("payments") is not None)

    await outage(service, client)
    seen = await client.breaker("payments", when_unknown="deny").call(dependency.charge_async)
    with pytest.raises(CircuitOpenError):
        await client.breaker("never-seen", when_unknown="deny").call(dependency.charge_async)

    assert seen == "charged"  # seeded from the CLOSED breaker it knew
    assert client.degraded
    assert dependency.calls == 2


async def test_deny_lasts_only_until_the_service_answers_again(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    dependency = Dependency()
    client, _ = await make_client(recheck_s=3600)
    await outage(service, client)
    with pytest.raises(CircuitOpenError):
        await client.breaker("payments", when_unknown="deny").call(dependency.charge_async)

    await service.start()
    await client.wait_for(lambda c: c.live and not c.degraded)

    assert await client.breaker("payments", when_unknown="deny").call(dependency.charge_async) == "charged"
    assert dependency.calls == 1


@pytest.mark.parametrize(
    ("on_service", "declared", "allowed"),
    [("deny", "allow", False), ("deny", None, False), ("allow", "deny", True)],
    ids=["deny-over-declared-allow", "deny-over-client-default", "allow-over-declared-deny"],
)
async def test_when_unknown_learnt_from_the_service_wins_over_the_declaration(
    make_client: ClientFactory, service: ServiceHarness, on_service: str, declared: Any, allowed: bool
) -> None:
    await service.admin("PUT", "/breakers/payments", {"when_unknown": on_service})
    client, _ = await make_client(recheck_s=3600)
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.config.when_unknown == on_service)
    # Deleted: the client no longer knows its state, only the config it read.
    await service.admin("DELETE", "/breakers/payments?reason=test")
    await client.wait_for(lambda c: c.view("payments") is None)
    await outage(service, client)
    dependency = Dependency()

    with capture_client_logs() as logs:
        payments = client.breaker("payments", when_unknown=declared, fallback=FALLBACK)
        result = await payments.call(dependency.charge_async)

    assert result == ("charged" if allowed else FALLBACK)
    assert dependency.calls == (1 if allowed else 0)
    assert [r["source"] for r in refusals(logs)] == ([] if allowed else ["service config"])


async def test_the_async_transport_refuses_without_sending() -> None:
    sent: list[httpx.Request] = []

    def dependency(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with BreakerClient(free_port_url(), recheck_s=3600) as client:
        transport = BreakerTransport(client, httpx.MockTransport(dependency), when_unknown="deny")
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(CircuitOpenError):
                await http.get("https://payments.example/charge")

    assert sent == []


@pytest.mark.parametrize("value", ["Deny", "block", ""])
async def test_a_bad_when_unknown_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="when_unknown must be 'allow' or 'deny'"):
        BreakerClient(free_port_url(), when_unknown=value)
    with pytest.raises(ValueError, match="when_unknown must be 'allow' or 'deny'"):
        SyncBreakerClient(free_port_url(), when_unknown=value)
    async with BreakerClient(free_port_url()) as client:
        with pytest.raises(ValueError, match="when_unknown must be 'allow' or 'deny'"):
            client.breaker("payments", when_unknown=value)
        with pytest.raises(ValueError, match="when_unknown must be 'allow' or 'deny'"):
            BreakerTransport(client, when_unknown=value)


@pytest.mark.parametrize("value", [None, True, 0, ["deny"]])
def test_a_when_unknown_of_another_type_is_a_type_error(value: Any) -> None:
    with SyncBreakerClient(free_port_url(), events=False) as client:
        if value is not None:  # None declares nothing on a breaker: the client's default applies
            with pytest.raises(TypeError, match="when_unknown must be 'allow' or 'deny'"):
                client.breaker("payments", when_unknown=value)
            with pytest.raises(TypeError, match="when_unknown must be 'allow' or 'deny'"):
                SyncBreakerTransport(client, when_unknown=value)
            with pytest.raises(TypeError, match="when_unknown must be 'allow' or 'deny'"):
                BreakerAdapter(client, when_unknown=value)
    with pytest.raises(TypeError, match="when_unknown must be 'allow' or 'deny'"):
        SyncBreakerClient(free_port_url(), when_unknown=value)
