"""Wire models shared by the service and the client (the v1 contract in DESIGN.md).

Every request model is frozen and forbids unknown fields, so a typo is a 422, not a silent default.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE: Final = re.compile(NAME_PATTERN)

MAX_COUNT: Final = 1_000_000
MAX_SECONDS: Final = 86_400.0


class State(enum.StrEnum):
    """Breaker state; wire values are the contract's."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


TRANSITIONS: Final = frozenset(
    {
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
        (State.HALF_OPEN, State.OPEN),
    }
)
"""Automatic transitions. Admin actions (force, reset, force expiry) may go from any state to any state."""


def is_valid_name(name: str) -> bool:
    """Whether `name` is a legal breaker or queue name."""
    return _NAME_RE.fullmatch(name) is not None


PositiveInt = Annotated[int, Meta(ge=1, le=MAX_COUNT)]
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
Rate = Annotated[float, Meta(gt=0, le=1)]
Reason = Annotated[str, Meta(min_length=1, max_length=500)]


class BreakerConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-breaker settings; omitted fields take the seed's defaults.

    Rate mode is on when `window_s` is set: it then needs `min_calls` and at least one of
    `failure_rate` or `slow_call_ms`+`slow_call_rate`. The consecutive-failure rule applies in every mode.
    """

    failure_threshold: PositiveInt = 5
    open_timeout_s: PositiveSeconds = 60.0
    success_threshold: PositiveInt = 3
    half_open_max_calls: PositiveInt = 3
    permit_ttl_s: PositiveSeconds = 30.0
    window_s: PositiveSeconds | None = None
    min_calls: PositiveInt | None = None
    failure_rate: Rate | None = None
    slow_call_ms: Annotated[float, Meta(gt=0, le=MAX_SECONDS * 1000)] | None = None
    slow_call_rate: Rate | None = None
    open_backoff: Annotated[float, Meta(ge=1, le=100)] = 1.0
    max_open_timeout_s: PositiveSeconds = 600.0

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError while decoding.
        if (self.slow_call_ms is None) != (self.slow_call_rate is None):
            raise ValueError("slow_call_ms and slow_call_rate must be set together")
        rate_rule = self.failure_rate is not None or self.slow_call_rate is not None
        if rate_rule and (self.window_s is None or self.min_calls is None):
            raise ValueError("failure_rate and slow_call_rate need window_s and min_calls")
        if self.window_s is not None and not rate_rule:
            raise ValueError("window_s needs failure_rate or slow_call_ms and slow_call_rate")
        if self.min_calls is not None and self.window_s is None:
            raise ValueError("min_calls needs window_s")
        if self.max_open_timeout_s < self.open_timeout_s:
            raise ValueError("max_open_timeout_s must be at least open_timeout_s")

    @property
    def rate_mode(self) -> bool:
        """Whether the sliding-window rules are on."""
        return self.window_s is not None


class Counts(Struct, frozen=True, kw_only=True):
    """Outcome totals since the breaker was created or last reset."""

    success: int = 0
    failure: int = 0
    rejected: int = 0


class Snapshot(Struct, frozen=True, kw_only=True):
    """A breaker's state as the API answers it. Times are Unix seconds."""

    name: str
    state: State
    forced: State | None
    generation: int
    consecutive_failures: int
    consecutive_successes: int
    opened_at: float | None
    retry_after_s: float | None
    config: BreakerConfig
    counts: Counts

    @property
    def effective_state(self) -> State:
        """The state callers see: the forced one while forced."""
        return self.forced if self.forced is not None else self.state


class Decision(Struct, frozen=True, kw_only=True):
    """The answer to an acquire: a denied call is a decision, not an error."""

    allowed: bool
    state: State
    generation: int
    permit: str | None = None
    retry_after_s: float | None = None
    degraded: bool = False


class AcquireRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """The acquire body: `{}`."""


class Outcome(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The result of one protected call, or `count` calls with the same result."""

    outcome: Literal["success", "failure"]
    count: PositiveInt = 1
    duration_ms: Annotated[float, Meta(ge=0, le=MAX_SECONDS * 1000)] | None = None
    permit: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    generation: Annotated[int, Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        if self.permit is not None and self.count != 1:
            raise ValueError("an outcome with a permit reports exactly one call (count must be 1)")


class ForceRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Body of force-open and force-close."""

    reason: Reason
    ttl_s: PositiveSeconds | None = None


class ResetRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Body of reset."""

    reason: Reason


class Transition(Struct, frozen=True, kw_only=True, rename={"from_state": "from", "to_state": "to"}):
    """One state change, as kept in history and sent as an SSE `state` event."""

    name: str
    from_state: State
    to_state: State
    at: float
    reason: str
    actor: str | None
    generation: int


class BreakerList(Struct, frozen=True, kw_only=True):
    """`GET /breakers`."""

    breakers: list[Snapshot]


class History(Struct, frozen=True, kw_only=True):
    """`GET /breakers/{name}/history`, newest first."""

    transitions: list[Transition]


class ErrorDetail(Struct, frozen=True, kw_only=True):
    """The inside of every error answer."""

    code: str
    message: str
    correlation_id: str | None = None
    details: Any = None


class ErrorBody(Struct, frozen=True, kw_only=True):
    """Every error answer: `{"error": {...}}`."""

    error: ErrorDetail


class FailureSignal(Struct, frozen=True, kw_only=True):
    """SSE `failures` event: a breaker's consecutive failure count left zero or returned to it."""

    name: str
    consecutive_failures: int
    generation: int


class Deleted(Struct, frozen=True, kw_only=True):
    """SSE `deleted` event: the breaker was removed."""

    name: str


class Health(Struct, frozen=True, kw_only=True):
    """`GET /health` and `GET /health/ready`."""

    status: str
    store: str | None = None
    degraded: bool = False
    details: dict[str, str] = field(default_factory=dict)


JSON_ENCODER: Final = msgspec.json.Encoder()
