"""The Starlette app: `create_app(settings)`, its routes, error handlers and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from breaker_client.protocol.catalogue import ErrorCode
from breaker_service.auth import Authenticator
from breaker_service.config import ConfigResolver, ServiceConfig, load_config
from breaker_service.context import AppContext
from breaker_service.errors import ServiceError
from breaker_service.hot_path import ServiceApp, is_admin_action
from breaker_service.logs import AccessLog, RequestContextMiddleware, configure_logging, current_correlation_id
from breaker_service.metrics import LatencyMiddleware, Metrics
from breaker_service.middleware import BodyLimitMiddleware, JsonBodyMiddleware
from breaker_service.monitor import HealthMonitor
from breaker_service.responses import MsgspecResponse, error_body, error_response
from breaker_service.routes import audit, breakers, degradation, events, health, meta
from breaker_service.routes import queues as queue_routes
from breaker_service.settings import Settings
from breaker_service.store.breaker_memory import MemoryStore
from breaker_service.store.queue_base import QueueBounds, QueueLimits
from breaker_service.store.queue_memory import MemoryQueueStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from breaker_service.store.breaker_base import BreakerStore
    from breaker_service.store.connection_redis import RedisClient
    from breaker_service.store.queue_base import QueueStore
    from breaker_service.store.scripts_redis import TransitionHook

log = structlog.get_logger("breaker_service")

_HTTP_CODES = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.TOO_LARGE,
    503: ErrorCode.UNAVAILABLE,
}
"""Codes for Starlette's own HTTP errors; any other 4xx is ORC_001 (405 included), any other 5xx ORC_005."""


def create_app(
    settings: Settings,
    *,
    store: BreakerStore | None = None,
    config: ServiceConfig | None = None,
    queues: QueueStore | None = None,
) -> Starlette:
    """The service: on `store` and `queues` when given (tests), else on the stores `settings` name, built at
    startup (queues beside a given store are in memory without REDIS_URL)."""
    config = config if config is not None else load_config(settings.config_path)
    auth = Authenticator(admin_tokens=settings.admin_tokens, client_tokens=settings.client_tokens)
    ctx = AppContext(settings=settings, config=config, auth=auth, metrics=Metrics(), store=store, queues=queues)
    access_log = AccessLog(settings.access_log_sample, audited=is_admin_action)
    app = ServiceApp(
        access_log=access_log,
        max_body_bytes=settings.max_body_bytes,
        routes=[
            *breakers.ROUTES,
            *events.ROUTES,
            *health.ROUTES,
            *meta.ROUTES,
            *queue_routes.ROUTES,
            *degradation.ROUTES,
            *audit.ROUTES,
        ],
        middleware=[
            Middleware(RequestContextMiddleware, access_log=access_log),
            Middleware(LatencyMiddleware, metrics=ctx.metrics),
            Middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes),
            Middleware(JsonBodyMiddleware),
        ],
        exception_handlers={ServiceError: on_service_error, HTTPException: on_http_exception},
        lifespan=lifespan,
    )
    # A trailing slash is a 404 like any unknown path: Starlette's redirect would build its Location from the Host
    # header the client sent.
    app.router.redirect_slashes = False
    app.state.context = ctx
    return app


def build_store(
    settings: Settings,
    config: ServiceConfig,
    redis: RedisClient | None = None,
    *,
    on_transition: TransitionHook | None = None,
) -> BreakerStore:
    """MemoryStore without REDIS_URL; else RedisStore (on `redis` when given), wrapped to keep answering while Redis
    is unreachable. `on_transition` hears each transition this replica's scripts make (Redis only)."""
    resolve = ConfigResolver(config)
    if settings.redis_url is None:
        return MemoryStore(resolve_config=resolve, max_breakers=settings.max_breakers, auto_create=settings.auto_create)
    # Imported here: the Redis modules are not needed (nor loaded) on the memory store.
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.breaker_resilient import ResilientStore
    from breaker_service.store.connection_redis import create_redis

    client = (
        redis
        if redis is not None
        else create_redis(settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.store_timeout_s)
    )
    shared = RedisStore(
        client,
        resolve_config=resolve,
        max_breakers=settings.max_breakers,
        auto_create=settings.auto_create,
        min_replicas=settings.admin_min_replicas,
        replica_wait_s=settings.store_timeout_s / 2,  # WAIT answers within the command timeout
        on_transition=on_transition,
    )
    return ResilientStore(
        shared, resolve_config=resolve, max_breakers=settings.max_breakers, timeout_s=settings.store_timeout_s
    )


def build_queues(settings: Settings, config: ServiceConfig, redis: RedisClient | None = None) -> QueueStore:
    """MemoryQueueStore without REDIS_URL; else RedisQueueStore on `redis` (the breaker store's), or on its own."""
    limits = QueueLimits({name: queue.max_attempts for name, queue in config.queues.items()})
    bounds = QueueBounds(max_jobs=settings.queue_max_jobs, max_claim_bytes=settings.max_body_bytes)
    if settings.redis_url is None:
        return MemoryQueueStore(max_attempts=limits, bounds=bounds)
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.queue_redis import RedisQueueStore

    client = (
        redis
        if redis is not None
        else create_redis(settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.store_timeout_s)
    )
    return RedisQueueStore(
        client,
        max_attempts=limits,
        owns_client=redis is None,
        bounds=bounds,
        timeout_s=settings.store_timeout_s,
    )


def shared_redis(settings: Settings) -> RedisClient | None:
    """One Redis client for the breaker store and the queues (None without REDIS_URL)."""
    if settings.redis_url is None:
        return None
    from breaker_service.store.connection_redis import create_redis

    return create_redis(settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.store_timeout_s)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Build and start the stores, declare the config-file breakers, watch transitions; undo it all at shutdown."""
    ctx = context_of(app)
    redis = shared_redis(ctx.settings) if not (ctx.has_store or ctx.has_queues) else None
    if not ctx.has_store:
        ctx.use_store(build_store(ctx.settings, ctx.config, redis, on_transition=ctx.metrics.transition))
    if not ctx.has_queues:
        ctx.use_queues(build_queues(ctx.settings, ctx.config, redis))
    store = ctx.store
    if store.kind == "memory":
        log.warning("store: in memory, state is lost on restart; run ONE replica only (set REDIS_URL to share)")
    else:
        log.info("store: redis", cluster=ctx.settings.redis_cluster)
    if ctx.settings.client_tokens is None:
        log.warning(
            "DEVELOPMENT MODE: BREAKER_CLIENT_TOKENS is unset, so client and reader routes (acquire, record, queues,"
            " every read) are OPEN to anyone who can reach this port; set BREAKER_CLIENT_TOKENS in production"
        )
    if not ctx.settings.admin_tokens:
        log.warning("no BREAKER_ADMIN_TOKENS: admin routes refuse every request")
    await store.start()
    await ctx.queues.start()
    try:
        await refuse_eviction(store, ctx.settings)
        for name, declared in ctx.config.breakers.items():
            await store.declare(name, declared.config)
        log.info("config loaded", source=ctx.config.source, declared=len(ctx.config.breakers))
        ctx.use_monitor(HealthMonitor(store, ctx.config, ctx.hub))
        async with ctx.hub.running(store), watch_transitions(ctx), ctx.monitor.running():
            try:
                yield
            finally:
                ctx.stopping.set()
    finally:
        await ctx.queues.close()
        await store.close()


class EvictionError(RuntimeError):
    """Redis may evict keys (a force, a breaker) under memory pressure, and BREAKER_ALLOW_EVICTION is not set."""


async def refuse_eviction(store: BreakerStore, settings: Settings) -> None:
    """Refuse to start on a Redis whose `maxmemory-policy` may evict keys (unless allowed); unreachable: no check."""
    policy_of = getattr(store, "eviction_policy", None)
    if policy_of is None:
        return
    try:
        policy: str = await policy_of()
    except ServiceError as exc:
        log.warning("could not read Redis maxmemory-policy", error=exc.message)
        return
    if policy == "noeviction":
        return
    if not settings.allow_eviction:
        raise EvictionError(
            f"Redis maxmemory-policy is {policy!r}: it may evict a force or a breaker under memory pressure; "
            "set it to noeviction, or BREAKER_ALLOW_EVICTION=true to start anyway"
        )
    log.warning("Redis may evict keys (BREAKER_ALLOW_EVICTION=true)", maxmemory_policy=policy)


@contextlib.asynccontextmanager
async def watch_transitions(ctx: AppContext) -> AsyncIterator[None]:
    """Log every transition on the events channel (on Redis every replica sees every transition)."""
    # On the memory store every transition is this replica's own; on Redis the scripts' replies count them.
    counted = ctx.metrics if ctx.store.kind == "memory" else None
    task = asyncio.create_task(events.watch_transitions(ctx.hub, counted), name="transition-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def context_of(app: Starlette) -> AppContext:
    """The app's `AppContext`."""
    ctx: AppContext = app.state.context
    return ctx


async def on_service_error(request: Request, exc: Exception) -> Response:
    """A `ServiceError`: its code, status and details."""
    if not isinstance(exc, ServiceError):
        raise exc
    return error_response(exc, current_correlation_id())


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404/405 from routing): the contract's body; 405 lists every allowed method."""
    if not isinstance(exc, HTTPException):
        raise exc
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.VALIDATION if exc.status_code < 500 else ErrorCode.UNAVAILABLE)
    headers = dict(exc.headers or {})
    details = None
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        details = {"allowed": allowed}
    message = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, exc.detail)
    body = error_body(code, message, current_correlation_id(), details)
    return MsgspecResponse(body, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (one path may be spread over several routes)."""
    path = request.url.path
    return sorted(
        {m for r in request.app.routes if isinstance(r, Route) and r.path_regex.match(path) for m in r.methods or ()}
    )


def main_app() -> Starlette:
    """`uvicorn --factory breaker_service.app:main_app`: settings from the environment, JSON logs."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
