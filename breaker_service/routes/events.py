"""`GET /events`: Server-Sent Events.

On open, the breakers' snapshots as one or more `snapshot` events of at most `SNAPSHOT_CHUNK` breakers each
(`{"breakers": [Snapshot], "more": bool}`: `more` is false on the last), then every store event as an SSE event
named by its
kind (`state`, `failures`, `config`, `deleted`, `mode` for the degradation mode, and `breaker`: the snapshot
that follows each `state` event, so clients learn a force or an open time without asking) with its JSON as data, each
with an `id:` of `<stream-start-ms>-<seq>`, and a `: keepalive` comment line after each quiet
`BREAKER_SSE_KEEPALIVE_S`. `?names=a,b` limits the stream to those breakers: the snapshot and every event about a
breaker (events about no breaker, such as `mode`, still come).

Streams listen to the replica's one `EventHub` subscription (not one Redis subscription each), and start
listening before they read the snapshot, so no change falls between the two (a change may show in both; its
`generation` tells). A stream ends when the client goes away, when the server shuts down, or when the hub cuts it
off (the store's feed failed, or the client fell `event_hub.BACKLOG` events behind); a client reconnects and gets
a fresh snapshot. Should the snapshot itself fail, the stream sends one `error` event (the contract's error body)
and ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
import structlog
from msgspec import Meta
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from breaker_client.protocol.models import JSON_ENCODER, NAME_PATTERN, Snapshot, Transition
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.errors import ServiceError
from breaker_service.logs import current_correlation_id
from breaker_service.responses import error_body
from breaker_service.routes.common import Name, operation, query_list

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from starlette.requests import Request

    from breaker_service.event_hub import EventHub
    from breaker_service.events import StoreEvent
    from breaker_service.metrics import Metrics
    from breaker_service.store.breaker_base import BreakerStore

SUBSCRIBE_TIMEOUT_S: Final = 2.0
SNAPSHOT_CHUNK: Final = 1000
"""Breakers per opening `snapshot` event at most."""
MAX_NAMES: Final = 1000
NameFilter = Annotated[list[Name], Meta(min_length=1, max_length=MAX_NAMES)]
NamesQuery = Annotated[str, Meta(pattern=rf"^{NAME_PATTERN[1:-2]}(,{NAME_PATTERN[1:-2]})*\Z")]
"""`?names=a,b` as the document states it (NameFilter checks it, and its count)."""
KEEPALIVE: Final = b": keepalive\n\n"
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = structlog.get_logger("breaker_service.events")


class SnapshotChunk(msgspec.Struct, frozen=True, kw_only=True):
    """Data of an opening `snapshot` event; `more` while further `snapshot` events follow."""

    breakers: list[Snapshot]
    more: bool


@operation(
    "Server-sent events: a snapshot, then every change (?names=a,b: only those breakers)",
    role=Role.CLIENT,
    media_type="text/event-stream",
    query={"names": NamesQuery},
)
async def events(request: Request) -> Response:
    ctx = context(request)
    names: list[str] | None = query_list(request, "names", NameFilter)
    stream = event_stream(
        ctx.store, ctx.hub, stopping=ctx.stopping, keepalive_s=ctx.settings.sse_keepalive_s, names=names
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)


async def event_stream(
    store: BreakerStore,
    hub: EventHub,
    *,
    stopping: asyncio.Event,
    keepalive_s: float,
    names: Sequence[str] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE byte stream for one client (only the breakers `names` when given)."""
    wanted = None if names is None else frozenset(names)
    stream_id = time.time_ns() // 1_000_000
    stop = asyncio.ensure_future(stopping.wait())
    get: asyncio.Future[StoreEvent | None] | None = None
    with hub.listening() as listener:
        try:
            # Listen before reading the snapshot, so no change falls between the two. While the hub cannot
            # subscribe (Redis down) the snapshot still comes from local state; the client reconnects for events.
            if not hub.live.is_set():
                live = asyncio.ensure_future(hub.live.wait())
                await asyncio.wait({live, stop}, timeout=SUBSCRIBE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
                live.cancel()
            try:
                snapshots = await store.snapshots(names)
            except ServiceError as exc:
                # The answer has started (200); say why it ends in the stream, and let the client reconnect.
                body = error_body(exc.code, exc.message, current_correlation_id(), exc.details)
                yield _frame("error", f"{stream_id}-0", JSON_ENCODER.encode(body))
                return
            for chunk in _chunks(snapshots):
                yield _frame("snapshot", f"{stream_id}-0", JSON_ENCODER.encode(chunk))
            seq = 0
            while True:
                get = get or asyncio.ensure_future(listener.get())
                waiting: set[asyncio.Future[Any]] = {get, stop}
                await asyncio.wait(waiting, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    return
                if not get.done():
                    yield KEEPALIVE
                    continue
                event, get = get.result(), None
                if event is None:  # cut off by the hub: the client reconnects and takes a fresh snapshot
                    return
                if wanted is not None and _breaker_of(event) not in wanted | {None}:
                    continue
                seq += 1
                yield _frame(event.kind, f"{stream_id}-{seq}", JSON_ENCODER.encode(event.data))
        finally:
            stop.cancel()
            if get is not None:
                get.cancel()


async def watch_transitions(hub: EventHub, metrics: Metrics | None) -> None:
    """For the app's life: one log line per transition on the store's event feed, and one count in `metrics` when
    given (the memory store's: there every transition is this replica's own)."""
    structlog.contextvars.clear_contextvars()
    while True:
        with hub.listening() as listener:
            while (event := await listener.get()) is not None:
                if isinstance(event.data, Transition):
                    if metrics is not None:
                        metrics.transition(event.data.name, event.data.from_state, event.data.to_state)
                    log.info(
                        "transition",
                        breaker=event.data.name,
                        from_state=event.data.from_state,
                        to_state=event.data.to_state,
                        reason=event.data.reason,
                        actor=event.data.actor,
                        generation=event.data.generation,
                    )


def _chunks(snapshots: list[Snapshot]) -> list[SnapshotChunk]:
    """The opening snapshot cut into events of at most SNAPSHOT_CHUNK breakers (one, empty, when there are none)."""
    starts = range(0, max(len(snapshots), 1), SNAPSHOT_CHUNK)
    return [
        SnapshotChunk(breakers=snapshots[i : i + SNAPSHOT_CHUNK], more=i + SNAPSHOT_CHUNK < len(snapshots))
        for i in starts
    ]


def _breaker_of(event: StoreEvent) -> str | None:
    """The breaker an event is about (None for events about no breaker, like `mode`)."""
    name = getattr(event.data, "name", None)
    return name if isinstance(name, str) else None


def _frame(kind: str, event_id: str, data: bytes) -> bytes:
    return b"id: " + event_id.encode() + b"\nevent: " + kind.encode() + b"\ndata: " + data + b"\n\n"


ROUTES: Final = [Route("/events", events, methods=["GET"])]
