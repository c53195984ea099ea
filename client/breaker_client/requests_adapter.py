"""`BreakerAdapter`: protects a `requests.Session` by mounting it (needs the extra `breaker-client[requests]`).

    session = requests.Session()
    session.mount("https://sms.example", BreakerAdapter(client))   # client: a SyncBreakerClient

The rules are `SyncBreakerTransport`'s: a breaker per host (or `name`); connection errors, timeouts, 5xx and 429
are failures; only GET, HEAD, OPTIONS, PUT and DELETE, or a request with an `Idempotency-Key` header, are
retried; after the retries a 5xx response is returned as it is; a refused request raises `CircuitOpenError` or
answers `fallback` (a response, or a callable given the exception and the request); `when_unknown` is given to
each breaker (`SyncBreakerClient.breaker`).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from breaker_client._correlation import CORRELATION_HEADER, correlation_id, current_correlation_id, use_correlation_id
from breaker_client._fallback import NO_FALLBACK
from breaker_client._local import checked_when_unknown
from breaker_client._responses import register
from breaker_client._transport import may_retry, no_retry

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy
    from breaker_client._sync_breaker import SyncBreaker
    from breaker_client._sync_client import SyncBreakerClient
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["BreakerAdapter", "request_breaker_name"]

register(
    response=requests.Response,
    status_error=requests.HTTPError,
    transient=(requests.ConnectionError, requests.Timeout),
)

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def request_breaker_name(request: requests.PreparedRequest) -> str:
    """The default breaker of a request: its host, and its port when one is given (`api.example-8443`)."""
    parts = urlsplit(request.url or "")
    name = f"{parts.hostname}-{parts.port}" if parts.port is not None else parts.hostname or ""
    return _NOT_IN_NAME.sub("-", name).lstrip("-._")[:128] or "default"


class BreakerAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose every request goes through a breaker of `client`."""

    def __init__(
        self,
        client: SyncBreakerClient,
        *,
        name: str | Callable[[requests.PreparedRequest], str] | None = None,
        retry: RetryPolicy | None = None,
        fallback: object = NO_FALLBACK,
        failure: FailurePolicy | None = None,
        when_unknown: WhenUnknown | None = None,
        **adapter_options: Any,
    ) -> None:
        super().__init__(**adapter_options)
        self._client = client
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure
        self._when_unknown = None if when_unknown is None else checked_when_unknown(when_unknown)
        self._breakers: dict[tuple[str, bool], SyncBreaker] = {}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        retry = may_retry(request.method or "GET", request.headers)
        breaker = self._breaker_for(request, retry)
        # The send options travel in a partial: the call's one argument (what a fallback is given) is the request.
        send = functools.partial(self._send, args, kwargs)
        with use_correlation_id(request.headers.get(CORRELATION_HEADER) or current_correlation_id()):
            return breaker.call(send, request)

    def _send(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], request: requests.PreparedRequest
    ) -> requests.Response:
        request.headers[CORRELATION_HEADER] = correlation_id()
        return super().send(request, *args, **kwargs)

    def _breaker_for(self, request: requests.PreparedRequest, retry: bool) -> SyncBreaker:
        if isinstance(self._name, str):
            name = self._name
        else:
            name = request_breaker_name(request) if self._name is None else self._name(request)
        breaker = self._breakers.get((name, retry))
        if breaker is None:
            policy = self._retry if retry else no_retry(self._retry)
            breaker = self._client.breaker(
                name, retry=policy, fallback=self._fallback, failure=self._failure, when_unknown=self._when_unknown
            )
            self._breakers[(name, retry)] = breaker
        return breaker
