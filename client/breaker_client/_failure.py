"""Which outcomes of a protected call count as breaker failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from breaker_client._errors import CircuitOpenError
from breaker_client._responses import response_of, status_of

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FailurePolicy", "default_failure_status"]


def default_failure_status(status: int) -> bool:
    """5xx and 429 say the dependency is in trouble; other 4xx are the caller's problem."""
    return status >= 500 or status == 429


@dataclass(frozen=True, kw_only=True)
class FailurePolicy:
    """Classifies an exception or a result as a failure (counts against the breaker) or not.

    An exception is a failure when `predicate` says so, or, without a predicate, when it is one of `exceptions`
    and none of `ignore`. A status error (`httpx.HTTPStatusError`, `requests.HTTPError`) and a response result
    (`httpx.Response`, `requests.Response`) are judged by `status`.
    A call that is not a failure reports a success: the dependency answered.
    """

    exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore: tuple[type[BaseException], ...] = ()
    predicate: Callable[[BaseException], bool] | None = None
    status: Callable[[int], bool] = default_failure_status

    def is_failure(self, exc: BaseException) -> bool:
        """Whether a raised exception counts against the breaker."""
        if isinstance(exc, CircuitOpenError):
            return False
        if self.predicate is not None:
            return self.predicate(exc)
        response = response_of(exc)
        if response is not None:
            return self.status(response.status_code)
        return isinstance(exc, self.exceptions) and not isinstance(exc, self.ignore)

    def is_failed_result(self, result: object) -> bool:
        """Whether a returned value counts against the breaker: only a response with a failure status."""
        status = status_of(result)
        return status is not None and self.status(status)
