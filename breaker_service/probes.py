"""Active probes: each config-file breaker with a `probe_url` is probed once per `probe_interval_s`, fleet-wide.

Each replica runs rounds (from `breaker_service.monitor`, every quarter interval). In a round, for each URL, the
replica asks the status store for the right to probe it (a lease of one interval: SET NX PX on Redis); only the
replica that gets it probes (httpx GET, `probe_timeout_s`, a 2xx answer passes, redirects are not followed) and
caches the result for `CACHE_INTERVALS` intervals, where every replica reads it. So N replicas probe a URL about
once per interval together, not N times.

While the store is unreachable a replica probes on its own, at most once per interval, and keeps those results
in memory until the store answers again. A probe never raises: every failure is a result with an `error`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import httpx
import structlog

import breaker_service
from breaker_service.degradation import ProbeResult
from breaker_service.errors import StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from breaker_service.store.status_base import StatusStore

CACHE_INTERVALS: Final = 3
USER_AGENT: Final = f"breaker-service-probe/{breaker_service.__version__}"
ERROR_MAX_CHARS: Final = 500

log = structlog.get_logger("breaker_service.probes")


async def probe(http: httpx.AsyncClient, url: str, *, timeout_s: float) -> ProbeResult:
    """GET `url` once: ok on a 2xx answer within `timeout_s`; never raises."""
    started = time.perf_counter()
    error: str | None
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.get(url, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        error = f"timed out after {timeout_s:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:
        # A probe must never take the service down, whatever the URL or the client does.
        error = repr(exc)
    else:
        error = None if response.is_success else f"HTTP {response.status_code}"
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return ProbeResult(ok=error is None, latency_ms=latency_ms, error=error and error[:ERROR_MAX_CHARS], at=time.time())


class Prober:
    """Probes `targets` (breaker name -> URL) for one replica, sharing claims and results through `status`."""

    def __init__(
        self,
        targets: Mapping[str, str],
        status: StatusStore,
        *,
        http: httpx.AsyncClient,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._targets = dict(targets)
        self._status = status
        self._http = http
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._own: dict[str, ProbeResult] = {}
        """This replica's latest result per target: its log of changes, and its answers while the store is away."""
        self._own_at: dict[str, float] = {}

    @property
    def targets(self) -> Mapping[str, str]:
        """Breaker name -> probe URL."""
        return self._targets

    async def round(self) -> None:
        """Probe every target whose lease this replica gets (all at once); never raises but on cancellation."""
        await asyncio.gather(*(self._maybe_probe(name, url) for name, url in self._targets.items()))

    async def results(self) -> dict[str, ProbeResult]:
        """The latest result per target: the shared cache, or this replica's own while the store is unreachable."""
        try:
            return await self._status.probes(list(self._targets))
        except StoreUnavailableError:
            return dict(self._own)

    async def _maybe_probe(self, name: str, url: str) -> None:
        shared = True
        try:
            claimed = await self._status.claim_probe(name, self._interval_s)
        except StoreUnavailableError:
            shared = False
            last = self._own_at.get(name)
            claimed = last is None or time.monotonic() - last >= self._interval_s
        if not claimed:
            return
        self._own_at[name] = time.monotonic()
        result = await probe(self._http, url, timeout_s=self._timeout_s)
        previous = self._own.get(name)
        self._own[name] = result
        if previous is None or previous.ok != result.ok:
            level = log.info if result.ok else log.warning
            level("probe", breaker=name, ok=result.ok, latency_ms=result.latency_ms, error=result.error, shared=shared)
        if shared:
            try:
                await self._status.save_probe(name, result, self._interval_s * CACHE_INTERVALS)
            except StoreUnavailableError as exc:
                log.info("probe result kept locally: the store is unreachable", breaker=name, error=exc.message)
