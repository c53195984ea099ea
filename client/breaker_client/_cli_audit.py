"""`breakerctl audit`: the service's audit trail (`GET /audit`), newest first, as a table or as the service's JSON.

The trail is the service's own record of every admin action (configure, delete, force-open, force-close, reset),
deleted breakers included; it is read in one request of at most `--limit` entries.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final

import msgspec

from breaker_client import _cli_render as render

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from breaker_client._cli_service import Service

__all__ = ["AuditEntry", "AuditTrail", "audit"]


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One admin action: when (Unix seconds), on which breaker, what, by whom (the token's name), and why."""

    at: float
    name: str
    action: str
    actor: str | None = None
    reason: str | None = None


class AuditTrail(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /audit`'s answer (fields this client does not know are ignored)."""

    entries: list[AuditEntry]


_TRAIL: Final = msgspec.json.Decoder(AuditTrail)


async def audit(service: Service, args: argparse.Namespace) -> None:
    """`audit [--limit N]`: one line per action; "no admin actions" on stderr when there are none."""
    trail, raw = await service.get("/audit", _TRAIL, limit=args.limit)
    if args.json:
        print(raw.decode())
    elif trail.entries:
        print(audit_table(trail.entries))
    else:
        print("no admin actions", file=sys.stderr)


def audit_table(entries: Sequence[AuditEntry]) -> str:
    """AT, BREAKER, ACTION, ACTOR, REASON: newest first, as given."""
    rows = [
        (render.timestamp(e.at), e.name, e.action, e.actor or render.NONE, e.reason or render.NONE) for e in entries
    ]
    return render.table(("AT", "BREAKER", "ACTION", "ACTOR", "REASON"), rows)
