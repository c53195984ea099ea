"""The protocol the service and its clients share: wire models, the state machine, the error catalogue, queues.

This package is public: `breaker_service` imports it (and nothing private of `breaker_client`), so what the two
distributions share is stated here. The Lua scripts in `breaker_service/lua` are the authority on the rules;
`machine.BreakerMachine` mirrors them for the memory store and the client's local fallback, and the differential
test holds the two together (docs/semantics.md).
"""

from __future__ import annotations

from breaker_client.protocol.catalogue import STATUS, ErrorCode
from breaker_client.protocol.machine import BreakerMachine
from breaker_client.protocol.models import (
    TRANSITIONS,
    BreakerConfig,
    Counts,
    Decision,
    Deleted,
    FailureSignal,
    Outcome,
    Snapshot,
    State,
    Transition,
)

__all__ = [
    "STATUS",
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerMachine",
    "Counts",
    "Decision",
    "Deleted",
    "ErrorCode",
    "FailureSignal",
    "Outcome",
    "Snapshot",
    "State",
    "Transition",
]
