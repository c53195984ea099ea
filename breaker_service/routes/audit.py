"""`GET /audit`: the admin actions on breakers, newest first (the `brk:audit` stream on Redis).

A reader route, like history: an on-call engineer with a client token must be able to see who did what. Entries
name the token (its name, never the secret) and carry the reason the admin gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.routing import Route

from breaker_service.auth import Role
from breaker_service.context import context
from breaker_service.responses import MsgspecResponse
from breaker_service.routes.common import Limit, operation, query_value
from breaker_service.store.audit import AUDIT_DEFAULT_LIMIT, AuditTrail

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


@operation("Admin actions on breakers, newest first", role=Role.CLIENT, answer=AuditTrail, query={"limit": Limit})
async def audit(request: Request) -> Response:
    limit: int = query_value(request, "limit", Limit, AUDIT_DEFAULT_LIMIT)
    return MsgspecResponse(AuditTrail(entries=await context(request).store.audit(limit=limit)))


ROUTES: Final = [Route("/audit", audit, methods=["GET"])]
