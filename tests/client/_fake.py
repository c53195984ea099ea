"""A scripted stand-in for the service on `httpx.MockTransport`: for answers the real one never gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import msgspec

from breaker_client import BreakerConfig, Decision, Snapshot, State
from breaker_client.protocol.models import Counts

Handler = Callable[[httpx.Request], httpx.Response]


def snapshot(name: str, *, generation: int = 1, consecutive_failures: int = 0, state: State = State.CLOSED) -> Snapshot:
    return Snapshot(
        name=name,
        state=state,
        machine_state=state,
        forced=None,
        force=None,
        generation=generation,
        consecutive_failures=consecutive_failures,
        consecutive_successes=0,
        opened_at=None,
        retry_after_s=None,
        config=BreakerConfig(failure_threshold=3),
        counts=Counts(),
    )


def sse(event: str, data: str | bytes | msgspec.Struct, event_id: str = "1") -> bytes:
    payload = data if isinstance(data, bytes) else data.encode() if isinstance(data, str) else msgspec.json.encode(data)
    return b"id: " + event_id.encode() + b"\nevent: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def allowed(generation: int = 1) -> httpx.Response:
    return httpx.Response(
        200, content=msgspec.json.encode(Decision(allowed=True, state=State.CLOSED, generation=generation))
    )


def error(status: int, code: str) -> httpx.Response:
    body = {"error": {"code": code, "message": f"scripted {code}", "correlation_id": "fake", "details": None}}
    return httpx.Response(status, json=body)


@dataclass
class FakeService:
    """Answers `/events` with `stream` (first connection; later ones `later`, then idle), everything else with
    `handler`."""

    stream: list[bytes] = field(default_factory=list)
    later: list[bytes] = field(default_factory=list)
    handler: Handler = field(default=lambda request: allowed())
    requests: list[httpx.Request] = field(default_factory=list)
    connections: int = 0

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            self.connections += 1
            chunks = self.stream if self.connections == 1 else self.later
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=_then_idle(chunks))
        self.requests.append(request)
        return self.handler(request)

    def to(self, suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(suffix)]


async def _then_idle(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    await asyncio.Event().wait()
    yield b""  # never reached; makes this an async generator even without chunks
