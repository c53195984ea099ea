"""What the demo reads and switches over HTTP: breaker snapshots and histories (the documented API), the outbox's
counts, the orchestrator's and the fakes' counters; the fakes' modes; the SRE's force-open (admin API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from examples.fake_dependencies.models import Mode, ModeChange, Stats
from examples.orchestrator.stats import OrchestratorStats

if TYPE_CHECKING:
    import httpx

__all__ = ["BreakerState", "Observer", "OutboxCounts", "Transition"]

_ORCHESTRATOR: Final = msgspec.json.Decoder(OrchestratorStats)
_FAKES: Final = msgspec.json.Decoder(Stats)
_ANY: Final = msgspec.json.Decoder(dict[str, Any])
OUTBOX: Final = "sms_outbox"


@dataclass(frozen=True)
class BreakerState:
    """A breaker's effective state (forced or not) and generation."""

    name: str
    state: str
    forced: str | None
    generation: int


@dataclass(frozen=True)
class Transition:
    """One history entry."""

    name: str
    source: str
    target: str
    at: float
    reason: str | None
    actor: str | None
    generation: int


@dataclass(frozen=True)
class OutboxCounts:
    ready: int = 0
    pending: int = 0
    dead: int = 0

    @property
    def waiting(self) -> int:
        return self.ready + self.pending


def _effective(snapshot: dict[str, Any]) -> BreakerState:
    # Tolerant of both protocols: v1 has `forced` beside the machine's `state`; v1.1 has `force` {"mode", ...}
    # and an effective `state`.
    forced = snapshot.get("forced")
    force = snapshot.get("force")
    if isinstance(force, dict):
        forced = force.get("mode")
    forced = forced if forced in ("OPEN", "CLOSED") else None
    state = forced or str(snapshot["state"])
    return BreakerState(str(snapshot["name"]), state, forced, int(snapshot["generation"]))


class Observer:
    """Reads and switches over one `httpx.AsyncClient`; `service_url` is any replica (they share the state)."""

    def __init__(
        self, http: httpx.AsyncClient, *, service_url: str, orchestrator_url: str, fakes_url: str, admin_token: str
    ) -> None:
        self._http = http
        self._service = service_url
        self._orchestrator = orchestrator_url
        self._fakes = fakes_url
        self._admin = {"Authorization": f"Bearer {admin_token}"}

    async def breaker(self, name: str) -> BreakerState:
        response = await self._http.get(f"{self._service}/breakers/{name}")
        response.raise_for_status()
        return _effective(_ANY.decode(response.content))

    async def history(self, name: str) -> list[Transition]:
        """Transitions of `name`, oldest first."""
        response = await self._http.get(f"{self._service}/breakers/{name}/history")
        response.raise_for_status()
        entries = _ANY.decode(response.content).get("transitions", [])
        return [
            Transition(
                name=name,
                source=str(entry.get("from")),
                target=str(entry.get("to")),
                at=float(entry.get("at", 0.0)),
                reason=entry.get("reason"),
                actor=entry.get("actor"),
                generation=int(entry.get("generation", 0)),
            )
            for entry in reversed(entries)
        ]

    async def outbox(self) -> OutboxCounts:
        response = await self._http.get(f"{self._service}/queues/{OUTBOX}")
        if response.status_code == 404:  # never used: nothing was queued
            return OutboxCounts()
        response.raise_for_status()
        counts = _ANY.decode(response.content)
        return OutboxCounts(int(counts["ready"]), int(counts["pending"]), int(counts["dead"]))

    async def orchestrator(self) -> OrchestratorStats:
        response = await self._http.get(f"{self._orchestrator}/stats")
        response.raise_for_status()
        return _ORCHESTRATOR.decode(response.content)

    async def fakes(self) -> Stats:
        response = await self._http.get(f"{self._fakes}/_admin/stats")
        response.raise_for_status()
        return _FAKES.decode(response.content)

    async def set_mode(self, dependency: str, change: ModeChange) -> None:
        response = await self._http.post(
            f"{self._fakes}/_admin/{dependency}/mode",
            content=msgspec.json.encode(change),
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()

    async def heal(self, dependency: str) -> None:
        await self.set_mode(dependency, ModeChange(mode=Mode.HEALTHY))

    async def force_open(self, name: str, *, reason: str, ttl_s: float) -> None:
        """The SRE's action, through the admin API (audited with the token's name and the reason)."""
        response = await self._http.post(
            f"{self._service}/breakers/{name}/force-open", json={"reason": reason, "ttl_s": ttl_s}, headers=self._admin
        )
        response.raise_for_status()
