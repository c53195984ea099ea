"""Hostile clients against a real server process (uvicorn with breaker_service/server_limits.py), on both stores.

The bound these tests hold: while the attacks run, every concurrent acquire from a well-behaved client is
answered, and within the client timeout (httpx raises after `ANSWER_BOUND_S`); every hostile connection is
answered with the contract's error or closed by the server (a read that outlasts `HANG_GUARD_S` fails the test:
it would mean the server holds the connection for ever). Latencies are measured by scripts/bench_hostile.py, not
asserted here. Stored state is compared before and after, as in tests/test_hostile.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx
import msgspec
import pytest
import redis.asyncio

from tests.fixtures.process import HOST
from tests.fixtures.service import CLIENT_HEADERS, ServiceFactory, ServiceProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable

CLIENT_TIMEOUT_S: Final = 3.0
"""BREAKER_CLIENT_TIMEOUT_S for these servers: short, so slow clients are cut within the test."""
ANSWER_BOUND_S: Final = 30.0
"""A concurrent request must be answered within this (the default client timeout): answered, not hung."""
HANG_GUARD_S: Final = 120.0
BYSTANDER: Final = "bystander"


@dataclass(frozen=True)
class Target:
    """A replica with a short client timeout, and the Redis it runs on (None: the memory store)."""

    service: ServiceProcess
    redis_url: str | None

    @property
    def port(self) -> int:
        return int(self.service.url.rsplit(":", 1)[1])


@pytest.fixture(params=["memory", "redis"])
def target(request: pytest.FixtureRequest, service_factory: ServiceFactory) -> Target:
    """A replica on the memory store, then on a flushed Redis."""
    url: str | None = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # flushes the database
    service = service_factory(url, env={"BREAKER_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S)})
    with httpx.Client(base_url=service.url, headers=CLIENT_HEADERS) as http:  # before any fingerprint
        assert http.post(f"/breakers/{BYSTANDER}/acquire", json={}).status_code == 200
    return Target(service, url)


async def fingerprint(target: Target) -> tuple[object, ...]:
    """The breakers (but the bystander the prober uses), and every Redis key but the bystander's and the mode's."""
    async with httpx.AsyncClient(base_url=target.service.url, headers=CLIENT_HEADERS) as http:
        listed = (await http.get("/breakers")).json()["breakers"]
    breakers = [b for b in listed if b["name"] != BYSTANDER]
    keys: dict[bytes, object] = {}
    url = target.redis_url
    if url is not None:
        client = redis.asyncio.Redis.from_url(url)
        found: list[bytes] = await client.keys("*")  # type: ignore[assignment]
        for key in sorted(found):
            if b"{bystander}" not in key and not key.startswith(b"brk:{_mode}"):
                keys[key] = await client.dump(key)
        await client.aclose()
    return breakers, keys


@contextlib.asynccontextmanager
async def prober(target: Target) -> AsyncIterator[list[float]]:
    """Acquires on the bystander, one after another, until the block ends; yields their latencies (seconds)."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        async with httpx.AsyncClient(
            base_url=target.service.url, headers=CLIENT_HEADERS, timeout=ANSWER_BOUND_S
        ) as http:
            loop = asyncio.get_running_loop()
            while not stop.is_set() or len(latencies) < 3:
                started = loop.time()
                response = await http.post(f"/breakers/{BYSTANDER}/acquire", json={})
                assert response.status_code == 200, response.text
                latencies.append(loop.time() - started)

    task = asyncio.create_task(probe())
    try:
        yield latencies
    finally:
        stop.set()
        await task  # raises if an acquire failed or outlasted ANSWER_BOUND_S


async def exchange(target: Target, request: bytes | list[bytes], *, pause_s: float = 0.0) -> bytes:
    """Send `request` (pieces `pause_s` apart) on a fresh connection, then read until the server closes it."""
    reader, writer = await asyncio.open_connection(HOST, target.port)
    try:
        for piece in [request] if isinstance(request, bytes) else request:
            writer.write(piece)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        answer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), timeout=HANG_GUARD_S):
                answer += chunk
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_and_error(answer: bytes) -> tuple[int, str] | None:
    """(status, ORC code) of an HTTP answer with the contract's body; None for no answer (connection closed)."""
    if not answer:
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split(b" ")[1]), msgspec.json.decode(body)["error"]["code"]


async def gather(*calls: Awaitable[bytes]) -> list[bytes]:
    return list(await asyncio.gather(*calls))


async def test_oversized_request_heads_are_refused_and_stall_nobody(target: Target) -> None:
    before = await fingerprint(target)
    huge_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024 * 1024) + b"\r\n\r\n"
    many_headers = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X: 1\r\n" * 100_000 + b"\r\n"
    long_target = b"GET /breakers/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    one_read = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"

    async with prober(target) as latencies:
        answers = await gather(*(exchange(target, r) for r in (huge_header, many_headers, long_target, one_read)))

    # 431 with the contract's body, or closed: the server stops reading at the limit, and a close with unread
    # bytes may reach the client as a reset before the 431 does. A head that arrived whole gets its 431.
    for answer in answers:
        assert status_and_error(answer) in {(431, "ORC_001"), None}
    assert status_and_error(answers[3]) == (431, "ORC_001")
    assert latencies
    assert await fingerprint(target) == before


async def test_slow_and_idle_clients_are_cut_and_stall_nobody(target: Target) -> None:
    before = await fingerprint(target)
    auth = CLIENT_HEADERS["Authorization"].encode()
    head = b"POST /breakers/victim/record HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
    head += auth + b"\r\n"
    slow_head = [head[:10], head[10:20], head[20:30]]  # never finished
    slow_body = [head + b"Content-Length: 100\r\n\r\n", b'{"outcome": ']  # 100 bytes announced, 12 sent

    async with prober(target) as latencies:
        answers = await gather(
            *(exchange(target, b"") for _ in range(10)),  # idle: connected, nothing sent
            *(exchange(target, slow_head, pause_s=0.5) for _ in range(10)),
            *(exchange(target, slow_body, pause_s=0.5) for _ in range(5)),
        )

    for answer in answers[:10]:  # idle: nothing sent, so nothing can turn the close into a reset
        assert status_and_error(answer) == (408, "ORC_001")
    for answer in answers[10:20]:  # 408, or closed (a byte sent after the close is answered with a reset)
        assert status_and_error(answer) in {(408, "ORC_001"), None}
    for answer in answers[20:]:  # the app was reading the body: the connection is closed, nothing stored
        assert answer == b""
    assert latencies
    assert await fingerprint(target) == before


async def test_server_level_errors_are_json(target: Target) -> None:
    garbage = await exchange(target, b"NOT HTTP AT ALL\r\n\r\n")
    slash = await exchange(target, b"GET /breakers/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")

    assert status_and_error(garbage) == (400, "ORC_001")
    assert status_and_error(slash) == (404, "ORC_009")
    assert b"location:" not in slash.lower()


async def test_dev_mode_says_so_on_stderr(service_factory: ServiceFactory) -> None:
    service = service_factory(None, env={"BREAKER_CLIENT_TOKENS": ""})

    assert "BREAKER_CLIENT_TOKENS is unset" in service.stderr_path.read_text()
