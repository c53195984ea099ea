"""The real service app served by uvicorn in this process, plus a transport that records what the client sends.

The listening socket is bound and listening before uvicorn starts, so a client may connect at once (the kernel
queues it): no polling for readiness. The memory store and the client share one fake clock, so OPEN timeouts
pass when a test says so, not after a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx
import msgspec
import uvicorn

from breaker_client import BreakerConfig
from breaker_service.app import context_of, create_app
from breaker_service.config import ConfigResolver, ServiceConfig
from breaker_service.settings import Settings
from breaker_service.store.breaker_memory import MemoryStore
from breaker_service.store.queue_memory import MemoryQueueStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

HOST: Final = "127.0.0.1"
ADMIN_TOKEN: Final = "client-tests-admin-token"
CLIENT_TOKEN: Final = "client-tests-client-token"
TEST_CONFIG: Final = BreakerConfig(
    failure_threshold=3, open_timeout_s=30.0, success_threshold=1, half_open_max_calls=1, permit_ttl_s=30.0
)


class FakeClock:
    """Wall milliseconds for the service's store, monotonic seconds for the client: one value, moved by hand."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def wall_ms(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


class ServiceHarness:
    """One service app on a fixed port; `stop()` takes it down (the port refuses), `start()` brings it back."""

    def __init__(self, clock: FakeClock, config: BreakerConfig = TEST_CONFIG) -> None:
        self.config = ServiceConfig(source="client tests", defaults=config)
        self.store = MemoryStore(resolve_config=ConfigResolver(self.config), clock=clock.wall_ms)
        self.queues = MemoryQueueStore(clock=clock.wall_ms)
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port: int = probe.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._app: Starlette | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        settings = Settings(
            host=HOST,
            port=self.port,
            admin_tokens={"test-admin": ADMIN_TOKEN},
            client_tokens={"test-client": CLIENT_TOKEN},
        )
        self._app = create_app(settings, store=self.store, config=self.config, queues=self.queues)
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only then (else Nagle adds 40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(128)
        config = uvicorn.Config(self._app, lifespan="on", log_config=None, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"service-{self.port}")

    async def stop(self) -> None:
        if self._server is None or self._task is None or self._app is None:
            return
        context_of(self._app).stopping.set()  # event streams end, so their connections close
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = self._app = None

    async def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """An admin request (force, delete, PUT config)."""
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response


@dataclass(frozen=True)
class Exchange:
    """One request the client sent (not counting the event stream) and the status it got."""

    method: str
    path: str
    body: Any
    headers: httpx.Headers
    status: int | None
    response_headers: httpx.Headers | None


@dataclass
class RecordingTransport(httpx.AsyncBaseTransport):
    """Sends through a real transport (or `inner`) and keeps every non-stream request."""

    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    exchanges: list[Exchange] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            return await self.inner.handle_async_request(request)
        body = msgspec.json.decode(request.content) if request.content else None
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.HTTPError:
            self.exchanges.append(Exchange(request.method, request.url.path, body, request.headers, None, None))
            raise
        self.exchanges.append(
            Exchange(request.method, request.url.path, body, request.headers, response.status_code, response.headers)
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def to(self, suffix: str) -> list[Exchange]:
        """The requests whose path ends with `suffix` (`/acquire`, `/record`)."""
        return [e for e in self.exchanges if e.path.endswith(suffix)]

    def clear(self) -> None:
        self.exchanges.clear()


def free_port_url() -> str:
    """A URL on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return f"http://{HOST}:{port}"
