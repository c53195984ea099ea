"""`BreakerClient`: the connection to the breaker service, the event stream and the breakers made from it."""

from __future__ import annotations

import enum
import functools
import time
from typing import TYPE_CHECKING

from breaker_client._admission import Admission
from breaker_client._breaker import NO_FALLBACK, Breaker
from breaker_client._deadlines import Deadlines
from breaker_client._events import EventStream
from breaker_client._failure import FailurePolicy
from breaker_client._local import checked_when_unknown
from breaker_client._policies import configured_policy
from breaker_client._queue import WorkQueue
from breaker_client._service import ServiceConnection
from breaker_client._transitions import StateChange, TransitionWatch
from breaker_client._views import BreakerView, Views
from breaker_client.protocol.models import BreakerConfig, is_valid_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    import httpx

    from breaker_client._retry import RetryPolicy
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["BreakerClient"]


class _Lifecycle(enum.Enum):
    UNOPENED = 1  # made, not started
    OPENED = 2  # background tasks running
    CLOSED = 3  # closed for good


class BreakerClient:
    """Async client of the breaker service; use as `async with BreakerClient(url) as client:` or call `aclose()`.

    `base_url` may list several service replicas: requests move to the next when one is down. `timeout_s` bounds
    each request to the service, `report_timeout_s` the wait for a failure's report. `recheck_s` is how often a
    degraded client asks the service again (the event stream also reconnects by itself). `budget_wait_s` is how
    long a call waits for a slot while the fleet's failure budget is in flight (see docs/semantics.md, acquire
    rule 7) before it is refused. `default_config` seeds
    the local breaker of a breaker never seen. `when_unknown` is what such a breaker does while the service cannot
    be reached, unless its `client.breaker(...)` or its config on the service says otherwise: "allow" (a fresh
    local breaker decides) or "deny" (refused as if OPEN). `events=False` turns the stream off: every call then
    asks first.
    `clock` (monotonic seconds) measures local deadlines and drives the local breakers; tests replace it.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 2.0,
        report_timeout_s: float = 1.0,
        flush_interval_s: float = 0.1,
        recheck_s: float = 1.0,
        budget_wait_s: float = 1.0,
        events: bool = True,
        events_idle_timeout_s: float = 60.0,
        default_config: BreakerConfig | None = None,
        when_unknown: WhenUnknown = "allow",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        when_unknown = checked_when_unknown(when_unknown)
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        self._connection = ServiceConnection(bases, token=token, transport=transport, timeout_s=timeout_s)
        self._views = Views(clock)
        self._deadlines = Deadlines()
        self._admission = Admission(
            self._connection,
            self._views,
            default_config=default_config or BreakerConfig(),
            when_unknown=when_unknown,
            report_timeout_s=report_timeout_s,
            flush_interval_s=flush_interval_s,
            recheck_s=recheck_s,
            budget_wait_s=budget_wait_s,
        )
        self._events = (
            EventStream(
                self._connection,
                self._views,
                on_connect=self._admission.on_stream_connected,
                idle_timeout_s=events_idle_timeout_s,
            )
            if events
            else None
        )
        self._transitions = TransitionWatch(self._views)
        # LocalBreakers is made by Admission; its transitions are the only ones the views never see.
        self._admission._local.listener = self._transitions.local
        self._state = _Lifecycle.UNOPENED

    async def __aenter__(self) -> BreakerClient:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the event stream and the success flusher (done by `async with`)."""
        if self._state is not _Lifecycle.UNOPENED:
            raise RuntimeError(
                {
                    _Lifecycle.OPENED: "Cannot open a client more than once.",
                    _Lifecycle.CLOSED: "Cannot reopen a client once it has been closed.",
                }[self._state]
            )
        self._state = _Lifecycle.OPENED
        self._admission.start()
        if self._events is not None:
            self._events.start()
        self._transitions.start()

    async def aclose(self) -> None:
        """Send pending successes, stop background tasks and close connections."""
        if self._state is _Lifecycle.CLOSED:
            return
        self._state = _Lifecycle.CLOSED
        await self._transitions.stop()
        if self._events is not None:
            await self._events.stop()
        await self._admission.aclose()
        await self._connection.aclose()

    def breaker(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        fallback: object = NO_FALLBACK,
        failure: FailurePolicy | None = None,
        when_unknown: WhenUnknown | None = None,
    ) -> Breaker:
        """The breaker `name`, with its retry policy (None: the breaker's `retry` config on the service, else
        `RetryPolicy()`), fallback and failure rules. `when_unknown` ("allow" or "deny"; None: the client's) is what
        a call does while the service cannot be reached if this process never saw the breaker; a config read
        from the service wins over it."""
        if not is_valid_name(name):
            raise ValueError(f"invalid breaker name {name!r}")
        return Breaker(
            self._admission,
            name,
            retry=retry,
            policy=functools.partial(configured_policy, self._views),
            fallback=fallback,
            failure=failure or FailurePolicy(),
            deadlines=self._deadlines,
            when_unknown=None if when_unknown is None else checked_when_unknown(when_unknown),
        )

    def on_transition(self, callback: Callable[[StateChange], object]) -> None:
        """Call `callback(change)` (a function or an async function) for each change of a breaker's state this
        process sees: pushed by the service, read in its answers, or decided by a local breaker while the service
        is away (`change.local`). Call from the client's event loop."""
        self._transitions.add(callback)

    def queue(self, name: str) -> WorkQueue:
        """The deferred work queue `name` on the service (created by its first enqueue)."""
        if not is_valid_name(name):
            raise ValueError(f"invalid queue name {name!r}")
        return WorkQueue(self._connection, name)

    @property
    def degraded(self) -> bool:
        """True while the service cannot be reached and local breakers decide."""
        return self._admission.degraded

    @property
    def live(self) -> bool:
        """True while the event stream is connected and current."""
        return self._views.live

    @property
    def malformed_events(self) -> int:
        """Events from the stream skipped because they could not be read."""
        return 0 if self._events is None else self._events.malformed

    def view(self, name: str) -> BreakerView | None:
        """What this client knows of `name` now, None while unknown."""
        return self._views.get(name)

    async def flush(self) -> None:
        """Send the successes counted so far now, rather than on the next tick."""
        await self._admission.flush()

    async def wait_for(self, predicate: Callable[[BreakerClient], bool], *, timeout_s: float = 10.0) -> None:
        """Return once `predicate(client)` holds, re-checked after each change of knowledge; for tests and tools."""
        await self._views.wait_for(lambda: predicate(self), timeout_s)
