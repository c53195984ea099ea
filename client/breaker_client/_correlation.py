"""The correlation id of the current task: sent as `X-Correlation-ID` to the service and to the dependency."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CORRELATION_HEADER",
    "CORRELATION_VAR",
    "CorrelationScope",
    "correlation_id",
    "current_correlation_id",
    "use_correlation_id",
]

CORRELATION_HEADER: Final = "X-Correlation-ID"

_CURRENT: ContextVar[str | None] = ContextVar("breaker_client_correlation_id", default=None)
CORRELATION_VAR: Final = _CURRENT
"""The variable itself, for a hot path that scopes it inline (`token = set(get())` ... `reset(token)`)."""


def current_correlation_id() -> str | None:
    """The id set in this context, if any; never generates one."""
    return _CURRENT.get()


def correlation_id() -> str:
    """The id of this context; one is generated and kept for the rest of the context when absent."""
    value = _CURRENT.get()
    if value is None:
        value = uuid.uuid4().hex
        _CURRENT.set(value)
    return value


@contextmanager
def use_correlation_id(value: str | None = None) -> Iterator[str]:
    """Set the correlation id (a fresh one when `value` is None) for the body of the `with` block."""
    value = value if value is not None else uuid.uuid4().hex
    token = _CURRENT.set(value)
    try:
        yield value
    finally:
        _CURRENT.reset(token)


class CorrelationScope:
    """`with CorrelationScope():` one call's scope: the caller's id if it has one, else an id generated the first
    time one is needed (`correlation_id()`); the caller's context is left as it was. Lazy, so a call that sends no
    request (the fast path) pays for no id."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _CURRENT.set(_CURRENT.get())

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._token)
