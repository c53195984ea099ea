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
import contextlib
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias, cast

import httpx
import redis.asyncio

from breaker_client._models import BreakerConfig
from breaker_service.store.base import EVENTS_CHANNEL
from breaker_service.store.keys import breaker_keys
from breaker_service.store.scripts import SOURCES, BreakerScripts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

HOST: Final = "127.0.0.1"
CONCURRENCY: Final = (1, 16, 64)
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
WARMUP_OPS: Final = 200
REPO_ROOT: Final = Path(__file__).resolve().parents[1]

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll `ready` until it holds; fail with the process's log if it exits or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{what} did not start (exit code {process.poll()}):\n{tail}")
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (e.g. `apt-get install redis-server`)")
    port = free_port()
    log = directory / "redis.log"
    command = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(directory), "--logfile", str(log)], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://{HOST}:{port}/0"
        wait_for(lambda: _pings(port), process, "redis-server", log)
        yield url
    finally:
        stop(process)


def _pings(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def service(directory: Path, redis_url: str | None) -> Iterator[int]:
    """`python -m breaker_service` on a free loopback port; yields the port.

    Default settings: client routes are open (no client tokens) and every request writes its JSON log line (to a
    file), as in production.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKER_", "REDIS_"))}
    env |= {"BREAKER_HOST": HOST, "BREAKER_PORT": str(port)}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    log = directory / f"service-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "breaker_service"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://{HOST}:{port}"
    try:
        wait_for(lambda: _answers_health(url), process, f"the service ({redis_url or 'memory'})", log)
        yield port
    finally:
        stop(process)


def _answers_health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


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
        await scripts.create("bench-raw", BreakerConfig())
        sha = hashlib.sha1(SOURCES["acquire"]).hexdigest()
        args = (*breaker_keys("bench-raw"), "bench-raw", EVENTS_CHANNEL)

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
        with redis_server(directory) as redis_url:
            results = await bench_evalsha(redis_url, max_ops=max_ops, seconds=seconds)
            with service(directory, redis_url) as port:
                results += await bench_http("service+redis", port, max_ops=max_ops, seconds=seconds)
            with service(directory, None) as port:
                results += await bench_http("service+memory", port, max_ops=max_ops, seconds=seconds)
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
