"""Request body limit, as pure ASGI: 413 ORC_010 before an oversized body is read whole."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers

from breaker_service.errors import BodyTooLargeError
from breaker_service.logs import current_correlation_id
from breaker_service.responses import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
