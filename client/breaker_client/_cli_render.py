"""`breakerctl`'s human output: aligned tables and one-line transitions. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from breaker_client.protocol.models import Snapshot, Transition

__all__ = ["history_table", "show_snapshot", "snapshots_table", "transition_line"]

NONE: Final = "-"


def timestamp(seconds: float | None) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds (`2023-11-14T22:13:20.000Z`)."""
    if seconds is None:
        return NONE
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float | None) -> str:
    """A wait in seconds (`12.5s`)."""
    return NONE if seconds is None else f"{seconds:.1f}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; the `numeric` columns right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def snapshots_table(snapshots: Sequence[Snapshot]) -> str:
    """`list`: STATE is the state callers see (the forced one while forced); FAILURES are consecutive."""
    rows = [
        (
            snapshot.name,
            snapshot.effective_state,
            snapshot.forced or NONE,
            str(snapshot.generation),
            str(snapshot.consecutive_failures),
            duration(snapshot.retry_after_s),
        )
        for snapshot in snapshots
    ]
    headers = ("NAME", "STATE", "FORCED", "GENERATION", "FAILURES", "RETRY_AFTER")
    return table(headers, rows, numeric=frozenset({3, 4, 5}))


def show_snapshot(snapshot: Snapshot) -> str:
    """`show`: one field a line."""
    state = str(snapshot.effective_state)
    if snapshot.forced is not None:
        state += f" (forced; own state {snapshot.machine_state})"
    counts = snapshot.counts
    config = msgspec.structs.asdict(snapshot.config)
    fields = [
        ("name", snapshot.name),
        ("state", state),
        ("forced", snapshot.forced or NONE),
        ("generation", str(snapshot.generation)),
        ("consecutive failures", str(snapshot.consecutive_failures)),
        ("consecutive successes", str(snapshot.consecutive_successes)),
        ("opened at", timestamp(snapshot.opened_at)),
        ("retry after", duration(snapshot.retry_after_s)),
        ("counts", f"success={counts.success} failure={counts.failure} rejected={counts.rejected}"),
        ("config", " ".join(f"{key}={_number(value)}" for key, value in config.items() if value is not None)),
    ]
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{label + ':':<{width + 1}}  {value}" for label, value in fields)


def history_table(transitions: Sequence[Transition]) -> str:
    """`history`: newest first, as given."""
    headers = ("AT", "FROM", "TO", "GENERATION", "ACTOR", "REASON")
    rows = [
        (
            timestamp(t.at),
            t.from_state,
            t.to_state,
            str(t.generation),
            t.actor or NONE,
            t.reason,
        )
        for t in transitions
    ]
    return table(headers, rows, numeric=frozenset({headers.index("GENERATION")}))


def transition_line(t: Transition) -> str:
    """`watch`: one state change, `key=value` after the time so that it greps well."""
    return (
        f"{timestamp(t.at)}  {t.name}  {t.from_state} -> {t.to_state}  "
        f"generation={t.generation} actor={t.actor or NONE} reason={t.reason!r}"
    )


def _number(value: object) -> str:
    """A config value: numbers in their shortest form, anything else (a `when_unknown` word) as it is."""
    return f"{value:g}" if isinstance(value, int | float) else str(value)
