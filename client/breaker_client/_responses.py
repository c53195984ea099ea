"""HTTP responses and errors of the libraries the client protects: httpx always, `requests` once its adapter loads.

Retry and failure rules judge a response by its status and `Retry-After`, whichever library made it; the
`requests` adapter registers its types here, so the core never imports `requests`.
"""

from __future__ import annotations

from typing import Protocol, cast

import httpx

__all__ = ["HTTPResponse", "describe_outcome", "register", "response_of", "status_of", "transient_errors"]


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


class HTTPResponse(Protocol):
    """What the rules read of a response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> _Headers: ...


class _Known:
    responses: tuple[type, ...] = (httpx.Response,)
    status_errors: tuple[type[BaseException], ...] = (httpx.HTTPStatusError,)
    transient: tuple[type[BaseException], ...] = ()


def register(
    *,
    response: type,
    status_error: type[BaseException],
    transient: tuple[type[BaseException], ...],
) -> None:
    """Teach the rules another library: its response type, its status error (with `.response`), and its
    connection and timeout errors (retried, and failures)."""
    _Known.responses = (*_Known.responses, response)
    _Known.status_errors = (*_Known.status_errors, status_error)
    _Known.transient = (*_Known.transient, *transient)


def transient_errors() -> tuple[type[BaseException], ...]:
    """The registered libraries' connection and timeout errors."""
    return _Known.transient


def response_of(value: object) -> HTTPResponse | None:
    """The response a value is, or carries (a status error's), else None."""
    if isinstance(value, _Known.responses):
        return cast("HTTPResponse", value)
    if isinstance(value, _Known.status_errors):
        inner = getattr(value, "response", None)
        if isinstance(inner, _Known.responses):
            return cast("HTTPResponse", inner)
    return None


def status_of(result: object) -> int | None:
    """The status of a result that is a response, else None (a status error is not a result)."""
    if isinstance(result, _Known.responses):
        return cast("HTTPResponse", result).status_code
    return None


def describe_outcome(value: object) -> str:
    """One field for a log line, whatever the outcome: `HTTP 503` for a response, `repr(exc)` for an exception."""
    if isinstance(value, BaseException):
        return repr(value)
    status = status_of(value)
    return f"HTTP {status}" if status is not None else type(value).__name__
