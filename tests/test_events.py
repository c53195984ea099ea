"""`GET /events`: a snapshot first, then every store event, keep-alives, and an end on disconnect or shutdown."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec
import pytest

from breaker_client.protocol.models import BreakerConfig, State
from breaker_service.app import context_of
from breaker_service.event_hub import EventHub
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.breaker_memory import MemoryStore
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.connection_redis import create_redis
from tests.fixtures.app import CLIENT, SEED_BREAKERS, assert_error, make_settings, running_app, store_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import httpx
    import redis.asyncio
    from starlette.applications import Starlette
    from starlette.types import Message


class EventStreamCall:
    """`GET /events` driven at the ASGI level (httpx's ASGITransport buffers whole answers, so cannot stream)."""

    def __init__(self, app: Starlette, headers: Mapping[str, str]) -> None:
        self._app = app
        self._scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "server": ("breaker.test", 80),
            "client": ("127.0.0.1", 50000),
        }
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._requested = False
        self._buffer = b""
        self.status: int | None = None
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._app(self._scope, self._receive, self._messages.put))

    def disconnect(self) -> None:
        self._gone.set()

    async def next_frame(self) -> bytes:
        """The next SSE frame (without its blank-line terminator); b"" once the answer has ended."""
        while b"\n\n" not in self._buffer:
            if self.ended:
                return b""
            message = await self._messages.get()
            if message["type"] == "http.response.start":
                self.status = message["status"]
            else:
                self._buffer += message.get("body", b"")
                self.ended = not message.get("more_body", False)
        frame, _, self._buffer = self._buffer.partition(b"\n\n")
        return frame

    async def next_event(self, kind: str) -> dict[str, str]:
        """The next frame of event `kind`, passing over other kinds (the health monitor's `mode` events come
        whenever the monitor settles, unordered with the changes a test makes)."""
        while True:
            frame = parse(await self.next_frame())
            if frame.get("event") == kind or not frame:
                return frame

    async def _receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}


def parse(frame: bytes) -> dict[str, str]:
    """An SSE frame's fields."""
    return dict(line.split(": ", 1) for line in frame.decode().splitlines())


@pytest.fixture
async def sse_app() -> AsyncIterator[Starlette]:
    """An app whose event streams send a keep-alive after 50 ms of quiet."""
    settings = make_settings(sse_keepalive_s=0.05)
    store = MemoryStore(resolve_config=lambda _: BreakerConfig())
    async with running_app(settings, store) as (app, _):
        yield app


async def test_events_open_with_a_snapshot_then_stream_changes(sse_app: Starlette) -> None:
    call = EventStreamCall(sse_app, CLIENT)
    call.start()
    snapshot = parse(await call.next_frame())
    assert call.status == 200
    assert snapshot["event"] == "snapshot"
    assert [b["name"] for b in msgspec.json.decode(snapshot["data"])["breakers"]] == list(SEED_BREAKERS)
    stream_id, seq = snapshot["id"].split("-")
    assert seq == "0"
    await store_of(sse_app).force("db", State.OPEN, reason="maintenance", ttl_s=None, actor="ops")
    state = parse(await call.next_frame())
    assert state["event"] == "state"
    assert state["id"] == f"{stream_id}-1"
    transition = msgspec.json.decode(state["data"])
    assert (transition["name"], transition["to"], transition["actor"]) == ("db", "OPEN", "ops")
    breaker = parse(await call.next_frame())
    assert breaker["event"] == "breaker", "each transition is followed by the breaker's snapshot"
    assert breaker["id"] == f"{stream_id}-2"
    snapshot_after = msgspec.json.decode(breaker["data"])
    assert (snapshot_after["name"], snapshot_after["forced"], snapshot_after["generation"]) == (
        "db",
        "OPEN",
        transition["generation"],
    )
    await store_of(sse_app).delete("db", actor="ops", reason="gone")
    deleted = parse(await call.next_frame())
    assert (deleted["event"], deleted["data"]) == ("deleted", '{"name":"db"}')
    call.disconnect()
    assert call.task is not None
    await call.task


async def test_events_send_keepalive_comments(sse_app: Starlette) -> None:
    call = EventStreamCall(sse_app, CLIENT)
    call.start()
    await call.next_frame()
    assert await call.next_frame() == b": keepalive"
    call.disconnect()
    assert call.task is not None
    await call.task


async def test_events_end_when_the_server_stops(sse_app: Starlette) -> None:
    call = EventStreamCall(sse_app, CLIENT)
    call.start()
    await call.next_frame()
    context_of(sse_app).stopping.set()
    while await call.next_frame():
        pass
    assert call.ended
    assert call.task is not None
    await call.task


async def test_events_need_the_reader_role(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/events"), 401, "ORC_007")


async def test_every_stream_shares_the_replicas_one_redis_subscription(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    store = RedisStore(create_redis(redis_url), resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store) as (app, _):
        first = [EventStreamCall(app, CLIENT) for _ in range(10)]
        second = [EventStreamCall(app, CLIENT) for _ in range(20)]
        opened: list[list[str]] = []
        held: list[int] = []
        for calls in (first, second):
            for call in calls:
                call.start()
            opened.append([parse(await call.next_frame())["event"] for call in calls])
            held.append(await subscribers(redis_client))
        await store.force("db", State.OPEN, reason="maintenance", ttl_s=None, actor="ops")
        states = [(await call.next_event("state")).get("event") for call in first + second]
        for call in first + second:
            call.disconnect()
            assert call.task is not None
            await call.task

    assert opened == [["snapshot"] * 10, ["snapshot"] * 20]
    assert states == ["state"] * 30
    assert held[0] == held[1] <= 2, "streams share the hub's subscription (plus the health monitor's)"


async def test_a_listener_that_falls_behind_is_cut_off() -> None:
    store = MemoryStore(resolve_config=lambda _: BreakerConfig())
    hub = EventHub(backlog=2)
    async with hub.running(store):
        await asyncio.wait_for(hub.live.wait(), timeout=5)
        with hub.listening() as slow, hub.listening() as keeping_up:
            for attempt in range(3):
                await store.force("db", State.OPEN, reason=f"drill {attempt}", ttl_s=None, actor="ops")
                assert (await keeping_up.get()) is not None  # the hub handed the event out to both

            received = [slow.get_nowait() for _ in range(slow.qsize())]

    assert len(received) == 3
    assert received[-1] is None, "the third event found the slow listener's backlog full"


async def subscribers(client: redis.asyncio.Redis) -> int:
    [(_, count)] = await client.pubsub_numsub(EVENTS_CHANNEL)
    return int(count)
