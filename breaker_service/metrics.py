"""Prometheus metrics, in a registry of the app's own (two apps in one process never share counters)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest

from breaker_service.logs import route_template

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from breaker_client.protocol.models import Decision, Outcome, Transition

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    """The service's counters and the request latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "breaker_decisions", "Acquire decisions answered.", ["breaker", "allowed"], registry=self.registry
        )
        self.outcomes = Counter(
            "breaker_outcomes", "Call outcomes recorded.", ["breaker", "outcome"], registry=self.registry
        )
        self.transitions = Counter(
            "breaker_transitions",
            "State transitions seen on the events channel (on Redis every replica sees every transition).",
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
        """Count one acquire answer."""
        self.decisions.labels(name, "true" if decision.allowed else "false").inc()

    def outcome(self, name: str, outcome: Outcome) -> None:
        """Count the calls one outcome report stands for."""
        self.outcomes.labels(name, outcome.outcome).inc(outcome.count)

    def transition(self, transition: Transition) -> None:
        """Count one transition."""
        self.transitions.labels(transition.name, transition.from_state, transition.to_state).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


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
