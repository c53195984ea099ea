"""The transports' retry rules per method, through a real replica to a real dependency answering 503.

`BreakerTransport` (httpx.AsyncClient), `SyncBreakerTransport` (httpx.Client) and `BreakerAdapter` (requests) send
GET, HEAD, OPTIONS, PUT and DELETE up to `attempts` times, and POST and PATCH once, unless the request carries an
`Idempotency-Key`: an SMS or a payment is not sent three times. Each count is of requests the dependency received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx
import pytest
import requests

from breaker_client import BreakerClient, BreakerTransport, RetryPolicy, SyncBreakerClient, SyncBreakerTransport
from breaker_client.requests_adapter import BreakerAdapter
from tests.fixtures.dependency import Mode, running_dependency
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceFactory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.dependency import Dependency
    from tests.fixtures.service import ServiceProcess

ATTEMPTS: Final = 3
RETRY: Final = RetryPolicy(attempts=ATTEMPTS, base_s=0, jitter=False)
CASES: Final = [
    ("GET", {}, ATTEMPTS),
    ("HEAD", {}, ATTEMPTS),
    ("OPTIONS", {}, ATTEMPTS),
    ("PUT", {}, ATTEMPTS),
    ("DELETE", {}, ATTEMPTS),
    ("POST", {}, 1),
    ("PATCH", {}, 1),
    ("POST", {"Idempotency-Key": "sms-42"}, ATTEMPTS),
    ("PATCH", {"Idempotency-Key": "sms-43"}, ATTEMPTS),
]


def body(method: str) -> bytes | None:
    return b"{}" if method in {"POST", "PUT", "PATCH"} else None


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    factory = ServiceFactory(tmp_path_factory.mktemp("transport-service"))
    try:
        yield factory(None)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def dead() -> Iterator[Dependency]:
    with running_dependency(mode=Mode.DEAD) as dependency:
        yield dependency


@pytest.fixture
def name(request: pytest.FixtureRequest, replica: ServiceProcess) -> str:
    """A fresh breaker per case, with room for every failure the case makes."""
    breaker = f"transport-{request.node.callspec.id}".replace("[", "-").replace("]", "")[:100]
    breaker = "".join(c if c.isalnum() or c in "-_." else "-" for c in breaker)
    with httpx.Client(base_url=replica.url, headers=ADMIN_HEADERS) as admin:
        admin.delete(f"/breakers/{breaker}")
        admin.put(f"/breakers/{breaker}", json={"failure_threshold": 100}).raise_for_status()
    return breaker


@pytest.mark.parametrize(("method", "headers", "expected"), CASES)
async def test_async_transport(
    replica: ServiceProcess, dead: Dependency, name: str, method: str, headers: dict[str, str], expected: int
) -> None:
    async with BreakerClient(replica.url, token=CLIENT_TOKEN) as client:
        transport = BreakerTransport(client, name=name, retry=RETRY)
        async with httpx.AsyncClient(transport=transport) as http:
            before = dead.hits
            response = await http.request(method, dead.url + "/send", headers=headers, content=body(method))

    assert response.status_code == 503  # the last answer, as it is
    assert dead.hits - before == expected


@pytest.mark.parametrize(("method", "headers", "expected"), CASES)
def test_sync_transport(
    replica: ServiceProcess, dead: Dependency, name: str, method: str, headers: dict[str, str], expected: int
) -> None:
    with SyncBreakerClient(replica.url, token=CLIENT_TOKEN) as client:
        transport = SyncBreakerTransport(client, name=name, retry=RETRY)
        with httpx.Client(transport=transport) as http:
            before = dead.hits
            response = http.request(method, dead.url + "/send", headers=headers, content=body(method))

    assert response.status_code == 503
    assert dead.hits - before == expected


@pytest.mark.parametrize(("method", "headers", "expected"), CASES)
def test_requests_adapter(
    replica: ServiceProcess, dead: Dependency, name: str, method: str, headers: dict[str, str], expected: int
) -> None:
    with SyncBreakerClient(replica.url, token=CLIENT_TOKEN) as client, requests.Session() as session:
        session.mount("http://", BreakerAdapter(client, name=name, retry=RETRY))
        before = dead.hits
        response = session.request(method, dead.url + "/send", headers=headers, data=body(method), timeout=10)

    assert response.status_code == 503
    assert dead.hits - before == expected


def queued(exc: Exception, request: requests.PreparedRequest) -> requests.Response:
    """A fallback answer: 202, with the request it stands for."""
    response = requests.Response()
    response.status_code = 202
    response.request = request
    return response


def test_requests_adapter_counts_failures_on_the_shared_breaker(replica: ServiceProcess, dead: Dependency) -> None:
    with httpx.Client(base_url=replica.url, headers=ADMIN_HEADERS) as admin:
        admin.delete("/breakers/requests-shared")
        admin.put("/breakers/requests-shared", json={"failure_threshold": 2}).raise_for_status()
        with SyncBreakerClient(replica.url, token=CLIENT_TOKEN) as client, requests.Session() as session:
            session.mount("http://", BreakerAdapter(client, name="requests-shared", retry=RETRY, fallback=queued))
            first = session.post(dead.url + "/send", timeout=10)
            second = session.post(dead.url + "/send", timeout=10)
            refused = session.post(dead.url + "/send", timeout=10)
        body = admin.get("/breakers/requests-shared").json()

    assert (first.status_code, second.status_code, refused.status_code) == (503, 503, 202)
    assert body["state"] == "OPEN"
    assert body["counts"]["failure"] == 2
