"""`/queues`: deferred work queues (enqueue, claim, ack, nack, counts); rules in `store/queue_base.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
import structlog
from starlette.routing import Route

from breaker_client.protocol.queue_models import (
    Acked,
    AckRequest,
    Claimed,
    ClaimRequest,
    Enqueued,
    EnqueueRequest,
    Nacked,
    NackRequest,
    QueueStats,
)
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.errors import BodyTooLargeError, InvalidRequestError, UnknownBreakerError
from breaker_service.responses import MsgspecResponse
from breaker_service.routes.common import REASON_QUERY, audit_reason, name_of, operation, read_body

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

_ENQUEUE: Final = msgspec.json.Decoder(EnqueueRequest)
_CLAIM: Final = msgspec.json.Decoder(ClaimRequest)
_ACK: Final = msgspec.json.Decoder(AckRequest)
_NACK: Final = msgspec.json.Decoder(NackRequest)


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    """`DELETE /queues/{name}/dead`: how many dead letters were dropped."""

    purged: int


def queue_of(request: Request) -> str:
    """The `{name}` of a queue route (checked by `operation`), bound into the logs as `queue`."""
    name = name_of(request)
    structlog.contextvars.unbind_contextvars("breaker")
    structlog.contextvars.bind_contextvars(queue=name)
    return name


def payload_bytes(payload: msgspec.Raw, max_bytes: int) -> bytes:
    """The payload's JSON bytes, at most `max_bytes` (else 413); msgspec checks a Raw value's syntax but not the
    UTF-8 of its strings, so this does."""
    data = bytes(payload)
    if len(data) > max_bytes:
        raise BodyTooLargeError(
            f"the payload is larger than {max_bytes} bytes",
            details={"max_payload_bytes": max_bytes, "payload_bytes": len(data)},
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"the body is not valid JSON: the payload is not UTF-8 ({exc.reason})",
            status=400,
            details={"location": "body"},
        ) from None
    return data


@operation(
    "Add a job (creates the queue); 409 while the queue is full",
    role=Role.CLIENT,
    body=EnqueueRequest,
    answer=Enqueued,
    status=202,
    errors=(409,),
)
async def enqueue(request: Request) -> Response:
    ctx, name = context(request), queue_of(request)
    body = await read_body(request, _ENQUEUE)
    payload = payload_bytes(body.payload, ctx.settings.queue_max_payload_bytes)
    queued = await ctx.queues.enqueue(name, payload, body.idempotency_key)
    return MsgspecResponse(queued, status_code=202)


@operation("Lease up to `max` ready jobs to a consumer", role=Role.CLIENT, body=ClaimRequest, answer=Claimed)
async def claim(request: Request) -> Response:
    name = queue_of(request)
    body = await read_body(request, _CLAIM)
    jobs = await context(request).queues.claim(name, body.consumer, max_jobs=body.max, lease_s=body.lease_s)
    return MsgspecResponse(Claimed(jobs=jobs))


@operation("Finish delivered jobs", role=Role.CLIENT, body=AckRequest, answer=Acked)
async def ack(request: Request) -> Response:
    name = queue_of(request)
    body = await read_body(request, _ACK)
    return MsgspecResponse(Acked(acked=await context(request).queues.ack(name, body.ids)))


@operation("Give claimed jobs back, due after `delay_s`", role=Role.CLIENT, body=NackRequest, answer=Nacked)
async def nack(request: Request) -> Response:
    name = queue_of(request)
    body = await read_body(request, _NACK)
    nacked = await context(request).queues.nack(
        name, body.ids, delay_s=body.delay_s, error=body.error, count_attempt=body.count_attempt
    )
    return MsgspecResponse(nacked)


@operation("The queue's counts; 404 for a queue never used nor declared", role=Role.CLIENT, answer=QueueStats)
async def stats(request: Request) -> Response:
    ctx, name = context(request), queue_of(request)
    counts = await ctx.queues.stats(name)
    if counts is None:
        if name not in ctx.config.queues:
            raise UnknownBreakerError(f"no queue named {name!r}")
        counts = QueueStats(ready=0, pending=0, dead=0)
    return MsgspecResponse(counts)


@operation("Drop every dead letter", role=Role.ADMIN, answer=Purged, query=REASON_QUERY)
async def purge_dead(request: Request) -> Response:
    ctx, name = context(request), queue_of(request)
    audit_reason(request)
    purged = await ctx.queues.purge_dead(name)
    if purged is None:
        if name not in ctx.config.queues:
            raise UnknownBreakerError(f"no queue named {name!r}")
        purged = 0
    structlog.contextvars.bind_contextvars(purged=purged)
    return MsgspecResponse(Purged(purged=purged))


ROUTES: Final = [
    Route("/queues/{name}", stats, methods=["GET"]),
    Route("/queues/{name}/jobs", enqueue, methods=["POST"]),
    Route("/queues/{name}/claim", claim, methods=["POST"]),
    Route("/queues/{name}/ack", ack, methods=["POST"]),
    Route("/queues/{name}/nack", nack, methods=["POST"]),
    Route("/queues/{name}/dead", purge_dead, methods=["DELETE"]),
]
