"""`ServiceApp`: the Starlette app, with acquire and record served by a short pure-ASGI path.

These two routes are most of a replica's traffic. On them the generic machinery costs more than the work: the
routing table walk, three middleware layers each wrapping `send`, Starlette's exception middlewares and the
`Response` call. `ServiceApp` matches their two paths itself and runs the very same endpoint functions (so auth,
the name check, body parsing and every input rule stay in one place) inside one layer that does what the stack
does for them:

- the correlation id: read, bound into the logs, echoed on the answer and put in every error body;
- the body limit (`BodyLimitMiddleware`, the same class the stack uses);
- the error contract: the app's own exception handlers answer, an exception none handles is a 500 ORC_005;
- the request latency histogram and the access-log policy (`logs.AccessLog`).

Every other request goes through the full stack, unchanged.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from breaker_service.auth import Role
from breaker_service.logs import AccessLog, begin_request, internal_error_response
from breaker_service.middleware import BodyLimitMiddleware
from breaker_service.routes.common import OPERATIONS

if TYPE_CHECKING:
    from prometheus_client import Histogram
    from starlette.responses import Response
    from starlette.types import Message, Receive, Scope, Send

    from breaker_service.context import AppContext

HOT_ROUTES: Final = ("/breakers/{name}/acquire", "/breakers/{name}/record")
_HOT_PATH: Final = re.compile(r"/breakers/([^/]+)/(acquire|record)")
_CORRELATION_HEADER: Final = b"x-correlation-id"

log = structlog.get_logger("breaker_service.http")


def is_admin_action(scope: Scope) -> bool:
    """Whether the request was routed to an admin endpoint (its access line is the audit trail's log side)."""
    found = OPERATIONS.get(scope.get("endpoint"))  # type: ignore[arg-type]
    return found is not None and found.role is Role.ADMIN


class ServiceApp(Starlette):
    """Starlette, plus the short path for POST acquire and record (module doc)."""

    def __init__(self, *, access_log: AccessLog, max_body_bytes: int, **options: Any) -> None:
        super().__init__(**options)
        self.access_log = access_log
        self._max_body_bytes = max_body_bytes
        self._hot: dict[str, Route] = {}
        for route in self.router.routes:
            if isinstance(route, Route) and route.path in HOT_ROUTES and "POST" in (route.methods or ()):
                self._hot[route.path.rpartition("/")[2]] = route
        self._latency: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = _HOT_PATH.fullmatch(scope["path"])
            if found is not None:
                route = self._hot.get(found.group(2))
                if route is not None:
                    await self._serve_hot(route, found.group(1), scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _serve_hot(self, route: Route, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        presented: str | None = None
        for key, value in scope["headers"]:
            if key == _CORRELATION_HEADER:
                presented = value.decode("latin-1")
                break
        correlation_id = begin_request(presented)
        echoed = (_CORRELATION_HEADER, correlation_id.encode())
        scope["app"] = self
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {"name": name}
        status = 500
        started_answer = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_answer
            if message["type"] == "http.response.start":
                status, started_answer = message["status"], True
                message["headers"] = [*message.get("headers", []), echoed]
            await send(message)

        async def answer(inner_scope: Scope, inner_receive: Receive, _: Send) -> None:
            request = Request(inner_scope, inner_receive)
            try:
                response = await route.endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            await _send_response(response, send_with_id)

        try:
            await BodyLimitMiddleware(answer, max_body_bytes=self._max_body_bytes)(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled exception", exc_info=exc)
            if not started_answer:
                await _send_response(internal_error_response(correlation_id), send_with_id)
        finally:
            self._observe(route.path, time.perf_counter() - started)
            self.access_log.finish(scope, status, started)

    def _handler_for(self, exc: Exception) -> Any:
        # As Starlette's ExceptionMiddleware looks one up: the nearest class in the exception's MRO.
        for cls in type(exc).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None

    def _observe(self, template: str, elapsed: float) -> None:
        child = self._latency.get(template)
        if child is None:
            context: AppContext = self.state.context
            child = self._latency[template] = context.metrics.latency.labels("POST", template)
        child.observe(elapsed)


async def _send_response(response: Response, send: Send) -> None:
    # What `Response.__call__` does for a body held in memory, without its background-task machinery.
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
