"""`SyncBreakerTransport`: protects any `httpx.Client` by mounting it, e.g. `mounts={"https://sms.example": ...}`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from breaker_client._correlation import CORRELATION_HEADER, correlation_id, current_correlation_id, use_correlation_id
from breaker_client._fallback import NO_FALLBACK
from breaker_client._local import checked_when_unknown
from breaker_client._retry import is_retryable_status
from breaker_client._transport import breaker_name, may_retry, no_retry

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy
    from breaker_client._sync_breaker import SyncBreaker
    from breaker_client._sync_client import SyncBreakerClient
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["SyncBreakerTransport"]


class SyncBreakerTransport(httpx.BaseTransport):
    """`BreakerTransport` for `httpx.Client`, with the same rules: a breaker per host (or `name`), failures are
    connection errors, timeouts, 5xx and 429; only GET, HEAD, OPTIONS, PUT and DELETE, or a request with an
    `Idempotency-Key` header, are retried; a refused request raises `CircuitOpenError` or answers `fallback`;
    `when_unknown` is given to each breaker."""

    def __init__(
        self,
        client: SyncBreakerClient,
        inner: httpx.BaseTransport | None = None,
        *,
        name: str | Callable[[httpx.Request], str] | None = None,
        retry: RetryPolicy | None = None,
        fallback: object = NO_FALLBACK,
        failure: FailurePolicy | None = None,
        when_unknown: WhenUnknown | None = None,
    ) -> None:
        self._client = client
        self._inner = inner or httpx.HTTPTransport()
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure
        self._when_unknown = None if when_unknown is None else checked_when_unknown(when_unknown)
        self._breakers: dict[tuple[str, bool], SyncBreaker] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        retry = may_retry(request.method, request.headers)
        breaker = self._breaker_for(request, retry)
        if retry and (self._retry is None or self._retry.attempts > 1):
            request.read()  # a streamed body is read once so that a retry can send it again
        with use_correlation_id(request.headers.get(CORRELATION_HEADER) or current_correlation_id()):
            return breaker.call(self._send, request)

    def close(self) -> None:
        self._inner.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        request.headers[CORRELATION_HEADER] = correlation_id()
        response = self._inner.handle_request(request)
        if is_retryable_status(response.status_code):
            response.read()  # buffered, so that it can be returned after the last attempt
        return response

    def _breaker_for(self, request: httpx.Request, retry: bool) -> SyncBreaker:
        name = breaker_name(self._name, request)
        breaker = self._breakers.get((name, retry))
        if breaker is None:
            policy = self._retry if retry else no_retry(self._retry)
            breaker = self._client.breaker(
                name, retry=policy, fallback=self._fallback, failure=self._failure, when_unknown=self._when_unknown
            )
            self._breakers[(name, retry)] = breaker
        return breaker
