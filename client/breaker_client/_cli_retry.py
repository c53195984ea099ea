"""`breakerctl`'s retry of an admin write whose outcome is unknown, under the write's one `Idempotency-Key`.

The service answers a resent write with the first answer and applies nothing twice (DESIGN.md v1.1), so a write is
sent again when nobody can tell whether it was applied: the connection failed or timed out, or the service answered
503 ORC_005 (its store was unreachable) without `details.applied: true`. A 409 ORC_003 about the key means the
first request with it is still being answered: wait, and ask again. Every other answer ends it: a 2xx, any other
4xx (a 422 for a key used on another request included), a 503 that says the write was applied.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from breaker_client._errors import ServiceError, ServiceUnavailableError, TransportError, WorkflowError
from breaker_client._transport import IDEMPOTENCY_HEADER

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["ATTEMPTS_DEFAULT", "ATTEMPTS_MAX", "in_doubt", "retrying"]

ATTEMPTS_DEFAULT: Final = 3
ATTEMPTS_MAX: Final = 10
# 1-2 s, then 2-3 s, ... up to 8 s: long enough for a write in flight to be answered (a store call gives up after
# 2 s by default), short enough for a person waiting at a prompt.
BACKOFF: Final = wait_exponential_jitter(multiplier=1.0, exp_base=2, max=8.0, jitter=1.0)


def outcome_unknown(exc: BaseException) -> bool:
    """The write may or may not have been applied: no answer, or the store was unreachable."""
    if isinstance(exc, TransportError):
        return True
    if not isinstance(exc, ServiceUnavailableError) or exc.status != 503:
        return False
    return not (isinstance(exc.details, dict) and exc.details.get("applied") is True)


def in_flight(exc: BaseException) -> bool:
    """The first request with this key is still being answered (409 ORC_003 naming the header)."""
    if not isinstance(exc, WorkflowError):
        return False
    return isinstance(exc.details, dict) and exc.details.get("header") == IDEMPOTENCY_HEADER


def in_doubt(exc: BaseException) -> bool:
    """Worth sending again with the same key; when the attempts run out, the outcome is still unknown."""
    return outcome_unknown(exc) or in_flight(exc)


def retrying(
    attempts: int,
    *,
    announce: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """The tenacity controller of one write: `attempts` in all; `announce` gets one line before each wait."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=BACKOFF,
        retry=retry_if_exception(in_doubt),
        before_sleep=_announcing(announce, attempts),
        sleep=sleep,
        reraise=True,
    )


def _announcing(announce: Callable[[str], None], attempts: int) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        attempt = f"attempt {state.attempt_number + 1} of {attempts}"
        announce(f"{_why(failure)}; retrying in {state.upcoming_sleep:.1f}s with the same key ({attempt})")

    return before_sleep


def _why(failure: BaseException | None) -> str:
    if isinstance(failure, ServiceError):
        return f"{failure.error_code} (HTTP {failure.status}): {failure.message}"
    return f"no answer: {failure}"
