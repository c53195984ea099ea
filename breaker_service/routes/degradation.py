"""`GET /degradation` and `PUT /degradation`: the fleet's degradation mode (rules in `breaker_service.degradation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
import structlog
from starlette.routing import Route

from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.degradation import LIFT_REASON, Degradation, DegradationRequest
from breaker_service.responses import MsgspecResponse
from breaker_service.routes.common import actor_of, operation, read_body

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

_REQUEST: Final = msgspec.json.Decoder(DegradationRequest)


@operation("The degradation mode: derived from dependency health, or forced", role=Role.CLIENT, answer=Degradation)
async def get_degradation(request: Request) -> Response:
    return MsgspecResponse(await context(request).monitor.refresh())


@operation(
    "Force a degradation mode (optionally for ttl_s), or lift the override with mode null",
    role=Role.ADMIN,
    body=DegradationRequest,
    answer=Degradation,
)
async def put_degradation(request: Request) -> Response:
    body = await read_body(request, _REQUEST)
    forced = "none" if body.mode is None else body.mode.value
    structlog.contextvars.bind_contextvars(reason=body.reason or LIFT_REASON, forced=forced, ttl_s=body.ttl_s)
    state = await context(request).monitor.force(
        body.mode, reason=body.reason, ttl_s=body.ttl_s, actor=actor_of(request)
    )
    return MsgspecResponse(state)


ROUTES: Final = [
    Route("/degradation", get_degradation, methods=["GET"]),
    Route("/degradation", put_degradation, methods=["PUT"]),
]
