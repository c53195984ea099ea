"""Outcome builders and the automatic transitions' reasons, shared by the state machine's tests and the stores'."""

from __future__ import annotations

from typing import Final

from breaker_client.protocol.models import Outcome, State

AUTOMATIC_REASONS: Final = {
    "failure threshold reached": (State.CLOSED, State.OPEN),
    "failure rate exceeded": (State.CLOSED, State.OPEN),
    "slow call rate exceeded": (State.CLOSED, State.OPEN),
    "open timeout elapsed": (State.OPEN, State.HALF_OPEN),
    "probe failed": (State.HALF_OPEN, State.OPEN),
    "probes succeeded": (State.HALF_OPEN, State.CLOSED),
}
"""The (from, to) states of every transition the machine makes by itself, by its reason."""


def failure(
    count: int = 1,
    *,
    permit: str | None = None,
    generation: int | None = None,
    duration_ms: float | None = None,
    report_id: str | None = None,
) -> Outcome:
    return Outcome(
        outcome="failure",
        count=count,
        permit=permit,
        generation=generation,
        duration_ms=duration_ms,
        report_id=report_id,
    )


def success(
    count: int = 1,
    *,
    permit: str | None = None,
    generation: int | None = None,
    duration_ms: float | None = None,
    failures_seen: int | None = None,
    report_id: str | None = None,
) -> Outcome:
    return Outcome(
        outcome="success",
        count=count,
        permit=permit,
        generation=generation,
        duration_ms=duration_ms,
        failures_seen=failures_seen,
        report_id=report_id,
    )
