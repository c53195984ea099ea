"""`SyncBreaker`: one named breaker for plain code: `breaker.call(fn, ...)`, `@breaker.protect()`, `with breaker:`."""

from __future__ import annotations

import functools
import time
import types
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from breaker_client._admission import Route
from breaker_client._breaker import is_async_callable
from breaker_client._correlation import CORRELATION_VAR as _CORRELATION
from breaker_client._correlation import correlation_id
from breaker_client._errors import CircuitOpenError
from breaker_client._fallback import NO_FALLBACK, fallback_result
from breaker_client._logging import get_logger
from breaker_client._policies import configured_policy

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from breaker_client._admission import Ticket
    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy
    from breaker_client._sync_core import SyncCore
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["AsyncFunctionError", "SyncBreaker"]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger()

_Job = tuple["SyncCore", "Callable[..., Any]", tuple[Any, ...], dict[str, Any]]
_ENTERED: ContextVar[tuple[tuple[SyncBreaker, SyncCore, Ticket, float], ...]] = ContextVar(
    "breaker_client_sync_entered", default=()
)


class AsyncFunctionError(TypeError):
    """An async function given to the sync client; its coroutine is closed unrun and nothing is reported."""


class SyncBreaker:
    """A named breaker for plain functions, with its retry policy, fallback and failure classification.

    The rules are `Breaker`'s: `retry=None` follows the breaker's `retry` config on the service; a fallback is a
    value or a callable given the exception and, when it accepts them, the call's arguments. Retries wait in the
    calling thread; `RetryPolicy.timeout_s` is not applied (a thread cannot be interrupted): bound the call itself.
    `when_unknown` is `Breaker`'s too.
    """

    def __init__(
        self,
        core: Callable[[], SyncCore],
        name: str,
        *,
        retry: RetryPolicy | None,
        fallback: object,
        failure: FailurePolicy,
        when_unknown: WhenUnknown | None = None,
    ) -> None:
        self._when_unknown = when_unknown
        self._core = core  # the client's: this process's core, made afresh after a fork
        self._name = name
        self._retry = retry
        self._fallback = fallback
        self._failure = failure

    @property
    def name(self) -> str:
        """The breaker's name on the service."""
        return self._name

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` under the breaker, with retries and the breaker's fallback."""
        return self._run(fn, args, kwargs, self._fallback)

    def protect(self, *, fallback: object = NO_FALLBACK) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a plain function (an async one raises `TypeError` here); `fallback` overrides the breaker's."""
        chosen = self._fallback if fallback is NO_FALLBACK else fallback

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if is_async_callable(fn):
                raise TypeError(f"breaker {self._name!r}: SyncBreakerClient protects plain functions, not {fn!r}")

            @functools.wraps(fn)
            def protected(*args: P.args, **kwargs: P.kwargs) -> T:
                return self._run(fn, args, kwargs, chosen)

            return protected

        return decorate

    def __enter__(self) -> SyncBreaker:
        """Admit one call (no retry, no fallback: a block cannot be run twice), or raise `CircuitOpenError`."""
        core = self._core()
        ticket = core.admission.admit_fast(self._name) or core.admit(self._name, self._when_unknown)
        _ENTERED.set((*_ENTERED.get(), (self, core, ticket, time.perf_counter())))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        entered = _ENTERED.get()
        index = max(i for i, (breaker, _, _, _) in enumerate(entered) if breaker is self)
        _, core, ticket, started = entered[index]
        _ENTERED.set(entered[:index] + entered[index + 1 :])
        if exc is None or isinstance(exc, Exception):
            failed = exc is not None and self._failure.is_failure(exc)
            self._settle(core, ticket, failed, _ms_since(started))

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], fallback: object) -> T:
        # The hot path, written out: a call on the fast path is one cache read, the call, and one inbox append.
        core = self._core()
        token = _CORRELATION.set(_CORRELATION.get())  # a CorrelationScope: an id made in the call stays in it
        try:
            ticket = core.admission.admit_fast(self._name)
            if ticket is None:
                return self._strict(core, fn, args, kwargs, fallback)
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                core.report(ticket, failed=self._failure.is_failure(exc), duration_ms=_ms_since(started))
                return cast("T", self._retry_after_first(core, (core, fn, args, kwargs), fallback, failure=exc))
            if type(result) is types.CoroutineType:
                cast("types.CoroutineType[Any, Any, Any]", result).close()
                raise AsyncFunctionError(self._async_message(fn))
            if self._failure.is_failed_result(result):
                core.report(ticket, failed=True, duration_ms=_ms_since(started))
                return cast("T", self._retry_after_first(core, (core, fn, args, kwargs), fallback, first=result))
            core.inbox.add(ticket, (time.perf_counter() - started) * 1000)
            return result
        finally:
            _CORRELATION.reset(token)

    def _strict(
        self, core: SyncCore, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], fallback: object
    ) -> T:
        retry = self._retry or configured_policy(core.views, self._name)
        try:
            return cast("T", retry.run_sync(self._attempt, (core, fn, args, kwargs), breaker=self._name))
        except Exception as exc:
            return cast("T", self._fallback_for(exc, fallback, args, kwargs))

    def _retry_after_first(
        self, core: SyncCore, job: _Job, fallback: object, *, first: object = None, failure: Exception | None = None
    ) -> Any:
        retry = self._retry or configured_policy(core.views, self._name)
        try:
            return retry.retry_sync(self._attempt, job, breaker=self._name, first=first, failure=failure)
        except Exception as exc:
            return self._fallback_for(exc, fallback, job[2], job[3])

    def _fallback_for(self, exc: Exception, fallback: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """The fallback's value for a call that ended with `exc`, or `exc` raised when there is none for it."""
        if (
            fallback is NO_FALLBACK
            or isinstance(exc, AsyncFunctionError)
            or not (isinstance(exc, CircuitOpenError) or self._failure.is_failure(exc))
        ):
            raise exc
        _log.info("breaker.fallback", breaker=self._name, error=repr(exc), correlation_id=correlation_id())
        return fallback_result(fallback, exc, args, kwargs)

    def _async_message(self, fn: object) -> str:
        return f"breaker {self._name!r}: {fn!r} is async; use BreakerClient for async functions"

    def _attempt(self, job: _Job) -> Any:
        core, fn, args, kwargs = job
        ticket = core.admission.admit_fast(self._name) or core.admit(self._name, self._when_unknown)
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            # KeyboardInterrupt and the like report nothing: a permit, if any, expires on the service.
            core.report(ticket, failed=self._failure.is_failure(exc), duration_ms=_ms_since(started))
            raise
        if type(result) is types.CoroutineType:
            result.close()
            raise AsyncFunctionError(self._async_message(fn))
        self._settle(core, ticket, self._failure.is_failed_result(result), _ms_since(started))
        return result

    @staticmethod
    def _settle(core: SyncCore, ticket: Ticket, failed: bool, duration_ms: float) -> None:
        if ticket.route is Route.FAST and not failed:
            core.inbox.add(ticket, duration_ms)
        else:
            core.report(ticket, failed=failed, duration_ms=duration_ms)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
