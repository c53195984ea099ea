"""Which outcomes are worth another attempt, and how long the server asks to wait (`Retry-After`)."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime
from typing import Final

import httpx

from breaker_client._errors import CircuitOpenError
from breaker_client._errors import TransportError as ServiceTransportError
from breaker_client._responses import response_of, transient_errors

__all__ = ["is_retryable_exception", "is_retryable_status", "parse_retry_after", "retry_after_of"]

_RETRYABLE_EXCEPTIONS: Final = (
    TimeoutError,
    ConnectionError,
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    ServiceTransportError,
)


def is_retryable_status(status: int) -> bool:
    """5xx and 429 are worth another try; every other status is not."""
    return status >= 500 or status == 429


def is_retryable_exception(exc: BaseException) -> bool:
    """Timeouts, connection errors and 5xx/429 status errors; never an open circuit."""
    if isinstance(exc, CircuitOpenError):
        return False
    response = response_of(exc)
    if response is not None:
        return is_retryable_status(response.status_code)
    return isinstance(exc, (*_RETRYABLE_EXCEPTIONS, *transient_errors()))


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value, delay-seconds (fractions allowed) or an HTTP date."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_of(outcome: object) -> float | None:
    """The `Retry-After` of a response, or of the response inside a status error (`httpx.HTTPStatusError`)."""
    response = response_of(outcome)
    if response is None:
        return None
    header = response.headers.get("Retry-After")
    return None if header is None else parse_retry_after(header)
