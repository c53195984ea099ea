"""The Python load generators scripts/bench_service.py falls back on when `wrk` or `redis-benchmark` is missing.

They run in the benchmark's own process on the same machine, so their cost is part of the figures: compare only
figures taken with the same generator.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Final, cast

import redis.asyncio

from breaker_client.protocol.machine import new_permit
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.keys import breaker_keys
from breaker_service.store.scripts_redis import SOURCES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HOST: Final = "127.0.0.1"
Figures = tuple[int, float, float, float]
"""(requests, per second, p50 ms, p99 ms)."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: just enough client to POST JSON (httpx would measure itself)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> int:
        """POST `body` as JSON; the status of the answer (its body is read and dropped)."""
        head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        self._writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line, *headers = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        lengths = [int(h.partition(":")[2]) for h in headers if h.lower().startswith("content-length:")]
        if not lengths:
            raise RuntimeError(f"{path}: an answer without Content-Length ({status_line})")
        await self._reader.readexactly(lengths[0])
        return int(status_line.split()[1])

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def measure(calls: list[Callable[[], Awaitable[None]]], seconds: float) -> Figures:
    """One task per call, each calling it again and again for `seconds`."""
    latencies: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(call: Callable[[], Awaitable[None]]) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            await call()
            latencies.append(time.perf_counter_ns() - t0)

    await asyncio.gather(*(worker(call) for call in calls))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6

    return len(ordered), len(ordered) / elapsed, at(0.5), at(0.99)


async def python_load(port: int, path: str, body: bytes, connections: int, seconds: float) -> Figures:
    """POST `body` to `path` over `connections` keep-alive connections for `seconds`."""
    opened = [await HttpConnection.open(port) for _ in range(connections)]

    def poster(connection: HttpConnection) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            status = await connection.post(path, body)
            if status != 200:
                raise RuntimeError(f"POST {path} answered {status}")

        return call

    try:
        return await measure([poster(connection) for connection in opened], seconds)
    finally:
        for connection in opened:
            await connection.close()


async def evalsha_load(redis_url: str, connections: int, seconds: float) -> Figures:
    """The acquire script by SHA on the breaker `bench-raw`, `connections` calls in flight, through redis-py."""
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=connections)
    sha = hashlib.sha1(SOURCES["acquire"]).hexdigest()
    args = (*breaker_keys("bench-raw"), "bench-raw", EVENTS_CHANNEL, "", new_permit())  # a plain acquire {}

    async def call() -> None:
        await cast("Awaitable[object]", client.evalsha(sha, 4, *args))

    try:
        return await measure([call] * connections, seconds)
    finally:
        await client.aclose()
