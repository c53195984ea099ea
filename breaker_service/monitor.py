"""`HealthMonitor`: one replica's view of its dependencies' health and the fleet's degradation mode.

It reads the health of every config-file breaker (breaker state + cached probe) and of the store (a PING), derives
the mode (rules in `breaker_service.degradation`) and settles it in the status store, which publishes a `mode`
event when it changes. While running it keeps three background tasks: probe rounds every quarter probe interval,
a settle after each round, each `state`/`deleted` event of a declared breaker and at least every quarter interval
(which also catches a forced mode's end), and a listener on the replica's `EventHub` that drives those settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx
import structlog

from breaker_client.protocol.models import Snapshot, State
from breaker_service.degradation import (
    LIFT_REASON,
    Degradation,
    DegradationChange,
    DependencyDetail,
    Mode,
    ProbeResult,
    derive_mode,
)
from breaker_service.errors import ServiceError, StoreUnavailableError, UnknownBreakerError
from breaker_service.probes import USER_AGENT, Prober

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from breaker_service.config import ServiceConfig
    from breaker_service.event_hub import EventHub
    from breaker_service.store.breaker_base import BreakerStore
    from breaker_service.store.status_base import ModeRecord

STORE_KEY: Final = "redis"
"""The store's key among the dependencies, as in the contract's example, whichever store runs."""
PING_TIMEOUT_S: Final = 2.0
ROUNDS_PER_INTERVAL: Final = 4
_DELETED: Final = "deleted"
_UNREADABLE: Final = "unreadable"

log = structlog.get_logger("breaker_service.monitor")


@dataclass(frozen=True)
class HealthReport:
    """What one health check saw: each declared breaker (a Snapshot, deleted or unreadable), probes, the store."""

    breakers: dict[str, Snapshot | str]
    probes: dict[str, ProbeResult]
    store: ProbeResult

    def healthy(self, name: str) -> bool:
        """Not OPEN (forced or not; deleted counts as healthy, unreadable does not) and no failed last probe."""
        snapshot = self.breakers[name]
        if snapshot == _UNREADABLE or (isinstance(snapshot, Snapshot) and snapshot.effective_state is State.OPEN):
            return False
        probe = self.probes.get(name)
        return probe is None or probe.ok

    @property
    def unhealthy(self) -> list[str]:
        """The unhealthy declared dependencies, sorted."""
        return sorted(name for name in self.breakers if not self.healthy(name))

    def derived(self) -> tuple[Mode, str]:
        """The derived mode and its reason."""
        return derive_mode(self.unhealthy, len(self.breakers), store_reachable=self.store.ok)


class HealthMonitor:
    """Health checks, the mode, and the background work that keeps them current, for one replica."""

    def __init__(
        self, store: BreakerStore, config: ServiceConfig, hub: EventHub, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self._store = store
        self._hub = hub
        self._status = store.status_store()
        self._declared = sorted(config.breakers)
        targets = {name: b.probe_url for name, b in config.breakers.items() if b.probe_url is not None}
        self._http = http or httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        timing = config.probes
        self.prober = Prober(
            targets, self._status, http=self._http, interval_s=timing.probe_interval_s, timeout_s=timing.probe_timeout_s
        )
        self._tick_s = timing.probe_interval_s / ROUNDS_PER_INTERVAL
        self._dirty = asyncio.Event()
        self._record: ModeRecord | None = None
        self._outage: Degradation | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Settle once (so the mode exists before the first request), then probe, watch and settle in the background."""
        try:
            await self.refresh()
        except Exception as exc:
            log.error("degradation settle failed", exc_info=exc)
        tasks = [
            asyncio.create_task(self._probe_rounds(), name="health-probes"),
            asyncio.create_task(self._settle_rounds(), name="health-settle"),
            asyncio.create_task(self._watch(), name="health-watch"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            self._dirty.set()  # wakes a settle loop whose cancellation a callee swallowed (see _stop_requested)
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._http.aclose()

    async def report(self) -> HealthReport:
        """Read the health of every dependency now."""
        store, breakers, probes = await asyncio.gather(
            self._ping(), asyncio.gather(*(self._read(name) for name in self._declared)), self.prober.results()
        )
        return HealthReport(breakers=dict(zip(self._declared, breakers, strict=True)), probes=probes, store=store)

    async def refresh(self, report: HealthReport | None = None) -> Degradation:
        """The current mode: settled fleet-wide when the store answers, else this replica's own (see the rules)."""
        report = report or await self.report()
        derived, reason = report.derived()
        if report.store.ok:
            try:
                record = await self._status.settle(derived, reason)
            except StoreUnavailableError:
                derived, reason = derive_mode([], 0, store_reachable=False)
            else:
                self._remember(record)
                return record.state
        return self._outage_mode(reason)

    async def force(
        self, mode: Mode | None, *, reason: str | None, ttl_s: float | None, actor: str | None
    ) -> Degradation:
        """Force `mode` (None lifts the override) fleet-wide; 503 while the store is unreachable. Audited."""
        report = await self.report()
        if not report.store.ok:
            raise StoreUnavailableError("the store is unreachable: the degradation mode cannot be changed")
        derived, derived_reason = report.derived()
        reason = reason or LIFT_REASON
        record = await self._status.force(
            mode, reason=reason, actor=actor, ttl_s=ttl_s, derived=derived, derived_reason=derived_reason
        )
        # Logged by the request's own line (action, actor, forced, reason, ttl_s): an admin action is one INFO line.
        self._remember(record)
        return record.state

    async def last_change(self) -> DegradationChange | None:
        """The last admin change of the mode; None when there was none or the store cannot say."""
        try:
            return await self._status.last_change()
        except StoreUnavailableError:
            return None

    async def details(self, report: HealthReport) -> dict[str, DependencyDetail]:
        """Per dependency: health, effective state, force, last change and probe (the store's: this PING)."""
        changes = await asyncio.gather(*(self._last_change(report.breakers[name]) for name in self._declared))
        details: dict[str, DependencyDetail] = {}
        for name, last_change in zip(self._declared, changes, strict=True):
            snapshot = report.breakers[name]
            known = snapshot if isinstance(snapshot, Snapshot) else None
            details[name] = DependencyDetail(
                healthy=report.healthy(name),
                state=known.effective_state if known else None,
                forced=known.forced if known else None,
                last_change=last_change,
                probe=report.probes.get(name),
            )
        details[STORE_KEY] = DependencyDetail(
            healthy=report.store.ok, state=None, forced=None, last_change=None, probe=report.store
        )
        return details

    # -- internals ----------------------------------------------------------------------------------------------

    async def _ping(self) -> ProbeResult:
        started = time.perf_counter()
        error: str | None = None
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                if not await self._store.ping():
                    error = "the store does not answer PING"
        except TimeoutError:
            error = f"PING timed out after {PING_TIMEOUT_S:g}s"
        except ServiceError as exc:
            error = exc.message
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return ProbeResult(ok=error is None, latency_ms=latency_ms, error=error, at=time.time())

    async def _read(self, name: str) -> Snapshot | str:
        try:
            return await self._store.snapshot(name)
        except UnknownBreakerError:
            return _DELETED
        except ServiceError:
            return _UNREADABLE

    async def _last_change(self, snapshot: Snapshot | str) -> float | None:
        if not isinstance(snapshot, Snapshot):
            return None
        try:
            newest = await self._store.history(snapshot.name, limit=1)
        except ServiceError:
            newest = []
        return newest[0].at if newest else snapshot.opened_at

    def _remember(self, record: ModeRecord) -> None:
        """Keep the settled mode (for outages), and log each mode this replica sees change."""
        previous = self._record.state if self._record is not None else None
        state = record.state
        if previous is None or (previous.mode, previous.forced) != (state.mode, state.forced):
            log.info("degradation mode", mode=state.mode.value, reason=state.reason, forced=state.forced)
        self._record = record
        self._outage = None

    def _outage_mode(self, reason: str) -> Degradation:
        """While the store is unreachable: the forced mode last seen until its end (this clock), else READ_ONLY."""
        record = self._record
        lasting = record is not None and (record.forced_until is None or record.forced_until > time.time())
        if record is not None and record.state.forced and lasting:
            return record.state
        if self._outage is None:
            self._outage = Degradation(mode=Mode.READ_ONLY, reason=reason, since=time.time(), forced=False)
        return self._outage

    async def _probe_rounds(self) -> None:
        while not _stop_requested():
            try:
                await self.prober.round()
            except Exception as exc:
                log.error("probe round failed", exc_info=exc)
            self._dirty.set()
            if not _stop_requested():
                await asyncio.sleep(self._tick_s)

    async def _settle_rounds(self) -> None:
        while not _stop_requested():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_s):
                    await self._dirty.wait()
            self._dirty.clear()
            if _stop_requested():
                return
            try:
                await self.refresh()
            except Exception as exc:
                log.error("degradation settle failed", exc_info=exc)

    async def _watch(self) -> None:
        declared = set(self._declared)
        while not _stop_requested():
            # The replica's one subscription (the hub); a listener cut off (feed lost) listens again, and the
            # settle rounds cover what fell in between.
            with self._hub.listening() as listener:
                while (event := await listener.get()) is not None:
                    if event.kind in ("state", "deleted") and getattr(event.data, "name", None) in declared:
                        self._dirty.set()
            self._dirty.set()
            if not _stop_requested():
                await asyncio.sleep(self._tick_s)


def _stop_requested() -> bool:
    """Whether this task has been cancelled, even if a callee swallowed the CancelledError.

    redis-py may replace a CancelledError with its own error while it closes a connection (which the stores turn
    into `StoreUnavailableError`, which these loops survive on purpose); the cancel request still counts.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
