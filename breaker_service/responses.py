"""JSON answers encoded by msgspec, and the contract's error body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from starlette.responses import Response

from breaker_client.protocol.catalogue import ErrorCode
from breaker_client.protocol.models import JSON_ENCODER, ErrorBody, ErrorDetail

if TYPE_CHECKING:
    from collections.abc import Mapping

    from breaker_service.errors import ServiceError

Content = msgspec.Struct | dict[str, bool]


class MsgspecResponse(Response):
    """A JSON response whose content is a wire Struct (or a flat name -> bool map, for health)."""

    media_type = "application/json"

    def render(self, content: Content) -> bytes:
        return JSON_ENCODER.encode(content)


def error_body(code: str, message: str, correlation_id: str | None, details: Any = None) -> ErrorBody:
    """`{"error": {"code", "message", "correlation_id", "details"}}`."""
    return ErrorBody(error=ErrorDetail(code=code, message=message, correlation_id=correlation_id, details=details))


def error_response(
    error: ServiceError, correlation_id: str | None, *, headers: Mapping[str, str] | None = None
) -> MsgspecResponse:
    """The answer for a `ServiceError`, with its own status (and the challenge RFC 6750 asks for with a 401)."""
    body = error_body(error.code, error.message, correlation_id, error.details)
    if error.code is ErrorCode.UNAUTHENTICATED:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return MsgspecResponse(body, status_code=error.status, headers=headers)
