"""The orchestrator's Starlette app: `POST /messages`, `GET /stats`, `GET /health`, and its background workers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import TYPE_CHECKING, Final

import httpx
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from breaker_client import CORRELATION_HEADER, BreakerClient, correlation_id, use_correlation_id
from examples.orchestrator.fallbacks import ReviewLog
from examples.orchestrator.protected import ProtectedHttp
from examples.orchestrator.services import CollectionsMonitor, NotificationService, OpenAI, SmsAgent, Supabase
from examples.orchestrator.stats import Stats
from examples.orchestrator.workers import flush_supabase, replay_outbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from examples.orchestrator.settings import Settings

__all__ = ["create_app"]

_log = structlog.get_logger("orchestrator")
_ENCODER: Final = msgspec.json.Encoder()
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
OUTBOX: Final = "sms_outbox"


class IncomingMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /messages`: an SMS a tenant sent."""

    tenant_id: str
    text: str


_INCOMING: Final = msgspec.json.Decoder(IncomingMessage)


class CorrelationMiddleware:
    """Reads `X-Correlation-ID` (or makes one), binds it into every log line and every call the client makes
    (to the breaker service and to the dependencies), and echoes it in the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(CORRELATION_HEADER.lower().encode(), b"").decode("latin-1")
        # Only a plain id is taken: it goes into log lines, headers and the SMS's idempotency key.
        value = given if _PLAIN_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((CORRELATION_HEADER.encode(), value.encode("latin-1")))
            await send(message)

        with use_correlation_id(value), structlog.contextvars.bound_contextvars(correlation_id=value):
            await self.app(scope, receive, send_with_id)


class Orchestrator:
    """The five services, the workflow and the counters."""

    def __init__(self, client: BreakerClient, http: httpx.AsyncClient, settings: Settings) -> None:
        self.stats = Stats()
        retry = settings.retry_policy()

        def protected(name: str) -> ProtectedHttp:
            breaker = client.breaker(name, retry=retry)
            return ProtectedHttp(breaker, http, f"{settings.dependencies_url}/{name}", self.stats.of(name))

        self.outbox = client.queue(OUTBOX)
        sms = protected("sms_agent")
        self.sms_breaker = sms.breaker
        self.collections = CollectionsMonitor(protected("collections_monitor"), self.stats)
        self.sms = SmsAgent(sms, self.outbox, self.stats)
        self.notifications = NotificationService(protected("notification_service"), ReviewLog(), self.stats)
        self.supabase = Supabase(protected("supabase"), self.stats)
        self.openai = OpenAI(protected("openai"), self.stats)

    async def handle(self, incoming: IncomingMessage, request_id: str) -> dict[str, object]:
        """One tenant message through all five dependencies; always an answer, `degraded` naming the fallbacks."""
        (tenant, tenant_from), (conversation, conversation_from) = await asyncio.gather(
            self.collections.tenant(incoming.tenant_id), self.supabase.conversation(incoming.tenant_id)
        )
        reply, reply_from = await self.openai.reply(tenant, incoming.text)
        # The request's correlation id names its SMS: a caller's retry of the request does not send a second one.
        message = {"message_id": f"sms-{request_id}", "to": incoming.tenant_id, "body": reply}
        notification = {"tenant_id": incoming.tenant_id, "text": incoming.text, "reply": reply}
        row = {"id": request_id, "tenant_id": incoming.tenant_id, "text": incoming.text, "reply": reply}
        sms, notified, record = await asyncio.gather(
            self.sms.send(message), self.notifications.notify(notification), self.supabase.save(row)
        )
        degraded = [
            name
            for name, fell in (
                ("collections_monitor", tenant_from != "live"),
                ("supabase", conversation_from != "live" or record != "written"),
                ("openai", reply_from != "openai"),
                ("sms_agent", sms != "sent"),
                ("notification_service", notified != "sent"),
            )
            if fell
        ]
        self.stats.requests += 1
        self.stats.degraded_answers += bool(degraded)
        _log.info("message.handled", tenant_id=incoming.tenant_id, degraded=degraded)
        return {
            "correlation_id": request_id,
            "tenant": {"data": tenant, "source": tenant_from},
            "conversation": {"data": conversation, "source": conversation_from},
            "reply": {"text": reply, "source": reply_from},
            "sms": sms,
            "notification": notified,
            "record": record,
            "degraded": degraded,
        }


def create_app(settings: Settings) -> Starlette:
    """The orchestrator on `settings`; the breaker client and the workers live as long as the app."""
    state: dict[str, Orchestrator] = {}

    async def messages(request: Request) -> Response:
        try:
            incoming = _INCOMING.decode(await request.body())
        except msgspec.DecodeError as exc:
            error = {"code": "ORC_001", "message": str(exc), "correlation_id": correlation_id(), "details": None}
            return JSONResponse({"error": error}, status_code=422)
        answer = await state["app"].handle(incoming, correlation_id())
        return Response(_ENCODER.encode(answer), media_type="application/json")

    async def stats(request: Request) -> Response:
        return Response(_ENCODER.encode(state["app"].stats.snapshot()), media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.call_timeout_s + 1.0)
        async with (
            BreakerClient(list(settings.breaker_urls), token=settings.breaker_token) as client,
            httpx.AsyncClient(timeout=timeout) as http,
        ):
            orchestrator = Orchestrator(client, http, settings)
            state["app"] = orchestrator
            workers = [
                asyncio.create_task(
                    replay_outbox(
                        orchestrator.outbox,
                        orchestrator.sms_breaker,
                        orchestrator.sms,
                        interval_s=settings.sms_drain_interval_s,
                    )
                ),
                asyncio.create_task(
                    flush_supabase(orchestrator.supabase, interval_s=settings.supabase_flush_interval_s)
                ),
            ]
            _log.info(
                "orchestrator.started", breaker_urls=settings.breaker_urls, dependencies=settings.dependencies_url
            )
            try:
                yield
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    return Starlette(
        routes=[
            Route("/messages", messages, methods=["POST"]),
            Route("/stats", stats),
            Route("/health", health),
        ],
        middleware=[Middleware(CorrelationMiddleware)],
        lifespan=lifespan,
    )
