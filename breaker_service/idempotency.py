"""`Idempotency-Key` on admin writes (DESIGN.md v1.1): a retry after a 503 or a timeout is answered, not applied again.

A 503 on a write means "outcome unknown", so an admin retries; without a key the retry would force, reset or
configure again (a second audit and history entry, a force's TTL restarted). With a key:

- the first request claims the key, performs the write and keeps its answer (status and body) when it succeeded
  (2xx) or was applied without enough replicas confirming it (503 with `details.applied`: applying it again is
  what the key prevents), for `ANSWER_TTL_S` (24 h); any other failure (4xx, 5xx, an exception) frees the key;
- a retry with the same key and the same request gets the kept answer with `Idempotent-Replayed: true`, and nothing
  is applied again;
- the same key with another request answers 422 ORC_001; while the first request is still in flight, 409 ORC_003;
- a key that is not 1..255 visible ASCII characters answers 400 ORC_001, and nothing is claimed.

A key is scoped by the actor (the token's name), so two admins never collide, and tied to the request's fingerprint:
method, path, query parameters and the body as canonical JSON (keys sorted), so re-encoding the same body matches.
Entries live in the breaker store (`store/idempotency_base.py`): on Redis every replica answers a retry the same.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Final

import msgspec
import structlog
from starlette.responses import Response

from breaker_service.context import context
from breaker_service.errors import InvalidRequestError, NotReplicatedError, ServiceError, WorkflowError
from breaker_service.logs import current_correlation_id
from breaker_service.nesting import nests_deeper_than
from breaker_service.responses import error_response
from breaker_service.store.idempotency_base import Answered, Pending

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from breaker_service.store.idempotency_base import Entry, IdempotencyStore

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
_DETAILS: Final = {"header": IDEMPOTENCY_HEADER}

log = structlog.get_logger("breaker_service.idempotency")


async def answer_once(request: Request, actor: str | None, write: Callable[[Request], Awaitable[Response]]) -> Response:
    """`write(request)` once per Idempotency-Key (every call when the request carries none)."""
    key = _key_of(request)
    if key is None:
        return await write(request)
    entries = context(request).store.idempotency_store()
    scope = _scope(actor, key)
    pending = Pending(fingerprint=await _fingerprint(request), claim=secrets.token_hex(16))
    held = await entries.claim(scope, pending)
    if held is not None:
        return _replay(held, pending.fingerprint)
    applied = False
    try:
        response: Response = await write(request)
    except NotReplicatedError as exc:  # applied all the same: its answer is kept as a success's is
        response, applied = error_response(exc, current_correlation_id()), True
    except BaseException:
        await _release(entries, scope, pending)
        raise
    if not (applied or 200 <= response.status_code < 300):
        await _release(entries, scope, pending)
        return response
    answer = Answered(
        fingerprint=pending.fingerprint,
        status=response.status_code,
        body=bytes(response.body),
        media_type=response.headers.get("content-type"),
    )
    try:
        await entries.complete(scope, pending, answer)
    except ServiceError as exc:  # the write is applied: say so; the claim runs out after PENDING_TTL_S
        log.warning("could not keep the answer under its Idempotency-Key", error=exc.message)
    return response


def _key_of(request: Request) -> str | None:
    keys = request.headers.getlist(IDEMPOTENCY_HEADER)
    if not keys:
        return None
    if len(keys) > 1 or not _KEY.fullmatch(keys[0]):
        raise InvalidRequestError(
            f"the {IDEMPOTENCY_HEADER} header must be one value of 1 to 255 visible ASCII characters",
            status=400,
            details=_DETAILS,
        )
    return keys[0]


def _scope(actor: str | None, key: str) -> str:
    """A digest of the actor and the key: two admins' keys never meet, and no key's text reaches the store."""
    return hashlib.sha256(msgspec.json.encode([actor, key])).hexdigest()


async def _fingerprint(request: Request) -> str:
    query = sorted(request.query_params.multi_items())
    parts = [request.method, request.url.path, query, _canonical(await request.body()).decode("latin-1")]
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()


def _canonical(body: bytes) -> bytes:
    """The body as JSON with sorted keys; as it came when it is not JSON (the write then refuses it)."""
    if not body.strip() or nests_deeper_than(body):
        return body
    try:
        return msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except (msgspec.DecodeError, RecursionError):
        return body


def _replay(held: Entry, fingerprint: str) -> Response:
    if held.fingerprint != fingerprint:
        raise InvalidRequestError(
            f"this {IDEMPOTENCY_HEADER} was used for another request; use a new key for a new request",
            details=_DETAILS,
        )
    if not isinstance(held, Answered):
        raise WorkflowError(
            f"the request with this {IDEMPOTENCY_HEADER} is still in flight; retry once it is answered",
            details=_DETAILS,
        )
    structlog.contextvars.bind_contextvars(idempotent_replay=True)
    headers = {REPLAYED_HEADER: "true"}
    if held.media_type is not None:
        headers["content-type"] = held.media_type
    return Response(held.body, status_code=held.status, headers=headers)


async def _release(entries: IdempotencyStore, scope: str, pending: Pending) -> None:
    try:
        await entries.release(scope, pending)
    except ServiceError as exc:  # the write failed anyway; the claim runs out after PENDING_TTL_S
        log.warning("could not free an Idempotency-Key", error=exc.message)
