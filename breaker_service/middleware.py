"""Request body rules, as pure ASGI: 413 ORC_010 before an oversized body is read whole; 415 ORC_001 for a body
that is not declared JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.datastructures import Headers

from breaker_service.errors import BodyTooLargeError, InvalidRequestError
from breaker_service.logs import current_correlation_id
from breaker_service.responses import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPE: Final = "application/json"
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware:
    """Refuse a declared Content-Length over the limit up front; count the bytes of a chunked body as they come."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = error_response(self._too_large(), current_correlation_id(), headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised into whoever reads the body; the app's error handler answers 413.
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> BodyTooLargeError:
        return BodyTooLargeError(
            f"the request body is larger than {self.max_body_bytes} bytes",
            details={"max_body_bytes": self.max_body_bytes},
        )


class JsonBodyMiddleware:
    """A POST, PUT or PATCH that carries a body must declare it `application/json` (parameters such as `charset`
    allowed), else 415 ORC_001 before any route runs: no cross-site "simple" request (a form or `text/plain` POST
    from any web page) reaches a route, whether or not that route reads its body. A request without a body (no
    Content-Length, or 0, and no Transfer-Encoding) needs no Content-Type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = Headers(scope=scope)
            has_body = headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers
            declared = headers.get("content-type")
            media_type = (declared or "").partition(";")[0].strip().lower()
            if has_body and media_type != JSON_MEDIA_TYPE:
                error = InvalidRequestError(
                    f"the body must be {JSON_MEDIA_TYPE}, not {declared or 'undeclared'}",
                    status=415,
                    details={"content_type": declared, "expected": JSON_MEDIA_TYPE},
                )
                await error_response(error, current_correlation_id())(scope, receive, send)
                return
        await self.app(scope, receive, send)
