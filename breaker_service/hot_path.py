"""`ServiceApp`: the Starlette app, with the ordinary acquire and record requests served by a short pure-ASGI path.

These two routes are most of a replica's traffic, and on them the generic machinery cost more than the work
(profiled: the routing table walk, three middleware layers each wrapping `send`, Starlette's exception layers,
`Request` and `Response` objects, the access line). The short path takes a request only when it is plainly
well-formed, judged from what it is sure of:

- POST to `/breakers/{name}/acquire` or `/record` with a whole-match name and no query string, a Content-Length
  within the body limit and no Transfer-Encoding; a body declared `application/json` (acquire may have none);
- a token the client role accepts (or none while client routes are open);
- a body that decodes into the route's model (`{}` or nothing for acquire, an `Outcome` for record).

Anything else, and any doubt, goes through the full stack, which answers it as it answers every request: the
short path never writes an error of its own about the request. The body it has read is handed over as it came.
Once taken, a request runs what the endpoints in `routes/breakers.py` run (`acquired` and `recorded`: the store
call, the metrics, the denial log) and answers the same bytes. Errors of the store are answered by the app's own
exception handlers, so the contract's error body, correlation id included, is the same on both paths. The request
latency histogram and the access-log policy (`logs.AccessLog`) see every request of either path.
`tests/test_hot_path.py` holds the two paths together.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from breaker_client.protocol.models import JSON_ENCODER, AcquireRequest, Outcome, is_valid_name
from breaker_service.auth import Role
from breaker_service.logs import AccessLog, begin_request, internal_error_response
from breaker_service.routes.breakers import acquired, recorded
from breaker_service.routes.common import OPERATIONS

if TYPE_CHECKING:
    from prometheus_client import Histogram
    from starlette.responses import Response
    from starlette.types import Message, Receive, Scope, Send

    from breaker_service.context import AppContext

ACQUIRE_ROUTE: Final = "/breakers/{name}/acquire"
RECORD_ROUTE: Final = "/breakers/{name}/record"
_HOT_PATH: Final = re.compile(r"/breakers/([^/]+)/(acquire|record)")
_ACQUIRE: Final = msgspec.json.Decoder(AcquireRequest)
_OUTCOME: Final = msgspec.json.Decoder(Outcome)
_JSON_HEADER: Final = (b"content-type", b"application/json")
_JSON_MEDIA_TYPE: Final = "application/json"

log = structlog.get_logger("breaker_service.http")


def is_admin_action(scope: Scope) -> bool:
    """Whether the request was routed to an admin endpoint (its access line is the audit trail's log side)."""
    found = OPERATIONS.get(scope.get("endpoint"))  # type: ignore[arg-type]
    return found is not None and found.role is Role.ADMIN


class _Head(msgspec.Struct):
    """What the short path reads from the request head, in one pass over the headers."""

    length: int | None = None
    chunked: bool = False
    content_type: str | None = None
    authorization: str | None = None
    correlation_id: str | None = None


def _read_head(scope: Scope) -> _Head:
    head = _Head()
    for key, value in scope["headers"]:
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            head.length = int(text) if text.isdigit() else -1
        elif key == b"content-type":
            head.content_type = value.decode("latin-1")
        elif key == b"authorization":
            head.authorization = value.decode("latin-1")
        elif key == b"x-correlation-id":
            head.correlation_id = value.decode("latin-1")
        elif key == b"transfer-encoding":
            head.chunked = True
    return head


class ServiceApp(Starlette):
    """Starlette, plus the short path for plain acquire and record requests (module doc)."""

    def __init__(self, *, access_log: AccessLog, max_body_bytes: int, **options: Any) -> None:
        super().__init__(**options)
        self.access_log = access_log
        self._max_body_bytes = max_body_bytes
        self._routes: dict[str, Route] = {}
        for route in self.router.routes:
            if not isinstance(route, Route) or "POST" not in (route.methods or ()):
                continue
            if route.path in (ACQUIRE_ROUTE, RECORD_ROUTE):
                self._routes[route.path.rpartition("/")[2]] = route
        self._latency: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = _HOT_PATH.fullmatch(scope["path"])
            if found is not None and found.group(2) in self._routes:
                await self._short_path(found.group(2), found.group(1), scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _short_path(self, operation: str, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        ctx: AppContext = self.state.context
        head = _read_head(scope)
        length = head.length
        if (
            length is None
            or scope.get("query_string")
            or not 0 <= length <= self._max_body_bytes
            or head.chunked
            or (length and (head.content_type or "").partition(";")[0].strip().lower() != _JSON_MEDIA_TYPE)
            or not is_valid_name(name)
        ):
            await super().__call__(scope, receive, send)
            return
        try:
            actor = ctx.auth.authorize(head.authorization, Role.CLIENT)
        except Exception:
            await super().__call__(scope, receive, send)
            return
        body = b""
        if length:
            body = await _read_body(receive)
        try:
            parsed = _OUTCOME.decode(body) if operation == "record" else _ACQUIRE.decode(body or b"{}")
        except Exception:
            await super().__call__(scope, _replay(body, receive), send)
            return
        if actor is None:  # anonymous (open client routes): nothing to bind, as on the full stack
            correlation_id = begin_request(head.correlation_id, breaker=name)
        else:
            correlation_id = begin_request(head.correlation_id, breaker=name, actor=actor)
        route = self._routes[operation]
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {"name": name}
        status = 500
        try:
            if isinstance(parsed, Outcome):
                encoded = JSON_ENCODER.encode(await recorded(ctx, name, parsed))
            else:
                encoded = JSON_ENCODER.encode(await acquired(ctx, name, parsed))
            status = 200
            await _send_json(send, 200, encoded, correlation_id)
        except Exception as exc:
            response = await self._error_response(exc, scope, receive, correlation_id)
            status = response.status_code
            await _send_json(send, status, bytes(response.body), correlation_id, response.raw_headers)
        finally:
            self._observe(route.path, time.perf_counter() - started)
            self.access_log.finish(scope, status, started)

    async def _error_response(self, exc: Exception, scope: Scope, receive: Receive, correlation_id: str) -> Response:
        """The app's own exception handler's answer (as Starlette's ExceptionMiddleware finds it: the nearest
        class in the exception's MRO), or a 500 for an exception no handler takes."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response: Response = await handler(Request(scope, receive), exc)
                return response
        log.error("unhandled exception", exc_info=exc)
        return internal_error_response(correlation_id)

    def _observe(self, template: str, elapsed: float) -> None:
        child = self._latency.get(template)
        if child is None:
            ctx: AppContext = self.state.context
            child = self._latency[template] = ctx.metrics.latency.labels("POST", template)
        child.observe(elapsed)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; what arrived decodes or not, like any other short body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then whatever the server says next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _send_json(
    send: Send, status: int, body: bytes, correlation_id: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    if headers is None:
        headers = [(b"content-length", str(len(body)).encode()), _JSON_HEADER]
    headers = [*headers, (b"x-correlation-id", correlation_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
