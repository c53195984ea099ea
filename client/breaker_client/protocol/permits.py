"""Permits: the ids a breaker grants its half-open probes and leased calls, and when they expire.

A permit is held as `permit id -> expiry (ms)`. One that expires unreported is dropped; in HALF_OPEN its probe
slot is given back (the machine counts what `drop_expired_permits` returns).
"""

from __future__ import annotations

import secrets
from typing import Final

PERMIT_BYTES: Final = 12
"""96 random bits per permit: unguessable, so no caller can report on another's probe."""


def new_permit() -> str:
    """A fresh permit id from `secrets`."""
    return secrets.token_urlsafe(PERMIT_BYTES)


def drop_expired_permits(permits: dict[str, int], now_ms: int) -> int:
    """Drop the permits expired by `now_ms`; how many there were."""
    expired = [p for p, expires_ms in permits.items() if expires_ms <= now_ms]
    for permit in expired:
        del permits[permit]
    return len(expired)


def first_permit_expiry_ms(permits: dict[str, int], now_ms: int) -> int:
    """When the first permit out expires: the earliest a refused caller may find a slot free."""
    # No permit is out when a lowered failure_threshold is already exceeded: retry at once.
    return min(permits.values(), default=now_ms)
