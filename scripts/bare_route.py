"""The floor for scripts/bench_service.py: one bare Starlette route on uvicorn (uvloop + httptools, no access log)
that answers acquire's Decision JSON, encoded per request, with nothing else in the way.

    python scripts/bare_route.py PORT
"""

from __future__ import annotations

import itertools
import sys
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from breaker_client.protocol.models import JSON_ENCODER, Decision, State

if TYPE_CHECKING:
    from starlette.requests import Request

_PERMITS = itertools.count(1)


async def acquire(request: Request) -> Response:
    await request.body()
    decision = Decision(allowed=True, state=State.CLOSED, generation=1, permit=f"1-{next(_PERMITS)}")
    return Response(JSON_ENCODER.encode(decision), media_type="application/json")


app = Starlette(routes=[Route("/breakers/{name}/acquire", acquire, methods=["POST"])])


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
