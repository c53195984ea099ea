"""Degradation modes: what the orchestrator fleet should do, derived from dependency health unless an admin forces one.

The dependencies are the breakers declared in the config file plus the store (`redis` in `/health/dependencies`).
A declared dependency is healthy while its breaker is not OPEN (forced or not; a deleted one counts as healthy)
and, where it has a probe URL, its last probe passed (no probe result yet, or none for three probe intervals,
leaves the breaker alone to decide). The derived mode is the first rule that holds:

| mode | when | meaning for callers (the seed's) |
|---|---|---|
| READ_ONLY | this replica cannot reach the store | reads continue from local state; admin writes answer 503 |
| OFFLINE | the store answers, and every declared dependency is unhealthy (at least one declared) | queue all work |
| PARTIAL | the store answers, and some declared dependencies are unhealthy | core work continues |
| NORMAL | the store answers, and every declared dependency is healthy (or none is declared) | all is well |

EMERGENCY is never derived: only an admin sets it (`PUT /degradation`). A forced mode (any of the five) wins over the
derived one until it is lifted (`{"mode": null}`) or its `ttl_s` runs out; then the derived mode applies again.

READ_ONLY wins over OFFLINE: while the store is unreachable this replica sees only its own local breaker state, so
it does not claim that the whole fleet's dependencies are down. READ_ONLY is this replica's own view: it cannot be
shared or published while the store is down. A forced mode the replica last saw still applies during the outage,
until its end by the replica's clock.

Fleet-wide, the mode lives in the store: each replica settles the mode it derives there, atomically, and the one
whose settle changes the mode object (mode, reason or forced) publishes a `mode` event with the new object on the
events channel, so `GET /events` on every replica carries it once. `since` is when the mode (or its forced flag)
last changed, in store time. Replicas settle on every breaker `state` or `deleted` event of a declared breaker,
after every probe round, at least every quarter probe interval, and on every `GET /degradation`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from msgspec import Struct

# msgspec reads the Structs' annotations at runtime, so the types they name are imported at runtime.
from breaker_client.protocol.models import PositiveSeconds, Reason, State  # noqa: TC001

if TYPE_CHECKING:
    from collections.abc import Sequence

LIFT_REASON: Final = "override lifted"
"""The recorded reason of a `{"mode": null}` that gives none."""


class Mode(enum.StrEnum):
    """A degradation mode; wire values are the contract's."""

    NORMAL = "NORMAL"
    PARTIAL = "PARTIAL"
    READ_ONLY = "READ_ONLY"
    OFFLINE = "OFFLINE"
    EMERGENCY = "EMERGENCY"


class Degradation(Struct, frozen=True, kw_only=True):
    """`GET /degradation`, the answer of `PUT /degradation`, and the data of an SSE `mode` event."""

    mode: Mode
    reason: str
    since: float
    forced: bool


class DegradationRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`PUT /degradation`: force `mode` (for `ttl_s` seconds, or until lifted), or lift the override with null.

    Forcing needs a `reason`; lifting may give one (recorded as "override lifted" when it does not) and takes no ttl.
    """

    mode: Mode | None
    reason: Reason | None = None
    ttl_s: PositiveSeconds | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.reason is None:
            raise ValueError("forcing a mode needs a reason")
        if self.mode is None and self.ttl_s is not None:
            raise ValueError("ttl_s needs a mode: lifting the override takes none")


class DegradationChange(Struct, frozen=True, kw_only=True):
    """The last admin change of the mode: what was forced (null: lifted), by whom, why, when, for how long."""

    mode: Mode | None
    reason: str
    actor: str | None
    at: float
    ttl_s: float | None


class ProbeResult(Struct, frozen=True, kw_only=True):
    """One active probe of a dependency's probe URL: passed (2xx) or not, how long it took, why it failed."""

    ok: bool
    latency_ms: float
    error: str | None
    at: float


class DependencyDetail(Struct, frozen=True, kw_only=True):
    """One dependency in `GET /health/dependencies?detail=true`.

    For a breaker: its effective `state` and `forced`, `last_change` (its newest history entry, else `opened_at`)
    and its cached `probe`. For the store (`redis`): this replica's PING as the probe, and no state.
    """

    healthy: bool
    state: State | None
    forced: State | None
    last_change: float | None
    probe: ProbeResult | None


class DependenciesDetail(Struct, frozen=True, kw_only=True):
    """`GET /health/dependencies?detail=true`."""

    dependencies: dict[str, DependencyDetail]
    degradation: Degradation
    degradation_change: DegradationChange | None


def derive_mode(unhealthy: Sequence[str], declared: int, *, store_reachable: bool) -> tuple[Mode, str]:
    """The derived mode and its reason, from the unhealthy declared dependencies (sorted) and the store's reach."""
    if not store_reachable:
        return Mode.READ_ONLY, "the store is unreachable: answers come from local state, admin writes are refused"
    if not unhealthy:
        return Mode.NORMAL, "every dependency is healthy"
    names = ", ".join(unhealthy)
    if len(unhealthy) >= declared:
        return Mode.OFFLINE, f"every dependency is unhealthy: {names}"
    return Mode.PARTIAL, f"unhealthy: {names}"
