"""`python -m breaker_service`: serve on BREAKER_HOST:BREAKER_PORT with uvicorn.

A bad setting or config file ends the process with one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.parse
from typing import TYPE_CHECKING

import uvicorn

from breaker_service.app import context_of, create_app
from breaker_service.config import ConfigError
from breaker_service.logs import configure_logging
from breaker_service.settings import Settings, SettingsError

if TYPE_CHECKING:
    import socket
    from types import FrameType

    from starlette.applications import Starlette


class _Server(uvicorn.Server):
    """uvicorn, plus: the first shutdown signal also ends the app's event streams, so their connections close."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._stopping = context_of(app).stopping
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        super().handle_exit(sig, frame)


def main() -> int:
    """Read settings and config, then serve until SIGINT/SIGTERM."""
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        app = create_app(settings)
    except (SettingsError, ConfigError) as exc:
        print(f"breaker-service: {exc}", file=sys.stderr)
        return 2
    store = "memory (one replica only)"
    if settings.redis_url is not None:
        where = urllib.parse.urlsplit(settings.redis_url)  # never print the password
        store = f"redis ({where.scheme}://{where.hostname}:{where.port or 6379})"
    print(f"breaker-service: store {store}, serving on http://{settings.host}:{settings.port}", file=sys.stderr)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the app writes one JSON line per request itself
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    server = _Server(config, app)
    server.run()
    return 0 if server.started else 3  # the lifespan refused to start (e.g. Redis may evict keys)


if __name__ == "__main__":
    sys.exit(main())
