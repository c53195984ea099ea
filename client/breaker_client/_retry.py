"""Retry policy: which outcomes are retried, how long to wait, as one tenacity expression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from breaker_client._correlation import correlation_id
from breaker_client._logging import get_logger
from breaker_client._responses import describe_outcome, status_of
from breaker_client._retry_rules import is_retryable_exception, is_retryable_status, parse_retry_after, retry_after_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from breaker_client.protocol.models import RetryConfig

__all__ = ["RetryPolicy", "is_retryable_exception", "is_retryable_status", "parse_retry_after", "retry_after_of"]

T = TypeVar("T")
A = TypeVar("A")

_log = get_logger()


def _outcome_value(state: RetryCallState) -> object:
    if state.outcome is None:
        return None
    return state.outcome.exception() if state.outcome.failed else state.outcome.result()


class _RetryAfterFloor(wait_base):
    """The backoff, or the server's `Retry-After` when that is longer."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(self._backoff(retry_state), retry_after_of(_outcome_value(retry_state)) or 0.0)


def _last_outcome(retry_state: RetryCallState) -> Any:
    # Out of attempts: give back what the last attempt gave, a response (a 503, as is) or its exception.
    return retry_state.outcome.result() if retry_state.outcome is not None else None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter: waits `base_s * multiplier**n` (+ up to `base_s` jitter), capped at `max_s`.

    `attempts=1` means no retry; `timeout_s` bounds each attempt (None: unbounded). A `Retry-After` longer than
    the backoff is waited instead; one longer than `max_s` ends the retries.
    """

    attempts: int = 3
    base_s: float = 1.0
    multiplier: float = 2.0
    max_s: float = 30.0
    jitter: bool = True
    timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("base_s and max_s must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive or None")

    def is_retryable_result(self, result: object) -> bool:
        """A 5xx or 429 response, unless its `Retry-After` asks for longer than `max_s`."""
        status = status_of(result)
        if status is None or not is_retryable_status(status):
            return False
        retry_after = retry_after_of(result)
        return retry_after is None or retry_after <= self.max_s

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        """The policy of a breaker's `retry` config on the service (`timeout_s` keeps its default)."""
        return cls(
            attempts=config.attempts,
            base_s=config.base_s,
            multiplier=config.multiplier,
            max_s=config.max_s,
            jitter=config.jitter,
        )

    def retrying(self, *, breaker: str) -> AsyncRetrying:
        """The tenacity controller for one protected call."""
        return AsyncRetrying(**self._controller(breaker))

    def retrying_sync(self, *, breaker: str) -> Retrying:
        """The tenacity controller for one protected call of plain (blocking) code."""
        return Retrying(**self._controller(breaker))

    def _controller(self, breaker: str) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.attempts),
            "wait": _RetryAfterFloor(
                wait_exponential_jitter(
                    multiplier=self.base_s,
                    exp_base=self.multiplier,
                    max=self.max_s,
                    jitter=self.base_s if self.jitter else 0,
                )
            ),
            "retry": retry_if_exception(self._is_retryable_exception) | retry_if_result(self.is_retryable_result),
            "before_sleep": _log_retry(breaker),
            "retry_error_callback": _last_outcome,
            "reraise": True,
        }

    def _is_retryable_exception(self, exc: BaseException) -> bool:
        if not is_retryable_exception(exc):
            return False
        retry_after = retry_after_of(exc)
        return retry_after is None or retry_after <= self.max_s

    async def run(self, attempt: Callable[[A], Awaitable[T]], argument: A, *, breaker: str) -> T:
        """Run `attempt(argument)` until it succeeds, fails for good or runs out of attempts."""
        # The first attempt runs bare: most calls succeed at once, and a tenacity controller costs ~30 us a call.
        # Only an outcome worth retrying goes on to tenacity, replayed to it as attempt 1, so its waits, logs and
        # last-outcome rule are the same as if tenacity had run it.
        try:
            first = await attempt(argument)
        except Exception as exc:
            return await self.retry_after(attempt, argument, breaker=breaker, failure=exc)
        if self.attempts == 1 or not self.is_retryable_result(first):
            return first
        return await self.retry_after(attempt, argument, breaker=breaker, first=first)

    async def retry_after(
        self,
        attempt: Callable[[A], Awaitable[T]],
        argument: A,
        *,
        breaker: str,
        first: T | None = None,
        failure: Exception | None = None,
    ) -> T:
        """What follows a first attempt made by the caller, which raised `failure` or gave `first`: further
        attempts while they are worth it, or the first outcome as it is (returned, or raised)."""
        if self._first_outcome_stands(first, failure):
            if failure is not None:
                raise failure
            return cast("T", first)
        replayed = False

        async def again() -> T:
            nonlocal replayed
            if replayed:
                return await attempt(argument)
            replayed = True
            if failure is not None:
                raise failure
            return cast("T", first)

        return await self._run_retrying(again, breaker=breaker)

    async def _run_retrying(self, attempt: Callable[[], Awaitable[T]], *, breaker: str) -> T:
        result: T
        async for controller in self.retrying(breaker=breaker):
            with controller:
                result = await attempt()
            outcome = controller.retry_state.outcome
            if outcome is not None and not outcome.failed:
                controller.retry_state.set_result(result)
        return result

    def _first_outcome_stands(self, first: object, failure: Exception | None) -> bool:
        """Whether a first attempt's outcome is final: no retries configured, or not an outcome worth another try."""
        if self.attempts == 1:
            return True
        return not (self._is_retryable_exception(failure) if failure is not None else self.is_retryable_result(first))

    def run_sync(self, attempt: Callable[[A], T], argument: A, *, breaker: str) -> T:
        """`run` for plain code: the waits block the calling thread. `timeout_s` is not applied (a thread cannot
        be interrupted): bound the call itself, e.g. with the HTTP client's timeout."""
        try:
            first = attempt(argument)
        except Exception as exc:
            return self.retry_sync(attempt, argument, breaker=breaker, failure=exc)
        return self.retry_sync(attempt, argument, breaker=breaker, first=first)

    def retry_sync(
        self,
        attempt: Callable[[A], T],
        argument: A,
        *,
        breaker: str,
        first: T | None = None,
        failure: Exception | None = None,
    ) -> T:
        """What follows a first attempt made by the caller, which raised `failure` or gave `first`: further
        attempts while they are worth it, or the first outcome as it is (returned, or raised)."""
        if self._first_outcome_stands(first, failure):
            if failure is not None:
                raise failure
            return cast("T", first)
        replayed = False

        def again() -> T:
            nonlocal replayed
            if replayed:
                return attempt(argument)
            replayed = True
            if failure is not None:
                raise failure
            return cast("T", first)

        result: T
        for controller in self.retrying_sync(breaker=breaker):
            with controller:
                result = again()
            outcome = controller.retry_state.outcome
            if outcome is not None and not outcome.failed:
                controller.retry_state.set_result(result)
        return result


def _log_retry(breaker: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        value = _outcome_value(state)
        _log.warning(
            "breaker.retry",
            breaker=breaker,
            correlation_id=correlation_id(),
            attempt=state.attempt_number,
            delay_s=state.upcoming_sleep,
            outcome=describe_outcome(value),
        )

    return before_sleep
