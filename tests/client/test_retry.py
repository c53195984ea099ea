"""The retry policy alone: what is retried, how many attempts, which waits tenacity computes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from breaker_client import CircuitOpenError, FailurePolicy, RetryPolicy, parse_retry_after
from tests.client._logs import capture_client_logs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

TINY = RetryPolicy(attempts=4, base_s=0.001, multiplier=2.0, max_s=1.0, jitter=False, timeout_s=5.0)


class Dependency:
    """An httpx client on a MockTransport answering the given statuses (or raising the given errors) in turn."""

    def __init__(self, answers: Sequence[int | Exception], headers: dict[str, str] | None = None) -> None:
        self._answers = list(answers)
        self._headers = headers or {}
        self.attempts = 0
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._handle), base_url="https://dep.example")

    def _handle(self, request: httpx.Request) -> httpx.Response:
        answer = self._answers[min(self.attempts, len(self._answers) - 1)]
        self.attempts += 1
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers=self._headers)

    async def get(self) -> httpx.Response:
        return await self.http.get("/send")

    async def get_or_raise(self) -> httpx.Response:
        return (await self.get()).raise_for_status()


def retry_waits(logs: Sequence[Mapping[str, Any]]) -> list[float]:
    return [entry["delay_s"] for entry in logs if entry["event"] == "breaker.retry"]


async def run(policy: RetryPolicy, attempt: Callable[[], Any]) -> Any:
    return await policy.run(lambda _: attempt(), None, breaker="dep")


async def test_5xx_is_retried_until_success() -> None:
    dependency = Dependency([503, 502, 200])

    with capture_client_logs() as logs:
        response = await run(TINY, dependency.get)

    assert response.status_code == 200
    assert dependency.attempts == 3
    assert [e["attempt"] for e in logs if e["event"] == "breaker.retry"] == [1, 2]
    assert retry_waits(logs) == [0.001, 0.002]


async def test_after_the_last_attempt_the_5xx_response_is_returned_as_is() -> None:
    dependency = Dependency([500])

    response = await run(TINY, dependency.get)

    assert response.status_code == 500
    assert dependency.attempts == 4


async def test_4xx_is_not_retried() -> None:
    dependency = Dependency([404, 200])

    response = await run(TINY, dependency.get)

    assert response.status_code == 404
    assert dependency.attempts == 1


async def test_4xx_status_error_is_not_retried() -> None:
    dependency = Dependency([400, 200])

    with pytest.raises(httpx.HTTPStatusError):
        await run(TINY, dependency.get_or_raise)

    assert dependency.attempts == 1


async def test_5xx_status_error_is_retried_and_reraised() -> None:
    dependency = Dependency([503])

    with pytest.raises(httpx.HTTPStatusError):
        await run(TINY, dependency.get_or_raise)

    assert dependency.attempts == 4


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"), TimeoutError()],
)
async def test_connection_errors_and_timeouts_are_retried(error: Exception) -> None:
    dependency = Dependency([error, error, 200])

    response = await run(TINY, dependency.get)

    assert response.status_code == 200
    assert dependency.attempts == 3


async def test_other_exceptions_are_not_retried() -> None:
    dependency = Dependency([ValueError("a bug"), 200])

    with pytest.raises(ValueError, match="a bug"):
        await run(TINY, dependency.get)

    assert dependency.attempts == 1


async def test_circuit_open_error_is_never_retried() -> None:
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise CircuitOpenError("dep", 1.0)

    with pytest.raises(CircuitOpenError):
        await run(TINY, refused)

    assert attempts == 1


async def test_one_attempt_means_no_retry() -> None:
    dependency = Dependency([503, 200])

    response = await run(RetryPolicy(attempts=1), dependency.get)

    assert response.status_code == 503
    assert dependency.attempts == 1


async def test_429_retry_after_seconds_is_the_minimum_wait() -> None:
    dependency = Dependency([429, 200], headers={"Retry-After": "0.05"})

    with capture_client_logs() as logs:
        response = await run(TINY, dependency.get)

    assert response.status_code == 200
    assert retry_waits(logs) == [0.05]


async def test_backoff_longer_than_retry_after_wins() -> None:
    policy = RetryPolicy(attempts=2, base_s=0.03, jitter=False)
    dependency = Dependency([503, 200], headers={"Retry-After": "0.01"})

    with capture_client_logs() as logs:
        await run(policy, dependency.get)

    assert retry_waits(logs) == [0.03]


async def test_retry_after_longer_than_max_ends_the_retries() -> None:
    dependency = Dependency([429, 200], headers={"Retry-After": "120"})

    response = await run(TINY, dependency.get)

    assert response.status_code == 429
    assert dependency.attempts == 1


async def test_waits_grow_exponentially_and_are_capped() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.001, multiplier=3.0, max_s=0.01, jitter=False)
    dependency = Dependency([503])

    with capture_client_logs() as logs:
        await run(policy, dependency.get)

    assert retry_waits(logs) == pytest.approx([0.001, 0.003, 0.009, 0.01])


async def test_jitter_adds_up_to_base() -> None:
    policy = RetryPolicy(attempts=4, base_s=0.001, multiplier=2.0, jitter=True)
    dependency = Dependency([503])

    with capture_client_logs() as logs:
        await run(policy, dependency.get)

    for wait, backoff in zip(retry_waits(logs), [0.001, 0.002, 0.004], strict=True):
        assert backoff <= wait <= backoff + 0.001


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts"),
        ({"base_s": -1}, "base_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_failure_classification_defaults() -> None:
    policy = FailurePolicy()
    request = httpx.Request("GET", "https://dep.example")

    assert policy.is_failure(httpx.ConnectError("refused"))
    assert policy.is_failure(RuntimeError("boom"))
    assert not policy.is_failure(CircuitOpenError("dep", None))
    assert policy.is_failed_result(httpx.Response(503))
    assert policy.is_failed_result(httpx.Response(429))
    assert not policy.is_failed_result(httpx.Response(404))
    assert not policy.is_failed_result("not a response")
    not_found = httpx.HTTPStatusError("404", request=request, response=httpx.Response(404, request=request))
    assert not policy.is_failure(not_found)


def test_failure_classification_by_types_predicate_and_status() -> None:
    by_type = FailurePolicy(exceptions=(httpx.TransportError,), ignore=(httpx.ProxyError,))
    by_predicate = FailurePolicy(predicate=lambda exc: "fatal" in str(exc))
    by_status = FailurePolicy(status=lambda status: status >= 400)

    assert by_type.is_failure(httpx.ConnectError("refused"))
    assert not by_type.is_failure(httpx.ProxyError("proxy"))
    assert not by_type.is_failure(ValueError("mine"))
    assert by_predicate.is_failure(RuntimeError("fatal"))
    assert not by_predicate.is_failure(RuntimeError("fine"))
    assert by_status.is_failed_result(httpx.Response(404))
