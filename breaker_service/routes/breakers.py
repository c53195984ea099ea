"""`/breakers`: read, configure, delete, acquire, record, force, reset, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from starlette.responses import Response
from starlette.routing import Route

from breaker_client.protocol.models import (
    AcquireRequest,
    BreakerConfig,
    BreakerList,
    ConfigPatch,
    Decision,
    ForceRequest,
    History,
    Outcome,
    ResetRequest,
    Snapshot,
    State,
)
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.paging import breaker_page
from breaker_service.responses import MsgspecResponse
from breaker_service.routes.common import (
    REASON_QUERY,
    Limit,
    Name,
    actor_of,
    audit_reason,
    convert_body,
    name_of,
    operation,
    query_value,
    read_body,
)

if TYPE_CHECKING:
    from starlette.requests import Request

    from breaker_service.context import AppContext

_ACQUIRE: Final = msgspec.json.Decoder(AcquireRequest)
_OUTCOME: Final = msgspec.json.Decoder(Outcome)
_FORCE: Final = msgspec.json.Decoder(ForceRequest)
_RESET: Final = msgspec.json.Decoder(ResetRequest)
_PATCH: Final = msgspec.json.Decoder(ConfigPatch)
_OBJECT: Final = msgspec.json.Decoder(dict[str, Any])
_FORCE_QUERY: Final = {"create": bool}


@operation(
    "List every breaker, or a page of them with ?limit= (?cursor= continues from next_cursor)",
    role=Role.CLIENT,
    answer=BreakerList,
    query={"limit": Limit, "cursor": Name},
)
async def list_breakers(request: Request) -> Response:
    limit: int | None = query_value(request, "limit", Limit, None)
    cursor: str | None = query_value(request, "cursor", Name, None)
    return MsgspecResponse(await breaker_page(context(request).store, limit=limit, cursor=cursor))


@operation("One breaker's snapshot", role=Role.CLIENT, answer=Snapshot)
async def get_breaker(request: Request) -> Response:
    return MsgspecResponse(await context(request).store.snapshot(name_of(request)))


@operation(
    "Create a breaker or replace its config", role=Role.ADMIN, body=BreakerConfig, answer=Snapshot, query=REASON_QUERY
)
async def put_breaker(request: Request) -> Response:
    ctx = context(request)
    reason = audit_reason(request)
    fields = await read_body(request, _OBJECT)
    # Fields the body omits take the config file's [defaults], like a breaker created on first use.
    config = convert_body(msgspec.structs.asdict(ctx.config.defaults) | fields, BreakerConfig)
    snapshot = await ctx.store.configure(name_of(request), config, actor=actor_of(request), reason=reason)
    return MsgspecResponse(snapshot)


@operation(
    "Merge config fields into a breaker's config",
    role=Role.ADMIN,
    body=ConfigPatch,
    answer=Snapshot,
    query=REASON_QUERY,
)
async def patch_breaker(request: Request) -> Response:
    reason = audit_reason(request)
    patch = await read_body(request, _PATCH)
    snapshot = await context(request).store.patch(name_of(request), patch, actor=actor_of(request), reason=reason)
    return MsgspecResponse(snapshot)


@operation("Delete a breaker and its history", role=Role.ADMIN, status=204, query=REASON_QUERY)
async def delete_breaker(request: Request) -> Response:
    reason = audit_reason(request)
    await context(request).store.delete(name_of(request), actor=actor_of(request), reason=reason)
    return Response(status_code=204)


@operation(
    'Ask to make one call; `{}` (or no body) is the classic breaker, `{"lease": true}` joins fleet budgeting',
    role=Role.CLIENT,
    body=AcquireRequest,
    answer=Decision,
    body_required=False,
    errors=(409,),
)
async def acquire(request: Request) -> Response:
    ctx, name = context(request), name_of(request)
    body = await read_body(request, _ACQUIRE, empty=b"{}")
    return MsgspecResponse(await acquired(ctx, name, body))


@operation("Report a call's outcome", role=Role.CLIENT, body=Outcome, answer=Snapshot, errors=(409,))
async def record(request: Request) -> Response:
    ctx, name = context(request), name_of(request)
    outcome = await read_body(request, _OUTCOME)
    return MsgspecResponse(await recorded(ctx, name, outcome))


# What acquire and record do once the request is read; `hot_path.py` serves most of them and runs these too.


async def acquired(ctx: AppContext, name: str, body: AcquireRequest) -> Decision:
    """Acquire on the store, counted and (when denied) logged."""
    decision = await ctx.store.acquire(name, lease=body.lease)
    ctx.metrics.decision(name, decision)
    if not decision.allowed:  # one line per breaker per second, not one per denied call
        ctx.denials.denied(name, state=decision.state, retry_after_s=decision.retry_after_s)
    return decision


async def recorded(ctx: AppContext, name: str, outcome: Outcome) -> Snapshot:
    """Record on the store, counted."""
    snapshot = await ctx.store.record(name, outcome)
    ctx.metrics.outcome(name, outcome, snapshot)
    return snapshot


async def _force(request: Request, mode: State) -> Response:
    body = await read_body(request, _FORCE)
    structlog.contextvars.bind_contextvars(reason=body.reason)
    store = context(request).store
    if not query_value(request, "create", bool, False):
        await store.snapshot(name_of(request))  # a typo during an incident must not pass silently: 404 ORC_009
    snapshot = await store.force(name_of(request), mode, reason=body.reason, ttl_s=body.ttl_s, actor=actor_of(request))
    return MsgspecResponse(snapshot)


@operation(
    "Force the breaker OPEN (deny every call); ?create=true creates an unknown one",
    role=Role.ADMIN,
    body=ForceRequest,
    answer=Snapshot,
    query=_FORCE_QUERY,
)
async def force_open(request: Request) -> Response:
    return await _force(request, State.OPEN)


@operation(
    "Force the breaker CLOSED (allow every call); ?create=true creates an unknown one",
    role=Role.ADMIN,
    body=ForceRequest,
    answer=Snapshot,
    query=_FORCE_QUERY,
)
async def force_close(request: Request) -> Response:
    return await _force(request, State.CLOSED)


@operation("Fresh CLOSED: counts cleared, force lifted", role=Role.ADMIN, body=ResetRequest, answer=Snapshot)
async def reset(request: Request) -> Response:
    body = await read_body(request, _RESET)
    structlog.contextvars.bind_contextvars(reason=body.reason)
    snapshot = await context(request).store.reset(name_of(request), reason=body.reason, actor=actor_of(request))
    return MsgspecResponse(snapshot)


@operation("Transitions, newest first", role=Role.CLIENT, answer=History, query={"limit": Limit})
async def history(request: Request) -> Response:
    limit: int = query_value(request, "limit", Limit, 100)
    transitions = await context(request).store.history(name_of(request), limit=limit)
    return MsgspecResponse(History(transitions=transitions))


ROUTES: Final = [
    Route("/breakers", list_breakers, methods=["GET"]),
    Route("/breakers/{name}", get_breaker, methods=["GET"]),
    Route("/breakers/{name}", put_breaker, methods=["PUT"]),
    Route("/breakers/{name}", patch_breaker, methods=["PATCH"]),
    Route("/breakers/{name}", delete_breaker, methods=["DELETE"]),
    Route("/breakers/{name}/acquire", acquire, methods=["POST"]),
    Route("/breakers/{name}/record", record, methods=["POST"]),
    Route("/breakers/{name}/force-open", force_open, methods=["POST"]),
    Route("/breakers/{name}/force-close", force_close, methods=["POST"]),
    Route("/breakers/{name}/reset", reset, methods=["POST"]),
    Route("/breakers/{name}/history", history, methods=["GET"]),
]
