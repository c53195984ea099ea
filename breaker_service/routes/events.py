"""`GET /events`: Server-Sent Events.

On open, one `snapshot` event (`{"breakers": [Snapshot]}`), then every store event as an SSE event named by its
kind (`state`, `failures`, `config`, `deleted`, and `mode` for the degradation mode) with its JSON as data, each
with an `id:` of `<stream-start-ms>-<seq>`, and a `: keepalive` comment line after each quiet
`BREAKER_SSE_KEEPALIVE_S`.

The stream subscribes before it reads the snapshot, so no change falls between the two (a change may show in
both; its `generation` tells). It ends when the client goes away, when the server shuts down, when the store's
event feed ends, or when the client falls more than `BACKLOG` events behind; a client reconnects and gets a
fresh snapshot. Should the snapshot itself fail, the stream sends one `error` event (the contract's error body)
and ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from breaker_client._models import JSON_ENCODER, BreakerList, Transition
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.errors import ServiceError
from breaker_service.logs import current_correlation_id
from breaker_service.responses import error_body
from breaker_service.routes.common import operation

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from breaker_service.metrics import Metrics
    from breaker_service.store.base import BreakerStore, StoreEvent

BACKLOG: Final = 10_000
SUBSCRIBE_TIMEOUT_S: Final = 2.0
CLEANUP_TIMEOUT_S: Final = 5.0
KEEPALIVE: Final = b": keepalive\n\n"
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = structlog.get_logger("breaker_service.events")


@operation("Server-sent events: a snapshot, then every change", role=Role.CLIENT, media_type="text/event-stream")
async def events(request: Request) -> Response:
    ctx = context(request)
    stream = event_stream(ctx.store, stopping=ctx.stopping, keepalive_s=ctx.settings.sse_keepalive_s)
    return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)


async def event_stream(store: BreakerStore, *, stopping: asyncio.Event, keepalive_s: float) -> AsyncIterator[bytes]:
    """The SSE byte stream for one client."""
    stream_id = time.time_ns() // 1_000_000
    queue: asyncio.Queue[StoreEvent] = asyncio.Queue(maxsize=BACKLOG)
    subscribed = asyncio.Event()
    pump = asyncio.create_task(_pump(store.events(subscribed), queue), name="sse-pump")
    stop = asyncio.create_task(stopping.wait(), name="sse-stop")
    get: asyncio.Future[StoreEvent] | None = None
    try:
        # Subscribe before reading the snapshot, so no change falls between the two. A store that cannot subscribe
        # now (Redis down) still gets its snapshot from local state; the client reconnects later for events.
        subscribing = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({subscribing, pump}, timeout=SUBSCRIBE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        subscribing.cancel()
        try:
            snapshot = BreakerList(breakers=await store.snapshots())
        except ServiceError as exc:
            # The answer has started (200); say why it ends in the stream, and let the client reconnect.
            body = error_body(exc.code, exc.message, current_correlation_id(), exc.details)
            yield _frame("error", f"{stream_id}-0", JSON_ENCODER.encode(body))
            return
        yield _frame("snapshot", f"{stream_id}-0", JSON_ENCODER.encode(snapshot))
        seq = 0
        while True:
            get = get or asyncio.ensure_future(queue.get())
            waiting: set[asyncio.Future[Any]] = {get, stop, pump}
            await asyncio.wait(waiting, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return
            if get.done():
                seq += 1
                event, get = get.result(), None
                yield _frame(event.kind, f"{stream_id}-{seq}", JSON_ENCODER.encode(event.data))
                continue
            if pump.done():
                return
            yield KEEPALIVE
    finally:
        for task in (get, pump, stop):
            if task is not None:
                task.cancel()
        # Shielded: the store's subscription is released even while this stream is being cancelled.
        with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
            await asyncio.gather(pump, stop, return_exceptions=True)


async def _pump(source: AsyncIterator[StoreEvent], queue: asyncio.Queue[StoreEvent]) -> None:
    try:
        async for event in source:
            if queue.full():
                log.warning("event stream closed: the client fell behind", backlog=BACKLOG)
                return
            queue.put_nowait(event)
    except Exception as exc:
        # The stream ends and the client reconnects; there is nobody else to tell.
        log.warning("event stream closed: the store's event feed failed", error=repr(exc))


async def watch_transitions(store: BreakerStore, metrics: Metrics) -> None:
    """For the app's life: one log line and one count per transition on the store's event feed."""
    structlog.contextvars.clear_contextvars()
    try:
        async for event in store.events():
            if isinstance(event.data, Transition):
                metrics.transition(event.data)
                log.info(
                    "transition",
                    breaker=event.data.name,
                    from_state=event.data.from_state,
                    to_state=event.data.to_state,
                    reason=event.data.reason,
                    actor=event.data.actor,
                    generation=event.data.generation,
                )
    except Exception as exc:
        log.error("transition watch stopped: the store's event feed failed", exc_info=exc)


def _frame(kind: str, event_id: str, data: bytes) -> bytes:
    return b"id: " + event_id.encode() + b"\nevent: " + kind.encode() + b"\ndata: " + data + b"\n\n"


ROUTES: Final = [Route("/events", events, methods=["GET"])]
