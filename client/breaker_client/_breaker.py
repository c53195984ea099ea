"""`Breaker`: one named breaker as a decorator, an async context manager and `await breaker.call(fn, ...)`."""

from __future__ import annotations

import functools
import inspect
import time
import types
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from breaker_client._admission import Route
from breaker_client._correlation import CORRELATION_VAR as _CORRELATION
from breaker_client._correlation import correlation_id
from breaker_client._errors import CircuitOpenError
from breaker_client._fallback import NO_FALLBACK, fallback_result
from breaker_client._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from breaker_client._admission import Admission, Ticket
    from breaker_client._deadlines import Deadlines
    from breaker_client._failure import FailurePolicy
    from breaker_client._retry import RetryPolicy
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["NO_FALLBACK", "Breaker", "NotAwaitableError", "is_async_callable"]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger()

_ENTERED: ContextVar[tuple[tuple[Breaker, Ticket, float], ...]] = ContextVar("breaker_client_entered", default=())


class NotAwaitableError(TypeError):
    """A plain function given to the async client: raised before anything is admitted or reported."""


def is_async_callable(fn: object) -> bool:
    """A coroutine function, or an object whose `__call__` is one (a partial of either counts)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


class Breaker:
    """A named breaker with its retry policy, fallback and failure classification.

    `retry=None` uses the breaker's `retry` config on the service, re-read at each call (a `PUT` changes what a
    running client does), else `RetryPolicy()`. A fallback is a value, or a callable (sync or async) given the
    exception and, when it accepts them, the call's arguments: `fallback(exc, *args, **kwargs)`, else
    `fallback(exc)`. It is used when the circuit refuses the call, or when the call fails (as `failure` judges)
    after its retries; an exception that is not a failure (a 404, a bug in the caller) is raised as it is.
    `when_unknown` is the application's declaration for a breaker never seen while the service is away (None: the
    client's default; see `_local`).
    """

    def __init__(
        self,
        admission: Admission,
        name: str,
        *,
        retry: RetryPolicy | None,
        policy: Callable[[str], RetryPolicy],
        fallback: object,
        failure: FailurePolicy,
        deadlines: Deadlines,
        when_unknown: WhenUnknown | None = None,
    ) -> None:
        self._admission = admission
        self._when_unknown = when_unknown
        self._deadlines = deadlines
        self._name = name
        self._retry = retry
        self._policy = policy
        self._fallback = fallback
        self._failure = failure

    @property
    def name(self) -> str:
        """The breaker's name on the service."""
        return self._name

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` under the breaker, with retries and the breaker's fallback.

        `fn` must return an awaitable: a plain function's result raises `TypeError` and reports nothing."""
        return await self._run(fn, args, kwargs, self._fallback)

    def protect(
        self, *, fallback: object = NO_FALLBACK
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async function (a plain one raises `TypeError` here); `fallback` overrides the breaker's."""
        chosen = self._fallback if fallback is NO_FALLBACK else fallback

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            if not is_async_callable(fn):
                raise TypeError(
                    f"breaker {self._name!r}: protect() of the async client takes an async function, not {fn!r}; "
                    "use SyncBreakerClient for plain functions"
                )

            @functools.wraps(fn)
            async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self._run(fn, args, kwargs, chosen)

            return protected

        return decorate

    async def __aenter__(self) -> Breaker:
        """Admit one call (no retry, no fallback: a block cannot be run twice), or raise `CircuitOpenError`."""
        ticket = self._admission.admit_fast(self._name) or await self._admission.admit(self._name, self._when_unknown)
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

    async def _run(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any], fallback: object
    ) -> T:
        # The hot path, written out: on the fast path a call is one cache read, the call, and one success counted.
        admission = self._admission
        retry = self._retry or self._policy(self._name)
        token = _CORRELATION.set(_CORRELATION.get())  # a CorrelationScope: an id made in the call stays in it
        try:
            ticket = admission.admit_fast(self._name)
            if ticket is None:
                return await self._strict(retry, fn, args, kwargs, fallback)
            job = (functools.partial(fn, *args, **kwargs), retry.timeout_s)
            try:
                awaitable = self._awaitable_of(job[0])  # a plain function is refused here and reports nothing
            except NotAwaitableError:
                raise
            except Exception as exc:  # raised by `fn` before it gave an awaitable: as in `_attempt`, not reported
                return await self._then(retry, job, args, kwargs, fallback, failure=exc)
            started = time.perf_counter()
            try:
                with self._deadlines.limit(retry.timeout_s):
                    result = await awaitable
            except Exception as exc:
                await admission.report(ticket, failed=self._failure.is_failure(exc), duration_ms=_ms_since(started))
                return await self._then(retry, job, args, kwargs, fallback, failure=exc)
            if self._failure.is_failed_result(result):
                await admission.report(ticket, failed=True, duration_ms=_ms_since(started))
                return await self._then(retry, job, args, kwargs, fallback, first=result)
            admission.count_success(ticket, _ms_since(started))
            return result
        finally:
            _CORRELATION.reset(token)

    async def _strict(
        self,
        retry: RetryPolicy,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: object,
    ) -> T:
        job = (functools.partial(fn, *args, **kwargs), retry.timeout_s)
        try:
            return await retry.run(self._attempt, job, breaker=self._name)
        except Exception as exc:
            return cast("T", await self._fallback_for(exc, fallback, args, kwargs))

    async def _then(
        self,
        retry: RetryPolicy,
        job: tuple[Callable[[], Awaitable[T]], float | None],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: object,
        *,
        first: T | None = None,
        failure: Exception | None = None,
    ) -> T:
        try:
            return await retry.retry_after(self._attempt, job, breaker=self._name, first=first, failure=failure)
        except Exception as exc:
            return cast("T", await self._fallback_for(exc, fallback, args, kwargs))

    async def _fallback_for(
        self, exc: Exception, fallback: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> object:
        """The fallback's value for a call that ended with `exc`, or `exc` raised when there is none for it."""
        if (
            fallback is NO_FALLBACK
            or isinstance(exc, NotAwaitableError)
            or not (isinstance(exc, CircuitOpenError) or self._failure.is_failure(exc))
        ):
            raise exc
        _log.info("breaker.fallback", breaker=self._name, error=repr(exc), correlation_id=correlation_id())
        value = fallback_result(fallback, exc, args, kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _awaitable_of(self, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        awaitable = call()
        if type(awaitable) is not types.CoroutineType and not inspect.isawaitable(awaitable):
            raise NotAwaitableError(
                f"breaker {self._name!r}: the call returned {type(awaitable).__name__}, not an awaitable; "
                "use SyncBreakerClient for plain functions"
            )
        return awaitable

    async def _attempt(self, job: tuple[Callable[[], Awaitable[T]], float | None]) -> T:
        call, timeout_s = job
        # The awaitable is made first: a coroutine runs nothing until awaited, and a plain function is refused
        # before anything is admitted, so it reports nothing to the breaker the whole fleet shares.
        awaitable = self._awaitable_of(call)
        admission = self._admission
        try:
            ticket = admission.admit_fast(self._name) or await admission.admit(self._name, self._when_unknown)
        except BaseException:
            _discard(awaitable)
            raise
        started = time.perf_counter()
        try:
            with self._deadlines.limit(timeout_s):
                result = await awaitable
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


def _discard(awaitable: Awaitable[object]) -> None:
    if isinstance(awaitable, types.CoroutineType):
        awaitable.close()  # never started: no "never awaited" warning


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
