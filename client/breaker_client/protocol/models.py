"""Wire models shared by the service and the client (the v1.1 contract in DESIGN.md).

Every request model is frozen and forbids unknown fields, so a typo is a 422, not a silent default. Answer models
accept fields they do not know (readers are tolerant), so a newer service does not break an older client.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"
r"""`\Z`, not `$`: in Python `$` also matches before a final newline, so `victim\n` would pass (the OpenAPI
document publishes it with `$`, which means the very end in JSON Schema's regex dialect)."""
_NAME_RE: Final = re.compile(NAME_PATTERN)
REPORT_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}(?![\s\S])"
"""Whole-string match in Python and in JSON Schema alike: `$` would let a trailing newline through."""
PROTOCOL_VERSION: Final = "1.1"

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
WhenUnknown = Literal["allow", "deny"]
"""What to do for a breaker whose shared state cannot be known: run a fresh machine, or refuse as OPEN."""


class RetryConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A breaker's retry policy for clients that pass none (`RetryPolicy` fields; `attempts` counts every try)."""

    attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    base_s: Annotated[float, Meta(ge=0, le=3600)] = 1.0
    multiplier: Annotated[float, Meta(ge=1, le=100)] = 2.0
    max_s: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    jitter: bool = True


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
    retry: RetryConfig | None = None
    when_unknown: WhenUnknown = "allow"
    """What a replica or client does for this breaker while it cannot know its shared state."""

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
        if self.success_threshold > self.half_open_max_calls:
            # Probes are granted at most half_open_max_calls per half-open window: more successes could never come.
            raise ValueError(
                f"success_threshold ({self.success_threshold}) must not exceed "
                f"half_open_max_calls ({self.half_open_max_calls})"
            )

    @property
    def rate_mode(self) -> bool:
        """Whether the sliding-window rules are on."""
        return self.window_s is not None


class ConfigPatch(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The body of `PATCH /breakers/{name}`: the fields to change; an optional field given as null is unset.

    Each field is checked here; the rules that tie fields together are checked on the merged config.
    """

    failure_threshold: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    open_timeout_s: PositiveSeconds | msgspec.UnsetType = msgspec.UNSET
    success_threshold: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    half_open_max_calls: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    permit_ttl_s: PositiveSeconds | msgspec.UnsetType = msgspec.UNSET
    window_s: PositiveSeconds | msgspec.UnsetType | None = msgspec.UNSET
    min_calls: PositiveInt | msgspec.UnsetType | None = msgspec.UNSET
    failure_rate: Rate | msgspec.UnsetType | None = msgspec.UNSET
    slow_call_ms: Annotated[float, Meta(gt=0, le=MAX_SECONDS * 1000)] | msgspec.UnsetType | None = msgspec.UNSET
    slow_call_rate: Rate | msgspec.UnsetType | None = msgspec.UNSET
    open_backoff: Annotated[float, Meta(ge=1, le=100)] | msgspec.UnsetType = msgspec.UNSET
    max_open_timeout_s: PositiveSeconds | msgspec.UnsetType = msgspec.UNSET
    retry: RetryConfig | msgspec.UnsetType | None = msgspec.UNSET
    """The whole retry table (omitted fields take their defaults), or null for none."""

    def fields(self) -> dict[str, Any]:
        """The fields given, by name (None for one to unset)."""
        return {name: value for name, value in msgspec.structs.asdict(self).items() if value is not msgspec.UNSET}

    def apply(self, config: BreakerConfig) -> BreakerConfig:
        """`config` with these fields merged in; `msgspec.ValidationError` when the result breaks a rule."""
        return msgspec.convert({**msgspec.structs.asdict(config), **self.fields()}, BreakerConfig)


def read_stored_config(raw: bytes) -> tuple[BreakerConfig, bool]:
    """A config as stored, and whether it had to be corrected: one stored before v1.1 may ask for more probe
    successes than probes are granted (it could never close), and is read with success_threshold lowered."""
    fields: dict[str, Any] = msgspec.json.decode(raw)
    corrected = fields.get("success_threshold", 3) > fields.get("half_open_max_calls", 3)
    if corrected:
        fields["success_threshold"] = fields.get("half_open_max_calls", 3)
    return msgspec.convert(fields, BreakerConfig), corrected


class Counts(Struct, frozen=True, kw_only=True):
    """Outcome totals since the breaker was created or last reset."""

    success: int = 0
    failure: int = 0
    rejected: int = 0


class Force(Struct, frozen=True, kw_only=True):
    """An admin override in effect: the forced state, when it lifts (Unix seconds; None: at reset), who and why."""

    mode: State
    until: float | None
    actor: str | None
    reason: str


class Snapshot(Struct, frozen=True, kw_only=True):
    """A breaker's state as the API answers it. Times are Unix seconds.

    `state` is the effective state (the forced one while forced); `machine_state` the machine's own underneath.
    `forced` (the forced state or None) is kept for v1 readers; `force` says all of it.
    """

    name: str
    state: State
    machine_state: State
    forced: State | None
    force: Force | None
    generation: int
    consecutive_failures: int
    consecutive_successes: int
    opened_at: float | None
    retry_after_s: float | None
    config: BreakerConfig
    counts: Counts
    incarnation: str | None = None
    """Random per creation of the breaker in the store: a replica tells a lost breaker from a re-created one."""

    @property
    def effective_state(self) -> State:
        """The state callers see: the forced one while forced (the same as `state`)."""
        return self.state


class Decision(Struct, frozen=True, kw_only=True):
    """The answer to an acquire: a denied call is a decision, not an error."""

    allowed: bool
    state: State
    generation: int
    permit: str | None = None
    retry_after_s: float | None = None
    degraded: bool = False


class AcquireRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The acquire body: `{}` (the classic breaker), or `{"lease": true}` to take part in fleet budgeting."""

    lease: bool = False


class Outcome(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The result of one protected call, or `count` calls with the same result."""

    outcome: Literal["success", "failure", "rejected"]
    count: PositiveInt = 1
    duration_ms: Annotated[float, Meta(ge=0, le=MAX_SECONDS * 1000)] | None = None
    permit: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    generation: Annotated[int, Meta(ge=0)] | None = None
    failures_seen: Annotated[int, Meta(ge=0)] | None = None
    """The breaker's `counts.failure` the reporter knew when the (first) call was admitted: a success admitted
    before failures it had not seen is counted but does not end a failure streak."""
    report_id: Annotated[str, Meta(pattern=REPORT_ID_PATTERN)] | None = None
    """Counted once, whichever replica receives it (a retry re-sends the same id)."""

    def __post_init__(self) -> None:
        if self.permit is not None and self.count != 1:
            raise ValueError("an outcome with a permit reports exactly one call (count must be 1)")
        if self.outcome == "rejected" and self.permit is not None:
            raise ValueError("a rejected call holds no permit")


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
    """`GET /breakers`: one page with `?limit=`, whose `next_cursor` (`?cursor=`) continues; null on the last."""

    breakers: list[Snapshot]
    next_cursor: str | None = None


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
    protocol: str = PROTOCOL_VERSION
    """The protocol the service speaks: clients may check it (upgrade the replicas first, then the clients)."""


JSON_ENCODER: Final = msgspec.json.Encoder()
