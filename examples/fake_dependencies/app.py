"""The fake dependencies' Starlette app: each of the five answers by its mode and counts what it met."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.fake_dependencies.models import DEPENDENCIES, DependencyStats, Mode, ModeChange, Stats

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["create_app"]

CORRELATION_HEADER: Final = "X-Correlation-ID"
_MODE_CHANGE: Final = msgspec.json.Decoder(ModeChange)
_STATS: Final = msgspec.json.Encoder()


@dataclass
class _Fake:
    """One dependency's switch and counters (one event loop: no lock needed)."""

    change: ModeChange = field(default_factory=lambda: ModeChange(mode=Mode.HEALTHY))
    by_mode: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Mode, 0))
    without_correlation_id: int = 0
    correlation_ids: set[str] = field(default_factory=set)
    delivered: list[str] = field(default_factory=list)
    rows_written: int = 0

    def stats(self) -> DependencyStats:
        return DependencyStats(
            mode=self.change.mode,
            hits=sum(self.by_mode.values()),
            by_mode=dict(self.by_mode),
            without_correlation_id=self.without_correlation_id,
            correlation_ids=sorted(self.correlation_ids),
            delivered=list(self.delivered),
            rows_written=self.rows_written,
        )


def create_app() -> Starlette:
    """The five fakes, all healthy."""
    fakes = {name: _Fake() for name in DEPENDENCIES}

    async def dependency(request: Request) -> Response:
        fake = fakes.get(request.path_params["dependency"])
        if fake is None:
            return JSONResponse({"error": "no such dependency"}, status_code=404)
        change = fake.change
        fake.by_mode[change.mode] += 1
        correlation_id = request.headers.get(CORRELATION_HEADER)
        if correlation_id:
            fake.correlation_ids.add(correlation_id)
        else:
            fake.without_correlation_id += 1
        if change.mode is Mode.FAILING:
            return JSONResponse({"error": "failing (switched by the demo)"}, status_code=503)
        if change.mode is Mode.RATE_LIMITED:
            headers = {"Retry-After": f"{change.retry_after_s:g}"}
            return JSONResponse({"error": "rate limited"}, status_code=429, headers=headers)
        if change.mode is Mode.SLOW:
            await asyncio.sleep(change.slow_s)
        body: Any = await request.json() if request.method == "POST" else None
        return JSONResponse(_answer(fake, request.path_params["dependency"], request.path_params["path"], body))

    async def health(request: Request) -> Response:
        fake = fakes.get(request.path_params["dependency"])
        if fake is None:
            return JSONResponse({"error": "no such dependency"}, status_code=404)
        healthy = fake.change.mode is Mode.HEALTHY
        return JSONResponse({"mode": fake.change.mode}, status_code=200 if healthy else 503)

    async def set_mode(request: Request) -> Response:
        fake = fakes.get(request.path_params["dependency"])
        if fake is None:
            return JSONResponse({"error": "no such dependency"}, status_code=404)
        try:
            fake.change = _MODE_CHANGE.decode(await request.body())
        except msgspec.DecodeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        body = Stats(dependencies={name: fake.stats() for name, fake in fakes.items()})
        return Response(_STATS.encode(body), media_type="application/json")

    async def alive(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/health", alive),
            Route("/_admin/stats", stats),
            Route("/_admin/{dependency}/mode", set_mode, methods=["POST"]),
            Route("/{dependency}/health", health),
            Route("/{dependency}/{path:path}", dependency, methods=["GET", "POST"]),
        ]
    )


def _answer(fake: _Fake, name: str, path: str, body: Any) -> dict[str, Any]:
    """A plausible healthy answer; the sms agent and supabase also count what they accepted."""
    if name == "sms_agent" and isinstance(body, dict):
        fake.delivered.append(str(body.get("message_id")))
        return {"delivered": body.get("message_id")}
    if name == "supabase" and isinstance(body, list):
        fake.rows_written += len(body)
        return {"written": len(body)}
    if name == "collections_monitor":
        tenant_id = path.rsplit("/", 1)[-1]
        return {"id": tenant_id, "name": f"Tenant {tenant_id}", "balance_cents": 125_000, "unit": "4B"}
    if name == "openai":
        return {"reply": "Thanks for reaching out; a payment plan of 3 instalments is available."}
    if name == "supabase":
        return {"tenant_id": path.rsplit("/", 1)[-1], "messages": 7}
    return {"accepted": True}
