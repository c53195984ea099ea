"""Throughput and latency of acquire and record through the HTTP API, beside a raw EVALSHA baseline.

Starts, on 127.0.0.1 only: a redis-server on a free port, one `python -m breaker_service` on it, and one on the
memory store for comparison. Each case runs at concurrency 1, 16 and 64 until it has made `--max-ops` calls or
`--seconds` have passed, whichever comes first, after a short warm-up; then everything it started is stopped.
The load generator (a minimal keep-alive HTTP/1.1 client, one connection per concurrent caller, and redis-py for
the baseline) runs in this process on the same machine, so the figures include its cost.

    python scripts/bench_service.py [--quick] [--seconds S] [--max-ops N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias, cast

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the redis-server and service processes are the tests' (tests/fixtures/)

import redis.asyncio  # noqa: E402

from breaker_client.protocol.machine import new_permit  # noqa: E402
from breaker_client.protocol.models import BreakerConfig  # noqa: E402
from breaker_service.events import EVENTS_CHANNEL  # noqa: E402
from breaker_service.store.keys import breaker_keys  # noqa: E402
from breaker_service.store.scripts_redis import SOURCES, BreakerScripts  # noqa: E402
from tests.fixtures.process import HOST  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ServiceProcess, deployed_env  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

CONCURRENCY: Final = (1, 16, 64)
WARMUP_OPS: Final = 200

Operation: TypeAlias = "Callable[[], Awaitable[None]]"


@dataclass(frozen=True)
class Result:
    """One case: what ran, how many calls, and how fast."""

    target: str
    operation: str
    concurrency: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds


async def measure(operations: Sequence[Operation], *, max_ops: int, seconds: float) -> tuple[int, float, list[int]]:
    """One task per operation, until `max_ops` calls or `seconds` in all: (calls, elapsed s, ns each)."""
    for _ in range(min(WARMUP_OPS, max_ops)):
        await operations[0]()
    latencies: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    remaining = max_ops

    async def worker(operation: Operation) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            t0 = time.perf_counter_ns()
            await operation()
            latencies.append(time.perf_counter_ns() - t0)

    await asyncio.gather(*(worker(operation) for operation in operations))
    return len(latencies), time.perf_counter() - started, latencies


def percentile_ms(latencies: list[int], fraction: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: just enough client to POST JSON to the service.

    httpx costs more CPU per request than the service does, and on a small machine it would measure itself.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` as JSON; the status and the body of the answer."""
        head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        self._writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line, *headers = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        lengths = [int(h.partition(":")[2]) for h in headers if h.lower().startswith("content-length:")]
        if not lengths:
            raise RuntimeError(f"{path}: an answer without Content-Length ({status_line})")
        return int(status_line.split()[1]), await self._reader.readexactly(lengths[0])

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def bench_http(target: str, port: int, *, max_ops: int, seconds: float) -> list[Result]:
    results: list[Result] = []
    for operation, path, body in (
        ("acquire", "/breakers/bench/acquire", b"{}"),
        ("record", "/breakers/bench/record", b'{"outcome":"success"}'),
    ):
        for concurrency in CONCURRENCY:
            connections = [await HttpConnection.open(port) for _ in range(concurrency)]
            try:
                calls = [_poster(connection, path, body) for connection in connections]
                ops, elapsed, latencies = await measure(calls, max_ops=max_ops, seconds=seconds)
            finally:
                for connection in connections:
                    await connection.close()
            results.append(_result(target, operation, concurrency, ops, elapsed, latencies))
    return results


def _poster(connection: HttpConnection, path: str, body: bytes) -> Operation:
    async def call() -> None:
        status, answer = await connection.post(path, body)
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {answer[:500]!r}")

    return call


async def bench_evalsha(redis_url: str, *, max_ops: int, seconds: float) -> list[Result]:
    """The acquire script called directly: the floor under the service's redis figures."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        scripts = BreakerScripts(client)
        await scripts.load()
        await scripts.create("bench-raw", BreakerConfig(), registry=None, cap=1)
        sha = hashlib.sha1(SOURCES["acquire"]).hexdigest()
        args = (*breaker_keys("bench-raw"), "bench-raw", EVENTS_CHANNEL, "", new_permit())  # plain acquire {}

        async def call() -> None:
            await cast("Awaitable[object]", client.evalsha(sha, 4, *args))

        results: list[Result] = []
        for concurrency in CONCURRENCY:
            ops, elapsed, latencies = await measure([call] * concurrency, max_ops=max_ops, seconds=seconds)
            results.append(_result("raw EVALSHA", "acquire", concurrency, ops, elapsed, latencies))
        return results
    finally:
        await client.aclose()


def _result(target: str, operation: str, concurrency: int, ops: int, elapsed: float, latencies: list[int]) -> Result:
    return Result(
        target=target,
        operation=operation,
        concurrency=concurrency,
        ops=ops,
        seconds=elapsed,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
    )


def report(results: list[Result], *, max_ops: int, seconds: float) -> str:
    lines = [
        f"# bench_service: Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"each case up to {max_ops} calls or {seconds:g} s",
        f"{'target':<16}{'operation':<10}{'conc':>5}{'calls':>8}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.target:<16}{r.operation:<10}{r.concurrency:>5}{r.ops:>8}{r.ops_per_s:>10.0f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
        )
    return "\n".join(lines)


async def run(max_ops: int, seconds: float) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        directory = Path(tmp)
        with RedisServer(directory / "redis") as server:
            results = await bench_evalsha(server.url, max_ops=max_ops, seconds=seconds)
            # Default settings, as deployed: client routes open (no tokens), a JSON log line per request.
            with ServiceProcess(directory / "service-redis", deployed_env(server.url)) as service:
                results += await bench_http("service+redis", service.port, max_ops=max_ops, seconds=seconds)
            with ServiceProcess(directory / "service-memory", deployed_env(None)) as service:
                results += await bench_http("service+memory", service.port, max_ops=max_ops, seconds=seconds)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run: 500 calls or 0.5 s per case")
    parser.add_argument("--seconds", type=float, default=None, help="time limit per case (default 3)")
    parser.add_argument("--max-ops", type=int, default=None, help="call limit per case (default 20000)")
    options = parser.parse_args()
    seconds = options.seconds or (0.5 if options.quick else 3.0)
    max_ops = options.max_ops or (500 if options.quick else 20_000)
    results = asyncio.run(run(max_ops, seconds))
    print(report(results, max_ops=max_ops, seconds=seconds))


if __name__ == "__main__":
    main()
