"""`ProtectedHttp`: one dependency's HTTP calls through its breaker, with the seed's retry policy, counted.

The breaker decides *when* the fallback applies (refused by an open circuit, or failed after the retries); the
caller decides *what* it is: `call` answers the decoded JSON, or `Fell` carrying the reason, and each service
(services.py) turns a `Fell` into its seed fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from breaker_client import CORRELATION_HEADER, CircuitOpenError, correlation_id

if TYPE_CHECKING:
    import httpx

    from breaker_client import Breaker
    from examples.orchestrator.stats import DependencyCounts

__all__ = ["Fell", "ProtectedHttp"]

_log = structlog.get_logger("orchestrator")


@dataclass(frozen=True)
class Fell:
    """The call did not give an answer: `refused` by the circuit (no request sent), or failed after retries."""

    error: Exception

    @property
    def refused(self) -> bool:
        return isinstance(self.error, CircuitOpenError)


class ProtectedHttp:
    """Requests to `base_url` (the dependency) through `breaker`; each attempt carries the correlation id."""

    def __init__(self, breaker: Breaker, http: httpx.AsyncClient, base_url: str, counts: DependencyCounts) -> None:
        self._breaker = breaker
        self._http = http
        self._base_url = base_url
        self.counts = counts
        self._fallible = breaker.protect(fallback=self._fell)(self.send)

    @property
    def name(self) -> str:
        return self._breaker.name

    @property
    def breaker(self) -> Breaker:
        return self._breaker

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """The answer's JSON, or `Fell` when the breaker's fallback applies (other errors are raised)."""
        self.counts.calls += 1
        result = await self._fallible(method, path, body)
        if isinstance(result, Fell):
            self.counts.fallbacks += 1
            self.counts.refused += result.refused
            _log.warning("dependency.fallback", dependency=self.name, refused=result.refused, error=repr(result.error))
        return result

    async def send(self, method: str, path: str, body: object = None) -> Any:
        """One attempt, unprotected: the JSON of a 2xx answer, `httpx.HTTPStatusError` otherwise."""
        self.counts.attempts += 1
        response = await self._http.request(
            method, self._base_url + path, json=body, headers={CORRELATION_HEADER: correlation_id()}
        )
        response.raise_for_status()
        return response.json()

    @staticmethod
    def _fell(exc: Exception) -> Fell:
        return Fell(exc)
