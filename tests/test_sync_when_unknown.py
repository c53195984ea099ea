"""`when_unknown` in `SyncBreakerClient` and what is built on it (`SyncBreakerTransport`, the `requests` adapter):
the same rule as the async client's, decided by the same admission on the client's loop thread.

A never-reached service is a port where nothing listens; a service that goes away is a real replica on real Redis,
killed (SIGKILL) after the client has read what it knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import requests

from breaker_client import CircuitOpenError, RetryPolicy, SyncBreakerClient, SyncBreakerTransport
from breaker_client.requests_adapter import BreakerAdapter
from tests.client._calls import FALLBACK, Dependency, seen_then_fallback
from tests.client._harness import free_port_url
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.service import ServiceFactory, ServiceProcess

ONCE: Final = RetryPolicy(attempts=1)
WAIT_S: Final = 20.0


@pytest.fixture
def unreachable() -> Iterator[SyncBreakerClient]:
    with SyncBreakerClient(free_port_url(), recheck_s=3600) as client:
        yield client


@pytest.fixture
def replica(service_factory: ServiceFactory, redis_url: str) -> ServiceProcess:
    return service_factory(redis_url)


@pytest.fixture
def client(replica: ServiceProcess) -> Iterator[SyncBreakerClient]:
    with SyncBreakerClient(replica.url, token=CLIENT_TOKEN, recheck_s=3600, flush_interval_s=3600) as started:
        started.wait_for(lambda c: c.live, timeout_s=WAIT_S)
        yield started


def admin(replica: ServiceProcess, method: str, path: str, body: Any = None) -> None:
    httpx.request(method, replica.url + path, json=body, headers=ADMIN_HEADERS, timeout=10.0).raise_for_status()


def test_deny_refuses_a_breaker_never_seen_without_calling_it(unreachable: SyncBreakerClient) -> None:
    dependency = Dependency()
    seen: list[BaseException] = []
    payments = unreachable.breaker("payments", when_unknown="deny", fallback=seen_then_fallback(seen))

    assert payments.call(dependency.charge) == FALLBACK
    with pytest.raises(CircuitOpenError) as refused, unreachable.breaker("payments", when_unknown="deny"):
        pytest.fail("the block must not run")

    assert dependency.calls == 0
    assert unreachable.degraded
    assert refused.value.degraded
    assert [type(exc) for exc in seen] == [CircuitOpenError]


def test_allow_is_the_default_and_the_client_wide_deny_is_overridden_per_breaker() -> None:
    dependency = Dependency()
    with SyncBreakerClient(free_port_url(), recheck_s=3600) as allowing:
        assert allowing.breaker("payments").call(dependency.charge) == "charged"
    with SyncBreakerClient(free_port_url(), recheck_s=3600, when_unknown="deny") as denying:
        with pytest.raises(CircuitOpenError):
            denying.breaker("payments", retry=ONCE).call(dependency.charge)
        assert denying.breaker("sms", when_unknown="allow").call(dependency.charge) == "charged"

    assert dependency.calls == 2


def test_the_sync_transport_refuses_without_sending(unreachable: SyncBreakerClient) -> None:
    sent: list[httpx.Request] = []

    def dependency(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    transport = SyncBreakerTransport(unreachable, httpx.MockTransport(dependency), when_unknown="deny")
    with httpx.Client(transport=transport) as http, pytest.raises(CircuitOpenError):
        http.get("https://payments.example/charge")

    assert sent == []


def test_the_requests_adapter_refuses_without_sending(unreachable: SyncBreakerClient) -> None:
    dependency = free_port_url()  # a request sent there would fail with requests.ConnectionError instead
    seen: list[BaseException] = []

    def fallback(exc: BaseException, request: requests.PreparedRequest) -> requests.Response:
        seen.append(exc)
        answer = requests.Response()
        answer.status_code = 503
        return answer

    with requests.Session() as session:
        session.mount(dependency, BreakerAdapter(unreachable, when_unknown="deny", fallback=fallback))
        answer = session.get(dependency + "/charge")

    assert answer.status_code == 503
    assert [type(exc) for exc in seen] == [CircuitOpenError]


def test_a_breaker_seen_before_the_outage_keeps_its_local_machine(
    client: SyncBreakerClient, replica: ServiceProcess
) -> None:
    dependency = Dependency()
    client.breaker("sync-wu-seen", when_unknown="deny").call(dependency.charge)
    client.wait_for(lambda c: c.view("sync-wu-seen") is not None, timeout_s=WAIT_S)

    replica.kill()
    client.wait_for(lambda c: not c.live, timeout_s=WAIT_S)
    seen = client.breaker("sync-wu-seen", when_unknown="deny").call(dependency.charge)
    with pytest.raises(CircuitOpenError):
        client.breaker("sync-wu-never-seen", when_unknown="deny").call(dependency.charge)

    assert seen == "charged"
    assert client.degraded
    assert dependency.calls == 2


def test_when_unknown_learnt_from_the_service_wins_over_the_declaration(
    client: SyncBreakerClient, replica: ServiceProcess
) -> None:
    admin(replica, "PUT", "/breakers/sync-wu-learnt", {"when_unknown": "deny"})
    client.wait_for(
        lambda c: (v := c.view("sync-wu-learnt")) is not None and v.config.when_unknown == "deny", timeout_s=WAIT_S
    )
    admin(replica, "DELETE", "/breakers/sync-wu-learnt?reason=test")
    client.wait_for(lambda c: c.view("sync-wu-learnt") is None, timeout_s=WAIT_S)
    replica.kill()
    client.wait_for(lambda c: not c.live, timeout_s=WAIT_S)
    dependency = Dependency()

    result = client.breaker("sync-wu-learnt", when_unknown="allow", fallback=FALLBACK).call(dependency.charge)

    assert result == FALLBACK
    assert dependency.calls == 0
