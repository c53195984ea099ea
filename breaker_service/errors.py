"""Errors the service raises, each carrying its ORC code; the app turns them into the contract's error body.

ServiceError
  ├ InvalidRequestError      ORC_001  malformed JSON, bad field, bad name (422, or 400 for non-JSON)
  ├ BreakerCapError          ORC_002  creating one more breaker than BREAKER_MAX_BREAKERS allows
  ├ QueueFullError           ORC_002  one more job than BREAKER_QUEUE_MAX_JOBS in a queue
  ├ WorkflowError            ORC_003  an operation not allowed in this state
  ├ StoreUnavailableError    ORC_005  the store cannot be reached for a write (wraps redis.RedisError)
  │   └ NotReplicatedError    ORC_005  an admin write applied but not confirmed by enough Redis replicas
  ├ UnauthenticatedError     ORC_007  no, malformed or unknown credentials
  ├ ForbiddenError           ORC_008  credentials without the needed role
  ├ UnknownBreakerError      ORC_009  no such breaker or resource
  └ BodyTooLargeError        ORC_010  body over BREAKER_MAX_BODY_BYTES
"""

from __future__ import annotations

from typing import Any, ClassVar

from breaker_client.protocol.catalogue import STATUS, ErrorCode


class ServiceError(Exception):
    """Base class of every error the service answers with the contract's error body."""

    code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, details: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.status = status if status is not None else STATUS[self.code]


class InvalidRequestError(ServiceError):
    """The request is malformed or a value is out of range."""

    code = ErrorCode.VALIDATION


class BreakerCapError(ServiceError):
    """Creating the breaker would exceed the configured cap."""

    code = ErrorCode.BUSINESS_RULE


class QueueFullError(ServiceError):
    """The queue holds its maximum of jobs."""

    code = ErrorCode.BUSINESS_RULE


class WorkflowError(ServiceError):
    """The operation is not allowed in the current state."""

    code = ErrorCode.WORKFLOW


class StoreUnavailableError(ServiceError):
    """The store cannot be reached."""

    code = ErrorCode.UNAVAILABLE


class NotReplicatedError(StoreUnavailableError):
    """An admin write is applied, but fewer Redis replicas than `BREAKER_ADMIN_MIN_REPLICAS` confirmed it in time."""


class UnauthenticatedError(ServiceError):
    """No, malformed or unknown credentials."""

    code = ErrorCode.UNAUTHENTICATED


class ForbiddenError(ServiceError):
    """The credentials lack the role the route needs."""

    code = ErrorCode.FORBIDDEN


class UnknownBreakerError(ServiceError):
    """No breaker (or other resource) of that name."""

    code = ErrorCode.NOT_FOUND


class BodyTooLargeError(ServiceError):
    """The request body is larger than the configured limit."""

    code = ErrorCode.TOO_LARGE
