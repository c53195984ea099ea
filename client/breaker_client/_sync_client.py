"""`SyncBreakerClient`: the breaker client for plain (threaded, blocking) code: Django, Flask, Celery, `requests`.

Same semantics and wire as `BreakerClient`, whose machinery it runs on a private event loop thread. Thread-safe.
Safe across `fork` (gunicorn `--preload`, Celery prefork): a client made before the fork starts afresh in the
child at its first use (its own loop thread, connections and event stream; the parent's are left alone).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from breaker_client._failure import FailurePolicy
from breaker_client._fallback import NO_FALLBACK
from breaker_client._local import checked_when_unknown
from breaker_client._sync_breaker import SyncBreaker
from breaker_client._sync_core import SyncCore
from breaker_client.protocol.models import BreakerConfig, is_valid_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    import httpx

    from breaker_client._retry import RetryPolicy
    from breaker_client._transitions import StateChange
    from breaker_client._views import BreakerView
    from breaker_client.protocol.models import WhenUnknown

__all__ = ["SyncBreakerClient"]

_CLIENTS: Final[weakref.WeakSet[SyncBreakerClient]] = weakref.WeakSet()
_ABANDONED: Final[list[SyncCore]] = []
"""Cores a fork left behind in a child: kept, never used or closed (their sockets are the parent's too)."""


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._forked()


def _close_all_at_exit() -> None:
    # Successes counted but not yet sent would be lost with the daemon thread; closing sends them (bounded by
    # the client's timeouts).
    for client in list(_CLIENTS):
        client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


class SyncBreakerClient:
    """Sync client of the breaker service; `with SyncBreakerClient(url) as client:` or call `close()`.

    Takes the options of `BreakerClient` (`transport` is an `httpx.AsyncBaseTransport`, used by the process that
    made the client; a child after `fork` uses a fresh default one). It starts at once: the event stream is
    followed on a background thread.
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
        self._bases = [base_url] if isinstance(base_url, str) else list(base_url)
        self._options: dict[str, Any] = {
            "token": token,
            "timeout_s": timeout_s,
            "report_timeout_s": report_timeout_s,
            "flush_interval_s": flush_interval_s,
            "recheck_s": recheck_s,
            "budget_wait_s": budget_wait_s,
            "events": events,
            "events_idle_timeout_s": events_idle_timeout_s,
            "default_config": default_config,
            "when_unknown": checked_when_unknown(when_unknown),
            "clock": clock,
        }
        self._transport = transport
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[StateChange], object]] = []
        self._closed = False
        self._core: SyncCore | None = SyncCore(self._bases, self._options | {"transport": transport})
        _CLIENTS.add(self)

    def __enter__(self) -> SyncBreakerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send pending successes, stop the background thread and close connections."""
        with self._lock:
            core, self._core, self._closed = self._core, None, True
        if core is not None:
            core.close()

    def breaker(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        fallback: object = NO_FALLBACK,
        failure: FailurePolicy | None = None,
        when_unknown: WhenUnknown | None = None,
    ) -> SyncBreaker:
        """The breaker `name`, with its retry policy (None: the breaker's `retry` config on the service, else
        `RetryPolicy()`), fallback, failure rules and `when_unknown` (see `BreakerClient.breaker`)."""
        if not is_valid_name(name):
            raise ValueError(f"invalid breaker name {name!r}")
        return SyncBreaker(
            self.core,
            name,
            retry=retry,
            fallback=fallback,
            failure=failure or FailurePolicy(),
            when_unknown=None if when_unknown is None else checked_when_unknown(when_unknown),
        )

    def on_transition(self, callback: Callable[[StateChange], object]) -> None:
        """Call `callback(change)` for each change of a breaker's state this process sees (see
        `BreakerClient.on_transition`). It runs on the client's background thread: keep it short, and hand work
        that calls a breaker to another thread (a strict call from there raises `RuntimeError`, it would wait for
        itself). An async callback runs on that thread's event loop."""
        with self._lock:
            self._callbacks.append(callback)
        self.core().on_transition(callback)

    @property
    def degraded(self) -> bool:
        """True while the service cannot be reached and local breakers decide."""
        return self.core().admission.degraded

    @property
    def live(self) -> bool:
        """True while the event stream is connected and current."""
        return self.core().views.live

    def view(self, name: str) -> BreakerView | None:
        """What this client knows of `name` now, None while unknown."""
        return self.core().views.get(name)

    def flush(self) -> None:
        """Send the successes counted so far now, rather than on the next tick."""
        self.core().flush()

    def wait_for(self, predicate: Callable[[SyncBreakerClient], bool], *, timeout_s: float = 10.0) -> None:
        """Return once `predicate(client)` holds, re-checked after each change of knowledge; for tests and tools."""
        self.core().wait_for(lambda: predicate(self), timeout_s)

    def core(self) -> SyncCore:
        """This process's core, started here after a fork."""
        core = self._core
        if core is not None:
            return core
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            if self._core is None:
                # A transport given to the parent holds the parent's pooled connections: not carried over.
                self._core = SyncCore(self._bases, self._options)
                for callback in self._callbacks:
                    self._core.on_transition(callback)
            return self._core

    def _forked(self) -> None:
        # In the child, right after fork: the loop thread does not exist here. Start afresh at the next use.
        self._lock = threading.Lock()
        if self._core is not None:
            _ABANDONED.append(self._core)
            self._core = None
