"""The one events module: what the stores publish on `brk:events`, and how a published message is read.

Every store event is `{"kind": ..., "data": ...}` (docs/semantics.md, "Events"). The Lua scripts and the
memory stores publish them; the `EventHub` fans them out to `/events` streams, the transition log and the monitor.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

import msgspec

from breaker_client.protocol.models import Deleted, FailureSignal, Snapshot, Transition
from breaker_service.degradation import Degradation

EVENTS_CHANNEL: Final = "brk:events"

EventKind: TypeAlias = Literal["state", "failures", "config", "deleted", "mode", "breaker", "resync"]


class Resync(msgspec.Struct, frozen=True, kw_only=True):
    """Data of a `resync` event: listeners read snapshots again (`name`: that breaker's; None: every one).

    Sent when events may have been missed (a lost subscription), when a replica leaves a degraded spell (its
    local answers may have made up state), and for each breaker restored after a store reset.
    """

    name: str | None
    reason: str


class StoreEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One message on the events channel: `{"kind": ..., "data": ...}`."""

    kind: EventKind
    data: Transition | FailureSignal | Snapshot | Deleted | Degradation | Resync


class _Envelope(msgspec.Struct, frozen=True):
    kind: str
    data: msgspec.Raw


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
# msgspec cannot decode an untagged union of structs, so the envelope's kind picks the data's decoder.
_EVENT_DATA: Final[dict[str, tuple[EventKind, msgspec.json.Decoder[Any]]]] = {
    "state": ("state", msgspec.json.Decoder(Transition)),
    "failures": ("failures", msgspec.json.Decoder(FailureSignal)),
    "config": ("config", msgspec.json.Decoder(Snapshot)),
    "breaker": ("breaker", msgspec.json.Decoder(Snapshot)),
    "deleted": ("deleted", msgspec.json.Decoder(Deleted)),
    "mode": ("mode", msgspec.json.Decoder(Degradation)),
    "resync": ("resync", msgspec.json.Decoder(Resync)),
}


def decode_event(payload: bytes) -> StoreEvent | None:
    """Read one published message; None for kinds this version does not know (readers are tolerant)."""
    envelope = _ENVELOPE.decode(payload)
    known = _EVENT_DATA.get(envelope.kind)
    if known is None:
        return None
    kind, decoder = known
    return StoreEvent(kind=kind, data=decoder.decode(envelope.data))
