"""The store interface: every breaker operation the API needs, atomic per call.

Two implementations hold the same semantics (docs/semantics.md): `RedisStore` (Lua scripts, shared by every
replica) and `MemoryStore` (the pure-Python machine, one replica). `tests/test_conformance.py` runs one suite
against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

from breaker_client.protocol.models import BreakerConfig, ConfigPatch, Decision, Outcome, Snapshot, State, Transition
from breaker_service.errors import InvalidRequestError

if TYPE_CHECKING:
    import asyncio

    from breaker_service.events import StoreEvent
    from breaker_service.store.audit import AuditEntry
    from breaker_service.store.idempotency_base import IdempotencyStore
    from breaker_service.store.status_base import StatusStore

ConfigResolver = Callable[[str], BreakerConfig]
"""The config a breaker gets when it is created implicitly: its config-file override, else the defaults."""


def force_action(mode: State) -> str:
    """The audit trail's name for a force: the route's, as the request's log line has it."""
    return "force-open" if mode is State.OPEN else "force-close"


def patched(config: BreakerConfig, patch: ConfigPatch) -> BreakerConfig:
    """`config` with the PATCH fields merged in; `InvalidRequestError` (422 ORC_001) when it breaks a rule."""
    try:
        return patch.apply(config)
    except msgspec.ValidationError as exc:
        # The shape of any other body error (routes/common.py): the merged config as a whole breaks the rule.
        raise InvalidRequestError(str(exc), details={"location": "body", "path": "$"}) from exc


class BreakerStore(Protocol):
    """Breaker state, shared (Redis) or local (memory). Raises `breaker_service.errors.ServiceError` subclasses."""

    @property
    def kind(self) -> str:
        """`redis` or `memory`, for logs and health."""
        ...

    @property
    def degraded(self) -> bool:
        """True while answers come from local state because the shared store is unreachable."""
        ...

    async def start(self) -> None:
        """Connect and load what is needed (scripts); called once from the app's lifespan."""

    async def close(self) -> None:
        """Release connections and stop background tasks."""

    async def ping(self) -> bool:
        """Whether the store answers now."""
        ...

    async def declare(self, name: str, config: BreakerConfig) -> None:
        """Create the breaker with `config` unless it exists (config-file breakers, at start)."""

    async def names(self) -> list[str]:
        """Names of all breakers, sorted."""
        ...

    async def snapshot(self, name: str) -> Snapshot:
        """One breaker; `UnknownBreakerError` if it does not exist."""
        ...

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        """Every breaker (or those of `names` that exist), sorted by name."""
        ...

    async def configure(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str | None) -> Snapshot:
        """Create the breaker or replace its config; audited."""
        ...

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str | None) -> Snapshot:
        """Merge `patch` into the current config atomically; audited. `UnknownBreakerError` if absent,
        `InvalidRequestError` when the merged config breaks a rule (nothing changes)."""
        ...

    async def delete(self, name: str, *, actor: str | None, reason: str | None) -> None:
        """Remove the breaker and its history; `UnknownBreakerError` if absent."""

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        """Ask to make one call (`lease`: take part in fleet budgeting); creates an unknown breaker with its
        resolved config."""
        ...

    async def record(self, name: str, outcome: Outcome) -> Snapshot:
        """Report one call's (or `count` calls') outcome; creates an unknown breaker."""
        ...

    async def force(self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None) -> Snapshot:
        """Force OPEN or CLOSED; creates an unknown breaker."""
        ...

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot:
        """Fresh CLOSED, counts cleared, force lifted; `UnknownBreakerError` if absent."""
        ...

    async def history(self, name: str, *, limit: int = 100) -> list[Transition]:
        """Transitions, newest first; `UnknownBreakerError` if absent."""
        ...

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """Admin actions on breakers, newest first (every breaker, deleted ones included)."""
        ...

    async def window_totals(self, name: str, window_s: float) -> tuple[int, int, int]:
        """A rate-mode breaker's (calls, failures, slow calls) over its window now, for the metrics."""
        ...

    def status_store(self) -> StatusStore:
        """The service's own status (probe results, degradation mode), kept where this store keeps breakers."""
        ...

    def idempotency_store(self) -> IdempotencyStore:
        """The answers to admin writes kept under their Idempotency-Key, where this store keeps breakers."""
        ...

    def events(self, subscribed: asyncio.Event | None = None) -> AsyncIterator[StoreEvent]:
        """Every event published by any replica from now on, until the consumer stops iterating.

        A transition comes as its `state` event followed by a `breaker` event with the snapshot the operation left
        behind: state flows one way, from the writer, and nobody reads it back.

        `subscribed` is set once the subscription is live, so a snapshot read after it misses no change.
        """
        ...
