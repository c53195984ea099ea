"""`BreakerTransport`: protects any `httpx.AsyncClient` by mounting it, e.g. `mounts={"https://sms.example": ...}`."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Final

import httpx

from breaker_client._breaker import NO_FALLBACK, Breaker
from breaker_client._correlation import CORRELATION_HEADER, correlation_id, current_correlation_id, use_correlation_id
from breaker_client._local import checked_when_unknown
from breaker_client._retry import RetryPolicy, is_retryable_status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from breaker_client._client import BreakerClient
    from breaker_client._failure import FailurePolicy
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["IDEMPOTENCY_HEADER", "IDEMPOTENT_METHODS", "BreakerTransport", "host_breaker_name", "may_retry"]

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_ONCE: Final = RetryPolicy(attempts=1)


def may_retry(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may be sent again: an idempotent method, or one carrying an `Idempotency-Key` (a POST
    that sends an SMS or takes a payment is sent once otherwise, whatever the retry policy)."""
    return method.upper() in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in headers


def no_retry(policy: RetryPolicy | None) -> RetryPolicy:
    """The policy of a request that must not be sent twice: one attempt, the same timeout."""
    return _ONCE if policy is None else dataclasses.replace(policy, attempts=1)


def host_breaker_name(request: httpx.Request) -> str:
    """The default breaker of a request: its host, and its port when one is given (`api.example-8443`)."""
    host = request.url.host
    port = request.url.port
    name = f"{host}-{port}" if port is not None else host
    return _NOT_IN_NAME.sub("-", name).lstrip("-._")[:128] or "default"


class BreakerTransport(httpx.AsyncBaseTransport):
    """Sends through `inner` under a breaker: one per host, or per `name(request)`, or the fixed `name`.

    Each request carries `X-Correlation-ID`. Connection errors, timeouts, 5xx and 429 count as failures and are
    retried per `retry` (None: the breaker's retry config on the service), but only for GET, HEAD, OPTIONS, PUT
    and DELETE, or a request with an `Idempotency-Key` header: any other is sent once. After the retries a 5xx
    response is returned as it is. A refused request raises `CircuitOpenError`, or answers with `fallback` (a
    response, or a callable given the exception and the request). `when_unknown` is given to each breaker
    (`BreakerClient.breaker`).
    """

    def __init__(
        self,
        client: BreakerClient,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        name: str | Callable[[httpx.Request], str] | None = None,
        retry: RetryPolicy | None = None,
        fallback: object = NO_FALLBACK,
        failure: FailurePolicy | None = None,
        when_unknown: WhenUnknown | None = None,
    ) -> None:
        self._client = client
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure
        self._when_unknown = None if when_unknown is None else checked_when_unknown(when_unknown)
        self._breakers: dict[tuple[str, bool], Breaker] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        retry = may_retry(request.method, request.headers)
        breaker = self._breaker_for(request, retry)
        if retry and (self._retry is None or self._retry.attempts > 1):
            await request.aread()  # a streamed body is read once so that a retry can send it again
        with use_correlation_id(request.headers.get(CORRELATION_HEADER) or current_correlation_id()):
            return await breaker.call(self._send, request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        request.headers[CORRELATION_HEADER] = correlation_id()
        response = await self._inner.handle_async_request(request)
        if is_retryable_status(response.status_code):
            await response.aread()  # buffered, so that it can be returned after the last attempt
        return response

    def _breaker_for(self, request: httpx.Request, retry: bool) -> Breaker:
        name = breaker_name(self._name, request)
        breaker = self._breakers.get((name, retry))
        if breaker is None:
            policy = self._retry if retry else no_retry(self._retry)
            breaker = self._client.breaker(
                name, retry=policy, fallback=self._fallback, failure=self._failure, when_unknown=self._when_unknown
            )
            self._breakers[(name, retry)] = breaker
        return breaker


def breaker_name(name: str | Callable[[httpx.Request], str] | None, request: httpx.Request) -> str:
    """The breaker of a request: the fixed `name`, or `name(request)`, or its host."""
    if isinstance(name, str):
        return name
    return host_breaker_name(request) if name is None else name(request)
