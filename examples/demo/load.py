"""The demo's load generator: callers of the orchestrator at a steady rate, counting what they got back.

Every request carries its own `X-Correlation-ID` (`load-<worker>-<n>`), so the fakes can show that the ids reached
the dependencies. A caller error is anything but a 200: an error status, a timeout, a refused connection.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import httpx
import msgspec

__all__ = ["LoadGenerator", "LoadResult"]

TENANTS: Final = 20
TEXTS: Final = ("Can I get a payment plan?", "I paid yesterday.", "When is my rent due?")
REQUEST_TIMEOUT_S: Final = 60.0


class _Answer(msgspec.Struct):
    degraded: list[str]


_ANSWER: Final = msgspec.json.Decoder(_Answer)


@dataclass
class LoadResult:
    """Counts so far; `latencies_ms` of answered requests."""

    requests: int = 0
    ok: int = 0
    degraded: int = 0
    degraded_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    correlation_ids: set[str] = field(default_factory=set)

    @property
    def caller_errors(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, q: int) -> float:
        """The q-th percentile latency (1..99), 0 before two answers."""
        if len(self.latencies_ms) < 2:
            return 0.0
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


class LoadGenerator:
    """`concurrency` callers sharing `rate_per_s` requests a second (fewer while answers are slow)."""

    def __init__(self, url: str, *, rate_per_s: float, concurrency: int) -> None:
        self._url = f"{url}/messages"
        self._interval_s = concurrency / rate_per_s
        self._concurrency = concurrency
        self.result = LoadResult()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; requests in flight then finish."""
        limits = httpx.Limits(max_connections=self._concurrency)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            await asyncio.gather(*(self._caller(http, stop, i) for i in range(self._concurrency)))

    async def _caller(self, http: httpx.AsyncClient, stop: asyncio.Event, index: int) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._interval_s * index / self._concurrency  # spread the callers' first requests
        n = 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - loop.time()))
            if stop.is_set():
                return
            due = max(due + self._interval_s, loop.time())
            n += 1
            await self._send(http, f"load-{index}-{n}", f"t-{(index * 7 + n) % TENANTS + 1}", TEXTS[n % len(TEXTS)])

    async def _send(self, http: httpx.AsyncClient, correlation_id: str, tenant_id: str, text: str) -> None:
        result = self.result
        result.requests += 1
        result.correlation_ids.add(correlation_id)
        started = asyncio.get_running_loop().time()
        try:
            response = await http.post(
                self._url, json={"tenant_id": tenant_id, "text": text}, headers={"X-Correlation-ID": correlation_id}
            )
        except httpx.HTTPError as exc:
            result.errors[type(exc).__name__] += 1
            return
        if response.status_code != 200:
            result.errors[f"HTTP {response.status_code}"] += 1
            return
        result.latencies_ms.append((asyncio.get_running_loop().time() - started) * 1000)
        result.ok += 1
        degraded = _ANSWER.decode(response.content).degraded
        if degraded:
            result.degraded += 1
            result.degraded_by.update(degraded)
