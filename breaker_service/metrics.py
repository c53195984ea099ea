"""Prometheus metrics, in a registry of the app's own (two apps in one process never share counters).

Two kinds, so that Prometheus can aggregate a fleet of replicas correctly:

- **Read from the store at scrape time, the same on every replica** (aggregate with `max by (breaker)`):
  `breaker_state{breaker,state}` (1 for the effective state, 0 for the others), `breaker_consecutive_failures`,
  `breaker_window_failure_rate` and `breaker_window_slow_call_rate` for rate-mode breakers, and
  `breaker_degradation_mode{mode}` (1 for the fleet's mode). `breaker_store_up` is this replica's reach of the store.
  While the store is unreachable the breaker gauges show this replica's local view (`breaker_store_up` is 0 then).
- **Counters of what this replica did or was told** (aggregate with `sum`: the fleet's totals):
  `breaker_calls_total{breaker,kind}` (kind: success, failure, slow (a success or failure at or above the breaker's
  `slow_call_ms`), rejected (refusals clients reported, and acquires this replica denied)),
  `breaker_call_duration_seconds` (the `duration_ms` of reported outcomes), `breaker_decisions_total`,
  `breaker_transitions_total` (the transitions this replica's own store calls made: each transition is counted by
  exactly one replica), and the HTTP latency histogram. Plus prometheus_client's process, platform and GC collectors.

A replica of several worker processes (`BREAKER_WORKERS`, serving.py) is one replica to Prometheus: its workers
keep their counters and histograms in prometheus_client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`, set by the
parent before it starts them), and a scrape answered by any worker reports their sums. The process collector then
describes the worker that answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Final

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from breaker_client.protocol.models import State
from breaker_service.degradation import Mode
from breaker_service.errors import ServiceError
from breaker_service.logs import route_template

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric
    from starlette.types import ASGIApp, Receive, Scope, Send

    from breaker_client.protocol.models import Decision, Outcome, Snapshot
    from breaker_service.degradation import Degradation
    from breaker_service.monitor import HealthMonitor
    from breaker_service.store.breaker_base import BreakerStore

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
SCRAPE_READ_TIMEOUT_S: Final = 5.0
WINDOW_READS_IN_FLIGHT: Final = 32
CALL_DURATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MULTIPROCESS_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own variable: where a replica's worker processes keep their counters (read at its import)."""


class Metrics:
    """The replica's counters and histograms; `scrape` adds the gauges read from the store."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        runtime = [ProcessCollector(registry=self.registry), PlatformCollector(registry=self.registry)]
        runtime.append(GCCollector(registry=self.registry))
        # The exposition: this registry, or, across worker processes, their summed files plus this worker's runtime.
        self._exposed = self.registry
        directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
        if directory:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=directory)  # type: ignore[no-untyped-call]
            for collector in runtime:
                self._exposed.register(collector)
        self.decisions = Counter(
            "breaker_decisions",
            "Acquire decisions this replica answered.",
            ["breaker", "allowed"],
            registry=self.registry,
        )
        self.calls = Counter(
            "breaker_calls",
            "Calls reported to this replica, by kind: success, failure, slow, rejected (refused by a client, or an "
            "acquire this replica denied). Sum over replicas for the fleet.",
            ["breaker", "kind"],
            registry=self.registry,
        )
        self.call_duration = Histogram(
            "breaker_call_duration_seconds",
            "Duration of the protected calls, from the duration_ms of outcomes reported to this replica.",
            ["breaker"],
            buckets=CALL_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.transitions = Counter(
            "breaker_transitions",
            "State transitions this replica's own store calls made (each transition counted by one replica: sum "
            "over replicas for the fleet).",
            ["breaker", "from_state", "to_state"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "breaker_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=self.registry,
        )

    def decision(self, name: str, decision: Decision) -> None:
        """Count one acquire answer; a denial is a rejected call."""
        self.decisions.labels(name, "true" if decision.allowed else "false").inc()
        if not decision.allowed:
            self.calls.labels(name, "rejected").inc()

    def outcome(self, name: str, outcome: Outcome, snapshot: Snapshot) -> None:
        """Count the calls one outcome report stands for (`snapshot`: the breaker after it, for its config)."""
        self.calls.labels(name, outcome.outcome).inc(outcome.count)
        if outcome.duration_ms is None:
            return
        # One observation per report: a batch's duration_ms stands for its calls as one sample.
        self.call_duration.labels(name).observe(outcome.duration_ms / 1000)
        slow_ms = snapshot.config.slow_call_ms
        if outcome.outcome in ("success", "failure") and slow_ms is not None and outcome.duration_ms >= slow_ms:
            self.calls.labels(name, "slow").inc(outcome.count)

    def transition(self, name: str, from_state: State, to_state: State) -> None:
        """Count one transition this replica's store call made."""
        self.transitions.labels(name, from_state, to_state).inc()

    async def scrape(self, store: BreakerStore, monitor: HealthMonitor | None) -> bytes:
        """The Prometheus text exposition: this replica's metrics, then the gauges read from the store now."""
        reading = await _read_fleet(store, monitor)
        for snapshot in reading.snapshots:
            # Trips start at 0, not absent: increase() cannot see the first step of a series it never saw at 0,
            # and the flapping alert counts trips.
            for from_state in (State.CLOSED, State.HALF_OPEN):
                self.transitions.labels(snapshot.name, from_state, State.OPEN)
        return generate_latest(self._exposed) + generate_latest(_FleetCollector(reading))


class _FleetReading:
    """What one scrape read from the store."""

    def __init__(
        self, store_up: bool, snapshots: list[Snapshot], rates: dict[str, tuple[float, float]], mode: Degradation | None
    ) -> None:
        self.store_up = store_up
        self.snapshots = snapshots
        self.rates = rates
        self.mode = mode


async def _read_fleet(store: BreakerStore, monitor: HealthMonitor | None) -> _FleetReading:
    async def ping() -> bool:
        try:
            return await store.ping()
        except ServiceError:
            return False

    async def snapshots() -> list[Snapshot]:
        try:
            return await store.snapshots()
        except ServiceError:
            return []

    async def mode() -> Degradation | None:
        try:
            return await monitor.refresh() if monitor is not None else None
        except ServiceError:
            return None

    try:
        async with asyncio.timeout(SCRAPE_READ_TIMEOUT_S):
            up, found, degradation = await asyncio.gather(ping(), snapshots(), mode())
            rates = await _window_rates(store, [s for s in found if s.config.rate_mode])
    except TimeoutError:
        # A store too slow to read is as good as unreachable for an alert; the replica's own counters still go out.
        return _FleetReading(False, [], {}, None)
    return _FleetReading(up and not store.degraded, found, rates, degradation)


async def _window_rates(store: BreakerStore, snapshots: list[Snapshot]) -> dict[str, tuple[float, float]]:
    """(failure rate, slow-call rate) over the window, per rate-mode breaker; a few reads in flight at once."""

    async def rate(snapshot: Snapshot) -> tuple[str, tuple[float, float]] | None:
        window_s = snapshot.config.window_s
        if window_s is None:
            return None
        try:
            calls, failures, slow = await store.window_totals(snapshot.name, window_s)
        except ServiceError:
            return None
        return snapshot.name, ((failures / calls, slow / calls) if calls else (0.0, 0.0))

    rates: dict[str, tuple[float, float]] = {}
    for start in range(0, len(snapshots), WINDOW_READS_IN_FLIGHT):
        batch = await asyncio.gather(*(rate(s) for s in snapshots[start : start + WINDOW_READS_IN_FLIGHT]))
        rates.update(found for found in batch if found is not None)
    return rates


class _FleetCollector:
    """The gauges of one scrape, from a reading taken just before (prometheus_client collectors are synchronous)."""

    def __init__(self, reading: _FleetReading) -> None:
        self._reading = reading

    def collect(self) -> Iterator[Metric]:
        reading = self._reading
        up = GaugeMetricFamily("breaker_store_up", "1 while this replica reaches the shared store, else 0.")
        up.add_metric([], 1.0 if reading.store_up else 0.0)
        yield up
        state = GaugeMetricFamily(
            "breaker_state",
            "1 for the breaker's effective state (OPEN while forced open), 0 for the others; read from the store, "
            "the same on every replica.",
            labels=["breaker", "state"],
        )
        failures = GaugeMetricFamily(
            "breaker_consecutive_failures", "Failures in a row, read from the store.", labels=["breaker"]
        )
        forced = GaugeMetricFamily(
            "breaker_forced", "1 while an admin force holds the breaker, else 0.", labels=["breaker"]
        )
        for snapshot in reading.snapshots:
            for value in State:
                state.add_metric([snapshot.name, value.value], 1.0 if snapshot.effective_state is value else 0.0)
            failures.add_metric([snapshot.name], float(snapshot.consecutive_failures))
            forced.add_metric([snapshot.name], 0.0 if snapshot.forced is None else 1.0)
        yield from (state, failures, forced)
        failure_rate = GaugeMetricFamily(
            "breaker_window_failure_rate", "Failures / calls over a rate-mode breaker's window.", labels=["breaker"]
        )
        slow_rate = GaugeMetricFamily(
            "breaker_window_slow_call_rate", "Slow calls / calls over a rate-mode breaker's window.", labels=["breaker"]
        )
        for name, (failed, slow) in sorted(reading.rates.items()):
            failure_rate.add_metric([name], failed)
            slow_rate.add_metric([name], slow)
        yield from (failure_rate, slow_rate)
        if reading.mode is not None:
            mode = GaugeMetricFamily(
                "breaker_degradation_mode", "1 for the fleet's degradation mode, 0 for the others.", labels=["mode"]
            )
            for each in Mode:
                mode.add_metric([each.value], 1.0 if reading.mode.mode is each else 0.0)
            yield mode
            forced_mode = GaugeMetricFamily("breaker_degradation_forced", "1 while an admin forces the mode.")
            forced_mode.add_metric([], 1.0 if reading.mode.forced else 0.0)
            yield forced_mode


class LatencyMiddleware:
    """Observes each HTTP request's duration under its route template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(scope["method"], route_template(scope)).observe(elapsed)
