"""What one client may make the HTTP server hold: the request head's size and header count, and time.

This module is the one place the server's limits live; `server_options(settings)` gives the keyword arguments
for `uvicorn.Config`, whatever runs the server.

uvicorn's httptools parser has no limit of its own on the request head (llhttp leaves that to its embedder, and
httptools grows a header by concatenation, so a 64 MB header blocked the event loop for seconds) and no read
timeout (a slowloris client stayed connected for ever). `GuardedHttpToolsProtocol` adds both, and answers every
error the server itself makes in the contract's JSON shape:

- a request head over `BREAKER_MAX_HEADER_BYTES` (default 64 KiB: the target plus every header name and value),
  or with more than `MAX_HEADERS` header lines, answers 431 ORC_001 and the connection is closed; bytes are
  counted as they arrive, so the parser never accumulates more than one read (at most 256 KiB) past the limit,
  and memory and CPU per connection stay bounded;
- a request must arrive whole (head and body) within `BREAKER_CLIENT_TIMEOUT_S` (default 30 s) of the moment the
  server is ready for it (connection made, or the previous answer sent): otherwise 408 ORC_001 when nothing is
  under way, or the connection is simply closed when the app is waiting for the rest of a body. An answer being
  computed or streamed (`/events`) is never cut: the clock stops once the request has arrived whole;
- an idle keep-alive connection is closed after `KEEP_ALIVE_S` (uvicorn's own timer);
- a request the parser cannot read answers 400 ORC_001 (uvicorn's is `text/plain`).

The head count is exact except after a pipelined request, where the read that carried the end of the previous
request counts too (at most one read more than the head).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from breaker_client.protocol.catalogue import ErrorCode
from breaker_client.protocol.models import JSON_ENCODER
from breaker_service.responses import error_body

if TYPE_CHECKING:
    import asyncio

    from breaker_service.settings import Settings

MAX_HEADERS: Final = 100
"""Header lines one request may carry (httptools has no limit; browsers send ~20)."""
KEEP_ALIVE_S: Final = 5.0
"""An idle keep-alive connection is closed after this long (uvicorn's default), or the client timeout if shorter."""

log = structlog.get_logger("breaker_service.server")


@dataclass(frozen=True)
class ServerLimits:
    """The limits one `GuardedHttpToolsProtocol` class enforces."""

    max_header_bytes: int
    client_timeout_s: float
    max_headers: int = MAX_HEADERS


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` that apply the limits `settings` name."""
    limits = ServerLimits(max_header_bytes=settings.max_header_bytes, client_timeout_s=settings.client_timeout_s)
    return {
        "http": guarded_protocol(limits),
        "timeout_keep_alive": min(KEEP_ALIVE_S, settings.client_timeout_s),
        # Only read by uvicorn's h11 parser (not the one used here); set so the limit holds if it is ever swapped.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }


def guarded_protocol(limits: ServerLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits` (uvicorn builds protocols from a class, with no room for arguments)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class _HeadRefusedError(Exception):
    """Raised from a parser callback to stop parsing a head that breaks a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, a client timeout and JSON errors (module doc)."""

    limits: ClassVar[ServerLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str, dict[str, int]] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None

    # -- the client timeout -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline_at = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._disarm_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()

    # One timer per connection, moved lazily: arming on every request only sets the time, and the timer, when it
    # fires early, sleeps again until then (a timer made and cancelled per request was a measurable cost).
    def _arm_deadline(self) -> None:
        self._deadline_at = self.loop.time() + self.limits.client_timeout_s
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._deadline_at, self._on_deadline)

    def _disarm_deadline(self) -> None:
        self._deadline_at = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._deadline_at is None:
            return
        if self.loop.time() < self._deadline_at:
            self._deadline = self.loop.call_at(self._deadline_at, self._on_deadline)
            return
        self._deadline_at = None
        cycle = self.cycle
        if self.transport.is_closing() or (cycle is not None and not cycle.response_complete and not cycle.more_body):
            return  # the request arrived whole and its answer is under way: never cut that
        timeout_s = self.limits.client_timeout_s
        log.info("client too slow: connection closed", client=_address(self.client), timeout_s=timeout_s)
        if cycle is None or cycle.response_complete:
            message = f"the request did not arrive whole within {timeout_s:g} s"
            self._write_error(408, message, {"client_timeout_s": timeout_s})
        else:  # the app is reading the body: closing tells it the client is gone
            self.transport.close()

    # -- the request head -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head("the request head is larger than", self.limits.max_header_bytes, "max_header_bytes")
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._header_count, self._refusal = True, 0, 0, None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse_head("the request has more header lines than", self.limits.max_headers, "max_headers")
            raise _HeadRefusedError  # httptools stops parsing; uvicorn then calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        # A head that arrived in one read is measured here (the read count in data_received never saw it unfinished).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_head("the request head is larger than", self.limits.max_header_bytes, "max_header_bytes")
            raise _HeadRefusedError
        super().on_headers_complete()

    def _refuse_head(self, what: str, limit: int, key: str) -> None:
        self._refusal = (431, f"{what} {limit}", {key: limit})

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse; also ours to a head that breaks a limit."""
        status, message, details = self._refusal or (400, "the request is not valid HTTP/1.1", {})
        log.info("request refused by the server", status=status, message=message, client=_address(self.client))
        self._write_error(status, message, details)

    def _write_error(self, status: int, message: str, details: dict[str, Any]) -> None:
        correlation_id = uuid.uuid4().hex
        body = JSON_ENCODER.encode(error_body(ErrorCode.VALIDATION, message, correlation_id, details or None))
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"x-correlation-id: " + correlation_id.encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _address(client: tuple[str, int] | None) -> str | None:
    return None if client is None else f"{client[0]}:{client[1]}"
