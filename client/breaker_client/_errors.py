"""Every error the client raises, one hierarchy mirroring the ORC catalogue.

ClientError
  ├ TransportError                 the breaker service could not be reached (connect, timeout, broken stream)
  ├ CircuitOpenError        ORC_005  a call refused by the breaker; carries `retry_after_s`; never retried
  └ ServiceError                   the service answered with an error (its body, or only a status)
      ├ ValidationError         ORC_001  400 / 422
      ├ BusinessRuleError       ORC_002  409, e.g. the breaker cap
      ├ WorkflowError           ORC_003  409
      ├ ExternalServiceError    ORC_004  502
      ├ ServiceUnavailableError ORC_005  503
      ├ ExternalTimeoutError    ORC_006  504
      ├ AuthenticationError     ORC_007  401
      ├ ForbiddenError          ORC_008  403
      ├ NotFoundError           ORC_009  404
      └ PayloadTooLargeError    ORC_010  413

Foreign exceptions (httpx) are converted in one place, `_service.ServiceConnection.send`, with `raise ... from exc`.
The protected dependency's own exceptions are never converted: they reach the caller as they are.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import msgspec

from breaker_client.protocol.catalogue import STATUS, ErrorCode
from breaker_client.protocol.models import ErrorBody

__all__ = [
    "AuthenticationError",
    "BusinessRuleError",
    "CircuitOpenError",
    "ClientError",
    "ExternalServiceError",
    "ExternalTimeoutError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServiceError",
    "ServiceUnavailableError",
    "TransportError",
    "ValidationError",
    "WorkflowError",
    "error_from_response",
]

_ERROR_DECODER: Final = msgspec.json.Decoder(ErrorBody)


class ClientError(Exception):
    """Base class of every exception raised by `breaker_client`."""


class TransportError(ClientError):
    """The breaker service could not be reached, or the connection broke mid-answer."""


class CircuitOpenError(ClientError):
    """The breaker refused the call; try again after `retry_after_s` seconds (None: unknown).

    `degraded` is True when the refusal was decided without the shared state: by this client's local breaker
    while the service could not be reached (a breaker never seen whose `when_unknown` is "deny", too), or by a
    degraded replica."""

    code: ClassVar[ErrorCode] = ErrorCode.UNAVAILABLE
    status: ClassVar[int] = STATUS[ErrorCode.UNAVAILABLE]

    def __init__(self, name: str, retry_after_s: float | None, *, degraded: bool = False) -> None:
        after = "" if retry_after_s is None else f"; retry after {retry_after_s:.3f}s"
        local = " (decided without the shared state)" if degraded else ""
        super().__init__(f"circuit {name!r} is open{local}{after}")
        self.name = name
        self.retry_after_s = retry_after_s
        self.degraded = degraded


class ServiceError(ClientError):
    """The breaker service answered with an error; `code` is None when its body was not the contract's."""

    code: ClassVar[ErrorCode | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        correlation_id: str | None = None,
        details: Any = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.correlation_id = correlation_id
        self.details = details
        self.error_code = error_code if error_code is not None else (None if self.code is None else str(self.code))


class ValidationError(ServiceError):
    """ORC_001: malformed JSON, a bad field or a bad name."""

    code = ErrorCode.VALIDATION


class BusinessRuleError(ServiceError):
    """ORC_002: a business rule refused the request, e.g. the breaker cap."""

    code = ErrorCode.BUSINESS_RULE


class WorkflowError(ServiceError):
    """ORC_003: the operation is not allowed in this state."""

    code = ErrorCode.WORKFLOW


class ExternalServiceError(ServiceError):
    """ORC_004: an external service answered with an error."""

    code = ErrorCode.EXTERNAL_ERROR


class ServiceUnavailableError(ServiceError):
    """ORC_005: the service cannot serve the request now (its store is down for a write)."""

    code = ErrorCode.UNAVAILABLE


class ExternalTimeoutError(ServiceError):
    """ORC_006: an external service timed out."""

    code = ErrorCode.EXTERNAL_TIMEOUT


class AuthenticationError(ServiceError):
    """ORC_007: no, malformed or unknown credentials."""

    code = ErrorCode.UNAUTHENTICATED


class ForbiddenError(ServiceError):
    """ORC_008: the credentials lack the needed role."""

    code = ErrorCode.FORBIDDEN


class NotFoundError(ServiceError):
    """ORC_009: no such breaker or resource."""

    code = ErrorCode.NOT_FOUND


class PayloadTooLargeError(ServiceError):
    """ORC_010: the request body is too large."""

    code = ErrorCode.TOO_LARGE


_BY_CODE: Final[dict[str, type[ServiceError]]] = {
    str(cls.code): cls
    for cls in (
        ValidationError,
        BusinessRuleError,
        WorkflowError,
        ExternalServiceError,
        ServiceUnavailableError,
        ExternalTimeoutError,
        AuthenticationError,
        ForbiddenError,
        NotFoundError,
        PayloadTooLargeError,
    )
}
_BY_STATUS: Final[dict[int, type[ServiceError]]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: ValidationError,
    502: ExternalServiceError,
    503: ServiceUnavailableError,
    504: ExternalTimeoutError,
}


def error_from_response(status: int, body: bytes) -> ServiceError:
    """The exception for an error answer: by the body's ORC code, else by status (a proxy's HTML page, say)."""
    try:
        detail = _ERROR_DECODER.decode(body).error
    except msgspec.DecodeError:
        cls = _BY_STATUS.get(status, ServiceError)
        return cls(f"breaker service answered {status}", status=status)
    cls = _BY_CODE.get(detail.code) or _BY_STATUS.get(status, ServiceError)
    return cls(
        detail.message,
        status=status,
        correlation_id=detail.correlation_id,
        details=detail.details,
        error_code=detail.code,
    )
