"""The `when_unknown` rule: what a breaker answers when its shared state cannot be known and it was never seen.

The service (degraded, its store unreachable) and the client (its local fallback) both follow it, from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from breaker_client.protocol.models import Decision, State

if TYPE_CHECKING:
    from breaker_client.protocol.models import WhenUnknown


def refusal_when_unknown(when_unknown: WhenUnknown, retry_after_s: float | None) -> Decision | None:
    """The rule for a breaker whose shared state cannot be known and that was never seen: "deny" refuses as an OPEN
    breaker would (marked degraded, no machine made); "allow" gives None, and a fresh machine decides."""
    if when_unknown == "allow":
        return None
    return Decision(allowed=False, state=State.OPEN, generation=0, retry_after_s=retry_after_s, degraded=True)
