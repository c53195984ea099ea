"""`/health`, `/health/ready` and `/health/dependencies`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from starlette.routing import Route

from breaker_client.protocol.models import Health
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.degradation import DependenciesDetail
from breaker_service.errors import ServiceError
from breaker_service.monitor import STORE_KEY
from breaker_service.responses import MsgspecResponse
from breaker_service.routes.common import operation, query_value

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from breaker_service.store.breaker_base import BreakerStore

PING_TIMEOUT_S: Final = 2.0


@operation("Liveness: ok while the process serves", role=None, answer=Health)
async def health(request: Request) -> Response:
    store = context(request).store
    return MsgspecResponse(Health(status="ok", store=store.kind, degraded=store.degraded))


@operation("Readiness: 503 while the store is unreachable", role=None, answer=Health, other_answers={503: Health})
async def ready(request: Request) -> Response:
    store = context(request).store
    reachable = await _ping(store)
    status = "ok" if reachable else "unavailable"
    body = Health(status=status, store=store.kind, degraded=store.degraded)
    return MsgspecResponse(body, status_code=200 if reachable else 503)


@operation(
    "One boolean per config-file breaker, plus the store; ?detail=true adds state, probe, last change and the mode",
    role=Role.CLIENT,
    answer=dict[str, bool],
    alternatives=(DependenciesDetail,),
    query={"detail": bool},
)
async def dependencies(request: Request) -> Response:
    """The seed's shape: `{"<breaker>": healthy, ..., "redis": store reachable}`.

    A breaker is healthy while its effective state is not OPEN (forced or not) and, where it has a probe URL, its
    last cached probe passed (none yet: the breaker alone decides); one that was deleted counts as healthy, as
    nothing says it fails. The store is always reported under `redis`, also on the memory store (which always
    answers), so the shape does not change with the deployment. Breakers unreadable because the store is down are
    reported unhealthy. `?detail=true` answers a `DependenciesDetail` instead.
    """
    monitor = context(request).monitor
    detail: bool = query_value(request, "detail", bool, False)
    report = await monitor.report()
    if not detail:
        answer = {name: report.healthy(name) for name in report.breakers}
        answer[STORE_KEY] = report.store.ok
        return MsgspecResponse(answer)
    mode = await monitor.refresh(report)
    details = await monitor.details(report)
    change = await monitor.last_change()
    return MsgspecResponse(DependenciesDetail(dependencies=details, degradation=mode, degradation_change=change))


async def _ping(store: BreakerStore) -> bool:
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            return await store.ping()
    except (TimeoutError, ServiceError):
        return False


ROUTES: Final = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health/dependencies", dependencies, methods=["GET"]),
]
