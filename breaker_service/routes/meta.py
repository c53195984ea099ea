"""`/metrics`, `/openapi.json` and the dashboard at `/`."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Final

from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from breaker_client.protocol.models import JSON_ENCODER
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.metrics import CONTENT_TYPE
from breaker_service.openapi import build_openapi
from breaker_service.routes.common import operation

if TYPE_CHECKING:
    from starlette.requests import Request

DASHBOARD: Final = resources.files("breaker_service").joinpath("static/dashboard.html").read_text(encoding="utf-8")


@operation("Prometheus metrics", role=Role.CLIENT, media_type=CONTENT_TYPE)
async def metrics(request: Request) -> Response:
    ctx = context(request)
    monitor = ctx.monitor if ctx.has_monitor else None
    return Response(await ctx.metrics.scrape(ctx.store, monitor), media_type=CONTENT_TYPE)


@operation("This document", role=None)
async def openapi(request: Request) -> Response:
    return Response(JSON_ENCODER.encode(build_openapi(request.app.routes)), media_type="application/json")


@operation("The dashboard", role=None, media_type="text/html")
async def dashboard(request: Request) -> Response:
    return HTMLResponse(DASHBOARD)


ROUTES: Final = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/", dashboard, methods=["GET"]),
]
