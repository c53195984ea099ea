"""What every route shares: the `operation` decorator (auth, name check, OpenAPI facts) and request parsing.

Parsing errors become `InvalidRequestError` here, at the boundary: a body that is not JSON answers 400 ORC_001,
a body, path or query value that breaks the schema answers 422 ORC_001 with msgspec's path in `details`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, TypeVar

import msgspec
import structlog
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from breaker_client.protocol.models import NAME_PATTERN, Reason
from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.errors import InvalidRequestError
from breaker_service.idempotency import answer_once
from breaker_service.nesting import MAX_DEPTH, nests_deeper_than

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]

Name = Annotated[str, Meta(pattern=NAME_PATTERN)]
Limit = Annotated[int, Meta(ge=1, le=1000)]
REASON_QUERY: Final[Mapping[str, Any]] = {"reason": Reason}
_AT_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")


@dataclass(frozen=True)
class Operation:
    """The facts about an endpoint that auth and the OpenAPI document need."""

    summary: str
    role: Role | None
    body: type[Any] | None = None
    answer: type[Any] | None = None
    status: int = 200
    media_type: str = "application/json"
    query: Mapping[str, Any] = field(default_factory=dict)
    body_required: bool = True
    """False where an empty body means `{}` (acquire)."""
    alternatives: tuple[type[Any], ...] = ()
    """Other shapes the success answer takes (`?detail=true`)."""
    errors: tuple[int, ...] = ()
    """Error statuses beyond those every route of its kind may answer (`breaker_service.openapi`)."""
    other_answers: Mapping[int, type[Any]] = field(default_factory=dict)
    """Non-error bodies under other statuses (`/health/ready`'s 503)."""


OPERATIONS: dict[Callable[..., Any], Operation] = {}
"""Every decorated endpoint, for `breaker_service.openapi`."""


def operation(summary: str, *, role: Role | None, **facts: Any) -> Callable[[Endpoint], Endpoint]:
    """Declare an endpoint: check its role and its `{name}`, bind `actor`/`breaker` for the logs, then run it (an
    admin write once per `Idempotency-Key`, breaker_service/idempotency.py)."""

    known_query = frozenset(facts.get("query", {}))

    def decorate(handler: Endpoint) -> Endpoint:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            if role is not None:
                actor = context(request).auth.authorize(request.headers.get("authorization"), role)
                request.state.actor = actor
                if actor is not None:
                    structlog.contextvars.bind_contextvars(actor=actor)
            if "name" in request.path_params:
                name = _convert(request.path_params["name"], Name, "path", "name")
                structlog.contextvars.bind_contextvars(breaker=name)
            unknown = sorted(set(request.query_params) - known_query)
            if unknown:  # like an unknown body field: a typo must not pass silently
                raise InvalidRequestError(
                    f"unknown query parameter {unknown[0]!r}",
                    details={"location": "query", "path": unknown[0], "allowed": sorted(known_query)},
                )
            if role is Role.ADMIN:  # the request line is the action's one INFO line
                structlog.contextvars.bind_contextvars(action=handler.__name__.replace("_", "-"))
                return await answer_once(request, actor_of(request), handler)
            return await handler(request)

        OPERATIONS[guarded] = Operation(summary, role, **facts)
        return guarded

    return decorate


def actor_of(request: Request) -> str | None:
    """The name of the token the request presented (None when anonymous)."""
    actor: str | None = getattr(request.state, "actor", None)
    return actor


def name_of(request: Request) -> str:
    """The `{name}` path parameter, already checked against NAME_PATTERN by `operation`."""
    name: str = request.path_params["name"]
    return name


def query_value(request: Request, key: str, kind: Any, default: Any) -> Any:
    """A query parameter converted and checked against `kind`, or `default` when absent."""
    raw = request.query_params.get(key)
    return default if raw is None else _convert(raw, kind, "query", key)


def query_list(request: Request, key: str, kind: Any) -> Any:
    """A comma-separated query parameter converted and checked against `kind` (a list type), or None when absent."""
    raw = request.query_params.get(key)
    if raw is None:
        return None
    try:
        return msgspec.convert(raw.split(","), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"bad query parameter {key!r}: {exc}", details={"location": "query", "path": key}
        ) from None


def audit_reason(request: Request) -> str | None:
    """The optional `?reason=` of PUT and DELETE, bound into the log line."""
    reason: str | None = query_value(request, "reason", Reason, None)
    if reason is not None:
        structlog.contextvars.bind_contextvars(reason=reason)
    return reason


async def read_body(request: Request, decoder: msgspec.json.Decoder[T], *, empty: bytes | None = None) -> T:
    """The body decoded by `decoder`; `empty` stands in for a body of zero bytes when given.

    A body nested deeper than `MAX_DEPTH` is refused before decoding (400); `RecursionError` is caught as well, for
    an unbalanced body the depth check lets through to the decoder.
    """
    body = await request.body()
    if empty is not None and not body.strip():
        body = empty
    if nests_deeper_than(body):
        raise _not_json(f"arrays and objects nest deeper than {MAX_DEPTH} levels", max_depth=MAX_DEPTH)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, "body") from None
    except msgspec.DecodeError as exc:
        raise _not_json(str(exc)) from None
    except RecursionError:
        raise _not_json(f"arrays and objects nest deeper than {MAX_DEPTH} levels", max_depth=MAX_DEPTH) from None


def _not_json(why: str, **details: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"the body is not valid JSON: {why}", status=400, details={"location": "body", **details}
    )


def convert_body(value: Any, kind: type[T]) -> T:
    """Check an already-decoded body against `kind` (for bodies merged over defaults first)."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, "body") from None


def _convert(value: str, kind: Any, location: str, key: str) -> Any:
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = _AT_PATH.sub("", str(exc))
        raise InvalidRequestError(
            f"bad {location} parameter {key!r}: {message}", details={"location": location, "path": key}
        ) from None


def _invalid(exc: msgspec.ValidationError, location: str) -> InvalidRequestError:
    found = _AT_PATH.search(str(exc))
    return InvalidRequestError(str(exc), details={"location": location, "path": found.group(1) if found else "$"})
