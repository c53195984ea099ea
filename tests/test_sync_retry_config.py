"""A breaker's `retry` config: validated in the config file and on `PUT` and `PATCH`, served in the breaker's
config, and used by every client that passes no policy; a `PUT` (or `PATCH`) of the retry table changes the
attempts a running client makes. Against real replicas on real Redis (the config goes through Lua verbatim)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from breaker_client import BreakerClient, RetryConfig, RetryPolicy, SyncBreakerClient
from breaker_service.config import ConfigError, parse_config
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceFactory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from breaker_client import BreakerView
    from tests.fixtures.service import ServiceProcess

WAIT_S: Final = 20.0
NAME: Final = "retry-put"


class Refused(ConnectionError):
    """Retried (a connection error), and a failure."""


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    factory = ServiceFactory(tmp_path_factory.mktemp("retry-config-services"))
    try:
        yield [factory(redis_url), factory(redis_url)]
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def admin(replicas: list[ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replicas[1].url, headers=ADMIN_HEADERS, timeout=10.0) as client:
        yield client


def put_retry(admin: httpx.Client, name: str, retry: dict[str, Any] | None) -> httpx.Response:
    return admin.put(f"/breakers/{name}", json={"failure_threshold": 100, "retry": retry})


def retry_attempts(view: BreakerView | None) -> int | None:
    return None if view is None or view.config.retry is None else view.config.retry.attempts


def test_a_put_of_the_retry_table_changes_the_attempts_a_running_client_makes(
    replicas: list[ServiceProcess], admin: httpx.Client
) -> None:
    admin.delete(f"/breakers/{NAME}")
    put_retry(admin, NAME, {"attempts": 2, "base_s": 0, "jitter": False}).raise_for_status()
    attempts: list[int] = []

    def refused() -> None:
        attempts.append(1)
        raise Refused

    with SyncBreakerClient(replicas[0].url, token=CLIENT_TOKEN) as client:
        breaker = client.breaker(NAME, fallback=None)  # no policy: the service's
        client.wait_for(lambda c: retry_attempts(c.view(NAME)) == 2, timeout_s=WAIT_S)
        breaker.call(refused)
        assert len(attempts) == 2

        body = put_retry(admin, NAME, {"attempts": 4, "base_s": 0, "jitter": False})
        assert body.json()["config"]["retry"] == {
            "attempts": 4,
            "base_s": 0.0,
            "multiplier": 2.0,
            "max_s": 30.0,
            "jitter": False,
        }
        client.wait_for(lambda c: retry_attempts(c.view(NAME)) == 4, timeout_s=WAIT_S)
        attempts.clear()
        breaker.call(refused)
        assert len(attempts) == 4

        patch = {"retry": {"attempts": 3, "base_s": 0, "jitter": False}}
        admin.patch(f"/breakers/{NAME}", params={"reason": "fewer retries"}, json=patch).raise_for_status()
        client.wait_for(lambda c: retry_attempts(c.view(NAME)) == 3, timeout_s=WAIT_S)
        attempts.clear()
        breaker.call(refused)
        assert len(attempts) == 3  # PATCH too

        attempts.clear()
        client.breaker(NAME, retry=RetryPolicy(attempts=1), fallback=None).call(refused)
        assert len(attempts) == 1  # a policy given in code wins


async def test_the_async_client_follows_the_retry_table_too(replicas: list[ServiceProcess]) -> None:
    name = "retry-put-async"
    async with httpx.AsyncClient(base_url=replicas[0].url, headers=ADMIN_HEADERS) as async_admin:
        await async_admin.delete(f"/breakers/{name}")
        put = {"failure_threshold": 100, "retry": {"attempts": 3, "base_s": 0, "jitter": False}}
        (await async_admin.put(f"/breakers/{name}", json=put)).raise_for_status()
    attempts: list[int] = []

    async def refused() -> None:
        attempts.append(1)
        raise Refused

    async with BreakerClient(replicas[1].url, token=CLIENT_TOKEN) as client:
        await client.wait_for(lambda c: retry_attempts(c.view(name)) == 3, timeout_s=WAIT_S)
        await client.breaker(name, fallback=None).call(refused)

    assert len(attempts) == 3


@pytest.mark.parametrize(
    "retry",
    [{"attempts": 0}, {"attempts": 2, "tries": 3}, {"base_s": -1}, {"multiplier": 0.5}, {"jitter": "yes"}, [3]],
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_bad_retry_table_is_refused_and_changes_nothing(admin: httpx.Client, retry: object, method: str) -> None:
    name = "retry-bad"
    admin.delete(f"/breakers/{name}")
    put_retry(admin, name, {"attempts": 2}).raise_for_status()

    response = admin.request(method, f"/breakers/{name}", params={"reason": "test"}, json={"retry": retry})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ORC_001"
    assert admin.get(f"/breakers/{name}").json()["config"]["retry"]["attempts"] == 2


def test_the_config_file_takes_a_retry_table_per_breaker_and_in_defaults() -> None:
    config = parse_config(
        """
        [defaults.retry]
        attempts = 2
        [breakers.sms_agent.retry]
        attempts = 4
        base_s = 1.0
        [breakers.openai]
        open_timeout_s = 30
        """,
        source="test.toml",
    )

    assert config.breakers["sms_agent"].config.retry == RetryConfig(attempts=4, base_s=1.0)
    assert config.breakers["openai"].config.retry == RetryConfig(attempts=2)
    assert RetryPolicy.from_config(RetryConfig(attempts=4)) == RetryPolicy(attempts=4)  # the seed's 1 s, 2 s, 4 s


@pytest.mark.parametrize("table", ["attempts = 0", "tries = 3", "max_s = -1", 'jitter = "no"'])
def test_a_bad_retry_table_in_the_config_file_names_the_file_and_the_field(table: str) -> None:
    with pytest.raises(ConfigError, match=r"test\.toml: \[breakers\.sms_agent\].*retry"):
        parse_config(f"[breakers.sms_agent.retry]\n{table}\n", source="test.toml")
