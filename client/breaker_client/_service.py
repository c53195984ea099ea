"""HTTP to the breaker service: one `httpx.AsyncClient`, several base URLs, errors translated in one place."""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent, SSEError

from breaker_client._correlation import CORRELATION_HEADER, correlation_id
from breaker_client._errors import ClientError, ServiceError, TransportError, error_from_response
from breaker_client.protocol.models import JSON_ENCODER, Decision, Outcome, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

__all__ = ["ServiceConnection", "is_outage"]

T = TypeVar("T")

_DECISION: Final = msgspec.json.Decoder(Decision)
_LEASE: Final = b'{"lease":true}'
_SNAPSHOT: Final = msgspec.json.Decoder(Snapshot)
_FAILOVER_STATUSES: Final = frozenset({502, 503, 504})


def is_outage(exc: BaseException) -> bool:
    """The service is unreachable, failing (5xx) or answering garbage: callers fall back to local state."""
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, ServiceError) and (exc.status >= 500 or exc.error_code is None)


@contextmanager
def _translated() -> Iterator[None]:
    # The one place where foreign exceptions become ClientErrors.
    try:
        yield
    except httpx.HTTPError as exc:
        raise TransportError(f"breaker service unreachable: {exc!r}") from exc
    except msgspec.DecodeError as exc:
        raise ServiceError(f"breaker service answered garbage: {exc}", status=200) from exc
    except SSEError as exc:
        raise ServiceError(f"breaker service answered no event stream: {exc}", status=200) from exc


class ServiceConnection:
    """Requests to the service; moves to the next base URL when one is down (connection error, 502-504)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        token: str | None,
        transport: httpx.AsyncBaseTransport | None,
        timeout_s: float,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one base URL is needed")
        self._bases = [url.rstrip("/") for url in base_urls]
        self._current = 0
        self._timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout_s)

    @property
    def base_url(self) -> str:
        """The base URL in use now."""
        return self._bases[self._current]

    async def acquire(self, name: str) -> Decision:
        """`POST /breakers/{name}/acquire`, taking part in fleet budgeting (`{"lease": true}`)."""
        body = await self._request("POST", f"/breakers/{quote(name)}/acquire", _LEASE)
        with _translated():
            return _DECISION.decode(body)

    async def record(self, name: str, outcome: Outcome, *, timeout_s: float | None = None) -> Snapshot:
        """`POST /breakers/{name}/record`."""
        body = await self._request("POST", f"/breakers/{quote(name)}/record", JSON_ENCODER.encode(outcome), timeout_s)
        with _translated():
            return _SNAPSHOT.decode(body)

    async def snapshot(self, name: str) -> Snapshot:
        """`GET /breakers/{name}`."""
        body = await self._request("GET", f"/breakers/{quote(name)}")
        with _translated():
            return _SNAPSHOT.decode(body)

    async def request(
        self, method: str, path: str, decoder: msgspec.json.Decoder[T], content: bytes | None = None
    ) -> T:
        """Any other route (the queues): its answer decoded by `decoder`, errors translated."""
        body = await self._request(method, path, content)
        with _translated():
            return decoder.decode(body)

    @asynccontextmanager
    async def events(self, *, idle_timeout_s: float) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """`GET /events` on the current base URL, parsed by httpx-sse; a refused connection moves to the next base
        URL."""
        base = self._current
        request = self._http.build_request(
            "GET",
            self._bases[base] + "/events",
            headers={"Accept": "text/event-stream", CORRELATION_HEADER: correlation_id()},
            timeout=httpx.Timeout(self._timeout_s, read=idle_timeout_s),
        )
        try:
            with _translated():
                response = await self._http.send(request, stream=True)
                if response.status_code != 200:
                    raise error_from_response(response.status_code, await response.aread())
        except ClientError:
            self._fail_over(base)
            raise
        try:
            yield self._events(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _events(self, response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
        with _translated():
            async for event in EventSource(response).aiter_sse():
                yield event

    async def _request(
        self, method: str, path: str, content: bytes | None = None, timeout_s: float | None = None
    ) -> bytes:
        headers = {CORRELATION_HEADER: correlation_id()}
        if content is not None:
            headers["Content-Type"] = "application/json"
        timeout = self._timeout_s if timeout_s is None else timeout_s
        last: ClientError = TransportError("no base URL answered")
        for _ in self._bases:
            base = self._current
            try:
                with _translated():
                    response = await self._http.request(
                        method, self._bases[base] + path, content=content, headers=headers, timeout=timeout
                    )
            except TransportError as exc:
                last = exc
                self._fail_over(base)
                continue
            if response.status_code in _FAILOVER_STATUSES and len(self._bases) > 1:
                last = error_from_response(response.status_code, response.content)
                self._fail_over(base)
                continue
            if response.status_code >= 400:
                raise error_from_response(response.status_code, response.content)
            return response.content
        raise last

    def _fail_over(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self._bases)
