"""structlog set-up and the request-context middleware: correlation ids and the access-log policy.

Every log line is JSON with timestamp, level, event and the request's correlation_id (plus `breaker` once a route
binds it). The middleware is also the last resort for errors nothing else handled: it answers the contract's error
body (500, no traceback) and logs the exception, so the client always gets the correlation id back.

Access lines (`event: request`) are what a busy replica would write most, so `AccessLog` writes only those that say
something: every error answer (4xx WARNING, 5xx ERROR) and every admin action (INFO), always; other requests only
as a sample, `BREAKER_ACCESS_LOG_SAMPLE` of them (default 0: none; 1: all). A denied acquire is not an error, so
`DenialLog` writes one line per breaker per second at most, with the count since the previous one; transitions are
logged by the app's transition watch.

A client that goes away mid-request is one INFO line (status 499, never sent). An admin action's line carries
`action`, `actor`, `breaker` and `reason`.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import secrets
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import msgspec
import structlog
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from breaker_client.protocol.catalogue import ErrorCode
from breaker_service.errors import ServiceError
from breaker_service.responses import MsgspecResponse, error_body, error_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from structlog.typing import EventDict

HEADER: Final = "X-Correlation-ID"
DENIAL_INTERVAL_S: Final = 1.0
CLIENT_CLOSED: Final = 499
"""The status the request line shows when the client went away mid-request (nginx's convention); never sent."""
_VALID_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_LOG_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)

log = structlog.get_logger("breaker_service.http")


def _serialize(event: Any, **_: Any) -> bytes:
    return _LOG_ENCODER.encode(event)


def _with_correlation_id(_: Any, __: str, event: EventDict) -> EventDict:
    # Lines outside a request (startup, the transition watch) carry the key too, as null.
    event.setdefault("correlation_id", None)
    return event


def configure_logging(level: str = "INFO", *, cache: bool = True, stream: BinaryIO | None = None) -> None:
    """JSON lines on stdout (or `stream`), the structlog production config; pass `cache=False` in tests."""
    structlog.configure(
        cache_logger_on_first_use=cache,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[
            structlog.contextvars.merge_contextvars,
            _with_correlation_id,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        logger_factory=structlog.BytesLoggerFactory(stream),
    )


def current_correlation_id() -> str | None:
    """The correlation id of the request being served, if any."""
    return _correlation_id.get()


def pick_correlation_id(presented: str | None) -> str:
    """The presented id when it is sane (1-128 chars of `A-Za-z0-9._:-`), else a fresh one."""
    if presented is not None and _VALID_ID.fullmatch(presented):
        return presented
    return _fresh_id()


def _fresh_id() -> str:
    # 32 hex digits like a uuid4's, unique without a random read per request: a random prefix per process (drawn
    # again in a forked child) and a counter.
    return f"{_ids.prefix}{next(_ids.counter):016x}"


class _Ids:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(secrets.randbits(32))


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def begin_request(presented: str | None, **bound: Any) -> str:
    """Pick the request's correlation id and bind it (and `bound`) for every line logged while it is served."""
    correlation_id = pick_correlation_id(presented)
    _correlation_id.set(correlation_id)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id, **bound)
    return correlation_id


class AccessLog:
    """Which requests get an access line: errors and admin actions always, the rest as a `sample` (0 to 1)."""

    def __init__(self, sample: float = 0.0, *, audited: Callable[[Scope], bool] | None = None) -> None:
        self.sample = sample
        self._audited = audited

    def finish(self, scope: Scope, status: int, started: float) -> None:
        """Write the request's line if the policy asks for it; `started` is its `time.perf_counter()`."""
        if status < 400 and not self._wanted(scope):
            return
        _canonical_line(status)(
            "request",
            method=scope["method"],
            path=scope["path"],
            route=route_template(scope),
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _wanted(self, scope: Scope) -> bool:
        if self._audited is not None and self._audited(scope):
            return True
        return self.sample >= 1.0 or (self.sample > 0.0 and random.random() < self.sample)


class DenialLog:
    """Denied acquires, logged at most once per breaker per `interval_s` with the count since the last line.

    The count of denials after a breaker's last line waits for its next denial (a storm that stops leaves its tail
    unlogged; the metrics count every one). Memory is one entry per breaker, bounded by the breaker cap.
    """

    def __init__(self, interval_s: float = DENIAL_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last_line: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def denied(self, name: str, **facts: Any) -> None:
        """Count one denial of `name`; log it (with `facts`) unless a line for `name` went out within the interval."""
        now = self._clock()
        count = self._unlogged.pop(name, 0) + 1
        last = self._last_line.get(name)
        if last is not None and now - last < self._interval_s:
            self._unlogged[name] = count
            return
        self._last_line[name] = now
        log.info("calls denied", breaker=name, denied=count, **facts)


class RequestContextMiddleware:
    """Binds the correlation id, echoes it on every answer, and writes the access line `access_log` asks for."""

    def __init__(self, app: ASGIApp, *, access_log: AccessLog | None = None) -> None:
        self.app = app
        self.access_log = access_log if access_log is not None else AccessLog(1.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = begin_request(Headers(scope=scope).get(HEADER))
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", correlation_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away before its body arrived whole: nothing to answer, and not our failure.
            status = CLIENT_CLOSED
            log.info("client disconnected before its request body arrived whole")
        except Exception as exc:
            if isinstance(exc, ServiceError):
                response = error_response(exc, correlation_id)
            else:
                log.error("unhandled exception", exc_info=exc)
                response = internal_error_response(correlation_id)
            if not response_started:  # else the answer is under way and this connection can say no more
                await response(scope, receive, send_with_id)
        finally:
            self.access_log.finish(scope, status, started)


def internal_error_response(correlation_id: str | None) -> MsgspecResponse:
    """500 with the contract's body and no traceback."""
    # The catalogue has no code of its own for a bug; ORC_005 tells a client to back off and retry.
    return MsgspecResponse(error_body(ErrorCode.UNAVAILABLE, "internal error", correlation_id), status_code=500)


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/breakers/{name}`), or `<unmatched>`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


def _canonical_line(status: int) -> Any:
    if status == CLIENT_CLOSED:
        return log.info
    if status >= 500:
        return log.error
    return log.warning if status >= 400 else log.info
