"""`BreakerTransport`: protects any `httpx.AsyncClient` by mounting it, e.g. `mounts={"https://sms.example": ...}`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx

from breaker_client._breaker import NO_FALLBACK, Breaker
from breaker_client._correlation import CORRELATION_HEADER, correlation_id, current_correlation_id, use_correlation_id
from breaker_client._retry import is_retryable_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaker_client._client import BreakerClient
    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy

__all__ = ["BreakerTransport", "host_breaker_name"]

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def host_breaker_name(request: httpx.Request) -> str:
    """The default breaker of a request: its host, and its port when one is given (`api.example-8443`)."""
    host = request.url.host
    port = request.url.port
    name = f"{host}-{port}" if port is not None else host
    return _NOT_IN_NAME.sub("-", name).lstrip("-._")[:128] or "default"


class BreakerTransport(httpx.AsyncBaseTransport):
    """Sends through `inner` under a breaker: one per host, or per `name(request)`, or the fixed `name`.

    Each request carries `X-Correlation-ID`. Connection errors, timeouts, 5xx and 429 count as failures and are
    retried per `retry`; after the retries a 5xx response is returned as it is. A refused request raises
    `CircuitOpenError`, or answers with `fallback` (a response, or a callable receiving the exception).
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
    ) -> None:
        self._client = client
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure
        self._breakers: dict[str, Breaker] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        breaker = self._breaker_for(request)
        if self._retry is None or self._retry.attempts > 1:
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

    def _breaker_for(self, request: httpx.Request) -> Breaker:
        if isinstance(self._name, str):
            name = self._name
        elif self._name is not None:
            name = self._name(request)
        else:
            name = host_breaker_name(request)
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._client.breaker(name, retry=self._retry, fallback=self._fallback, failure=self._failure)
            self._breakers[name] = breaker
        return breaker
