"""`Breaker`: one named breaker as a decorator, an async context manager and `await breaker.call(fn, ...)`."""

from __future__ import annotations

import functools
import inspect
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar, cast

from breaker_client._admission import Route
from breaker_client._correlation import CorrelationScope, correlation_id
from breaker_client._errors import CircuitOpenError
from breaker_client._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from breaker_client._admission import Admission, Ticket
    from breaker_client._deadlines import Deadlines
    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy

__all__ = ["NO_FALLBACK", "Breaker"]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger()


class _NoFallback:
    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Final = _NoFallback()
"""No fallback: a refused or failed call raises."""

_ENTERED: ContextVar[tuple[tuple[Breaker, Ticket, float], ...]] = ContextVar("breaker_client_entered", default=())


class Breaker:
    """A named breaker with its retry policy, fallback and failure classification.

    A fallback is a value, or a callable (sync or async) that receives the exception and returns the value. It is
    used when the circuit refuses the call, or when the call fails (as `failure` judges) after its retries; an
    exception that is not a failure (a 404, a bug in the caller) is raised as it is.
    """

    def __init__(
        self,
        admission: Admission,
        name: str,
        *,
        retry: RetryPolicy,
        fallback: object,
        failure: FailurePolicy,
        deadlines: Deadlines,
    ) -> None:
        self._admission = admission
        self._deadlines = deadlines
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure

    @property
    def name(self) -> str:
        """The breaker's name on the service."""
        return self._name

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` under the breaker, with retries and the breaker's fallback."""
        return await self._run(functools.partial(fn, *args, **kwargs), self._fallback)

    def protect(
        self, *, fallback: object = NO_FALLBACK
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async function; `fallback` overrides the breaker's own."""
        chosen = self._fallback if fallback is NO_FALLBACK else fallback

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(fn)
            async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self._run(functools.partial(fn, *args, **kwargs), chosen)

            return protected

        return decorate

    async def __aenter__(self) -> Breaker:
        """Admit one call (no retry, no fallback: a block cannot be run twice), or raise `CircuitOpenError`."""
        ticket = self._admission.admit_fast(self._name) or await self._admission.admit(self._name)
        _ENTERED.set((*_ENTERED.get(), (self, ticket, time.perf_counter())))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        entered = _ENTERED.get()
        index = max(i for i, (breaker, _, _) in enumerate(entered) if breaker is self)
        _, ticket, started = entered[index]
        _ENTERED.set(entered[:index] + entered[index + 1 :])
        if exc is None or isinstance(exc, Exception):
            failed = exc is not None and self._failure.is_failure(exc)
            await self._admission.report(ticket, failed=failed, duration_ms=_ms_since(started))

    async def _run(self, call: Callable[[], Awaitable[T]], fallback: object) -> T:
        with CorrelationScope():
            try:
                return await self._retry.run(self._attempt, call, breaker=self._name)
            except Exception as exc:
                if fallback is NO_FALLBACK or not (isinstance(exc, CircuitOpenError) or self._failure.is_failure(exc)):
                    raise
                _log.info("breaker.fallback", breaker=self._name, error=repr(exc), correlation_id=correlation_id())
                return cast("T", await _fallback_value(fallback, exc))

    async def _attempt(self, call: Callable[[], Awaitable[T]]) -> T:
        admission = self._admission
        ticket = admission.admit_fast(self._name) or await admission.admit(self._name)
        started = time.perf_counter()
        try:
            with self._deadlines.limit(self._retry.timeout_s):
                result = await call()
        except Exception as exc:
            # A cancelled call reports nothing: its permit, if any, expires on the service.
            await admission.report(ticket, failed=self._failure.is_failure(exc), duration_ms=_ms_since(started))
            raise
        failed = self._failure.is_failed_result(result)
        if ticket.route is Route.FAST and not failed:
            admission.count_success(ticket, _ms_since(started))
        else:
            await admission.report(ticket, failed=failed, duration_ms=_ms_since(started))
        return result


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _fallback_value(fallback: object, exc: Exception) -> object:
    if not callable(fallback):
        return fallback
    value = fallback(exc)
    if inspect.isawaitable(value):
        value = await value
    return value
