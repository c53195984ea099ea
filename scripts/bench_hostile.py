"""What hostile clients cost everyone else: acquire latency while they attack, and what the attacks cost.

Starts, on 127.0.0.1 only, one `python -m breaker_service` (memory store, or a redis-server it starts with
`--redis`), then measures a well-behaved client's acquire latency (one connection, calls back to back) alone and
during each attack, and prints the figures with the server's RSS after each. The attacks:

- one 64 MB request header, no token (refused at 64 KiB with 431);
- 100,000 header lines (refused at 100 with 431);
- 200 slowloris connections sending a header byte every 0.5 s, and 200 idle connections (cut after the client
  timeout, 30 s by default: pass `--client-timeout` for a shorter run);
- 8 clients listing 5,000 breakers whole, then 8 clients paging them 1,000 at a time;
- the nesting check on the worst 1 MiB bodies (in this process).

    python scripts/bench_hostile.py [--redis] [--client-timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the redis-server and service processes are the tests' (tests/fixtures/)

import httpx  # noqa: E402

from breaker_service.nesting import depth_of  # noqa: E402
from tests.fixtures.process import HOST  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ServiceProcess, deployed_env  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

BREAKERS: Final = 5_000


def rss_mb(pid: int | None) -> float:
    """Resident set size of process `pid` in MB (Linux)."""
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.asynccontextmanager
async def acquiring(url: str) -> AsyncIterator[list[float]]:
    """Acquires back to back on one connection until the block ends; yields their latencies in ms."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
            while not stop.is_set():
                started = time.perf_counter()
                await http.post("/breakers/bystander/acquire", json={})
                latencies.append((time.perf_counter() - started) * 1000)

    task = asyncio.create_task(run())
    try:
        yield latencies
    finally:
        stop.set()
        await task


async def raw(port: int, pieces: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send `pieces` on a fresh connection (`pause_s` apart), read until closed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = asyncio.create_task(reader.read())
    try:
        for piece in pieces:
            if answer.done():  # the server answered or closed: stop sending
                break
            writer.write(piece)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        with contextlib.suppress(ConnectionError):
            return await answer
        return b""
    finally:
        writer.close()


async def measure(label: str, url: str, pid: int | None, attack: Callable[[], Awaitable[object]]) -> None:
    async with acquiring(url) as latencies:
        started = time.perf_counter()
        await attack()
        elapsed = time.perf_counter() - started
    if not latencies:
        print(f"{label:<44} no acquire completed during the attack ({elapsed:.1f} s)")
        return
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    median = statistics.median(latencies)
    print(
        f"{label:<44} attack {elapsed:6.2f} s  acquires {len(latencies):6d}  median {median:7.2f} ms"
        f"  p99 {p99:8.2f} ms  max {ordered[-1]:8.2f} ms  rss {rss_mb(pid):6.1f} MB"
    )


async def bench(url: str, pid: int | None) -> None:
    port = int(url.rsplit(":", 1)[1])
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    await measure("baseline (3 s, no attack)", url, pid, lambda: asyncio.sleep(3))
    await measure("one 64 MB header", url, pid, lambda: raw(port, [head + b"X: " + b"a" * 64 * 2**20 + b"\r\n\r\n"]))
    await measure("100,000 headers", url, pid, lambda: raw(port, [head + b"X: 1\r\n" * 100_000 + b"\r\n"]))

    async def slowloris() -> None:
        slow = [raw(port, [bytes([b]) for b in head], pause_s=0.5) for _ in range(200)]
        idle = [raw(port, []) for _ in range(200)]
        await asyncio.gather(*slow, *idle)

    await measure("200 slowloris + 200 idle until cut", url, pid, slowloris)

    async with httpx.AsyncClient(base_url=url, timeout=120.0) as http:
        for n in range(BREAKERS):
            await http.post(f"/breakers/b{n:05d}/acquire", json={})

        async def list_whole() -> None:
            async def one() -> None:
                for _ in range(5):
                    await http.get("/breakers")

            await asyncio.gather(*(one() for _ in range(8)))

        async def list_paged() -> None:
            async def one() -> None:
                cursor: str | None = None
                for _ in range(5):
                    query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
                    cursor = (await http.get(f"/breakers?{query}")).json()["next_cursor"]

            await asyncio.gather(*(one() for _ in range(8)))

        await measure(f"8 listers x5, {BREAKERS} breakers whole", url, pid, list_whole)
        await measure(f"8 listers x5, pages of 1,000 of {BREAKERS}", url, pid, list_paged)

    for name, body in (("1 MiB nested 500,000 deep", b"[" * 2**19 + b"]" * 2**19), ("1 MiB of []", b"[]" * 2**19)):
        started = time.perf_counter()
        depth_of(body)
        print(f"nesting check, {name:<34} {(time.perf_counter() - started) * 1000:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", action="store_true", help="run the service on a redis-server started here")
    parser.add_argument("--client-timeout", type=float, default=None, help="BREAKER_CLIENT_TIMEOUT_S for the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        redis_url = stack.enter_context(RedisServer(directory / "redis")).url if args.redis else None
        env = deployed_env(redis_url)
        env["BREAKER_MAX_BREAKERS"] = str(BREAKERS + 10)
        if args.client_timeout is not None:
            env["BREAKER_CLIENT_TIMEOUT_S"] = str(args.client_timeout)
        service = stack.enter_context(ServiceProcess(directory / "service", env))
        print(f"store: {'redis' if args.redis else 'memory'}; service {service.url}")
        asyncio.run(bench(service.url, service.pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
