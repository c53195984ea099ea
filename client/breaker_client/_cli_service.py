"""`breakerctl`'s requests to the service: transport failures become `TransportError`, error answers
`ServiceError`s, answers are decoded where they arrive.

Every write carries the invocation's `Idempotency-Key` (one per `Service`, so one per command run; a command makes
at most one write), and is sent again under it while its outcome is unknown (`_cli_retry`): the service answers a
resent write with the first answer instead of applying it twice. Running the command again is a new action with a
new key, unless the operator passes the key of the run whose outcome stayed unknown (`--idempotency-key`).
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, TypeVar

import httpx
import msgspec
from httpx_sse import EventSource, SSEError

from breaker_client._cli_retry import in_doubt
from breaker_client._correlation import CORRELATION_HEADER
from breaker_client._errors import ClientError, ServiceError, TransportError, error_from_response
from breaker_client._transport import IDEMPOTENCY_HEADER
from breaker_client.protocol.models import JSON_ENCODER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from httpx_sse import ServerSentEvent
    from tenacity import AsyncRetrying

__all__ = ["TIMEOUT_S", "Service", "decoded", "translated"]

T = TypeVar("T")

TIMEOUT_S: Final = 10.0


class Service:
    """The requests the CLI makes: transport failures become `TransportError`, error answers `ServiceError`s."""

    def __init__(
        self,
        url: str,
        token: str | None,
        transport: httpx.AsyncBaseTransport | None,
        *,
        idempotency_key: str | None = None,
        writes: AsyncRetrying | None = None,
    ) -> None:
        """`writes` sends each write again while its outcome is unknown (`_cli_retry.retrying`); None: once."""
        headers = {CORRELATION_HEADER: uuid.uuid4().hex}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT_S, transport=transport)
        self.idempotency_key = idempotency_key or uuid.uuid4().hex
        self._writes = writes
        self.unsettled = False
        """A write was sent and its outcome is unknown (no answer yet, or none that settles it): running it again
        under `idempotency_key` is safe."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, decoder: msgspec.json.Decoder[T], **params: int) -> tuple[T, bytes]:
        """The answer decoded, and as it came (for `--json`)."""
        answer = await self._send(self._http.build_request("GET", path, params=params))
        return decoded(decoder, answer), answer

    async def post(self, path: str, body: msgspec.Struct, decoder: msgspec.json.Decoder[T]) -> tuple[T, bytes]:
        request = self._http.build_request(
            "POST", path, content=JSON_ENCODER.encode(body), headers={"Content-Type": "application/json"}
        )
        answer = await self._send(request)
        return decoded(decoder, answer), answer

    async def send(self, method: str, path: str, *, body: object = None, params: dict[str, str] | None = None) -> bytes:
        """Any request; the answer's body as it came."""
        content = None if body is None else JSON_ENCODER.encode(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        return await self._send(self._http.build_request(method, path, content=content, headers=headers, params=params))

    @asynccontextmanager
    async def events(self, path: str) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """A streamed answer's events (httpx-sse); no read timeout, since an event stream may stay quiet for long."""
        request = self._http.build_request(
            "GET", path, headers={"Accept": "text/event-stream"}, timeout=httpx.Timeout(TIMEOUT_S, read=None)
        )
        with translated():
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with translated():
                    body = await response.aread()
                raise error_from_response(response.status_code, body)
            yield self._iter_events(response)
        finally:
            await response.aclose()

    async def _iter_events(self, response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
        with translated():
            async for event in EventSource(response).aiter_sse():
                yield event

    async def _send(self, request: httpx.Request) -> bytes:
        if request.method == "GET":
            return await self._attempt(request)
        request.headers[IDEMPOTENCY_HEADER] = self.idempotency_key
        self.unsettled = True  # until an answer settles it; a cancelled write (Ctrl-C) stays unsettled
        try:
            answer = await (self._attempt(request) if self._writes is None else self._writes(self._attempt, request))
        except ClientError as exc:
            self.unsettled = in_doubt(exc)
            raise
        self.unsettled = False
        return answer

    async def _attempt(self, request: httpx.Request) -> bytes:
        with translated():
            response = await self._http.send(request)
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response.content


def decoded(decoder: msgspec.json.Decoder[T], body: bytes | str) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ServiceError(f"the answer is not the breaker API's: {exc}", status=200) from exc


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    except SSEError as exc:
        raise ServiceError(f"the service answered no event stream: {exc}", status=200) from exc
