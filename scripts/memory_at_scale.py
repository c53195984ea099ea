"""Memory of one replica at scale: RSS with 10,000 breakers and 1,000 `/events` listeners.

Starts, on 127.0.0.1 only, a redis-server and one `python -m breaker_service` on it (default settings but for the
admin token this script uses, and a breaker cap above the count), then reads the replica's resident memory (VmRSS,
and VmHWM, the peak so far, from /proc) after each step:

1. started, idle;
2. `--listeners` clients on `GET /events` (each reads its stream continuously, as a client would);
3. `--breakers` breakers created through the API (one acquire each, 16 at a time): every one now has its state
   in Redis and, in the replica, its last snapshot (for degraded answers) and its metric series;
4. `--trips` of them forced open and closed again: each change is fanned out to every listener;
5. `--late` more listeners open at once, each getting the opening snapshot of every breaker.

    python scripts/memory_at_scale.py [--breakers N] [--listeners N] [--trips N] [--late N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the redis-server and service processes are the tests' (tests/fixtures/)

import httpx  # noqa: E402

from tests.fixtures.process import HOST  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ServiceProcess, deployed_env  # noqa: E402

ADMIN_TOKEN: Final = "memory-at-scale-admin-token"
ADMIN: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Listener:
    """One `/events` client on a raw connection, reading everything the replica sends."""

    def __init__(self) -> None:
        self.events = 0
        self.opened = asyncio.Event()
        self._read_more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, port: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET /events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode())
        self._writer = writer
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.events += chunk.count(b"\nevent: ") + chunk.startswith(b"event: ")
            if b"event: snapshot" in chunk:
                self.opened.set()
            self._read_more.set()

    async def wait_for(self, events: int) -> None:
        """Until this listener has read `events` events in all."""
        while self.events < events:
            self._read_more.clear()
            await self._read_more.wait()

    async def close(self) -> None:
        self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._task


async def open_listeners(port: int, count: int) -> list[Listener]:
    listeners = [Listener() for _ in range(count)]
    for listener in listeners:
        await listener.start(port)
    await asyncio.wait_for(asyncio.gather(*(listener.opened.wait() for listener in listeners)), timeout=600)
    return listeners


async def create_breakers(client: httpx.AsyncClient, count: int) -> None:
    names = iter(range(count))

    async def worker() -> None:
        for n in names:
            response = await client.post(f"/breakers/scale-{n:05d}/acquire", json={})
            response.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(16)))


async def trip(client: httpx.AsyncClient, count: int) -> None:
    for n in range(count):
        for action in ("force-open", "force-close"):
            response = await client.post(f"/breakers/scale-{n:05d}/{action}", json={"reason": "scale"}, headers=ADMIN)
            response.raise_for_status()


async def run(options: argparse.Namespace, service: ServiceProcess) -> list[tuple[str, int, int, float]]:
    pid = service.pid
    assert pid is not None
    rows: list[tuple[str, int, int, float]] = []
    started = time.monotonic()

    def note(step: str) -> None:
        rows.append((step, *memory_kib(pid), time.monotonic() - started))

    note("started, idle")
    async with httpx.AsyncClient(base_url=service.url, timeout=60.0) as client:
        listeners = await open_listeners(service.port, options.listeners)
        note(f"{options.listeners} /events listeners")
        await create_breakers(client, options.breakers)
        note(f"+ {options.breakers} breakers")
        await trip(client, options.trips)
        expected = options.trips * 2  # one `state` event per force, to every listener (plus `breaker` snapshots)
        fan_out = asyncio.gather(*(listener.wait_for(expected) for listener in listeners))
        await asyncio.wait_for(fan_out, timeout=300)
        note(f"+ {options.trips} breakers forced open and closed")
        late = await open_listeners(service.port, options.late)
        note(f"+ {options.late} listeners opening at once")
        for listener in [*listeners, *late]:
            await listener.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--breakers", type=int, default=10_000)
    parser.add_argument("--listeners", type=int, default=1_000)
    parser.add_argument("--trips", type=int, default=20)
    parser.add_argument("--late", type=int, default=10)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = options.listeners + options.late + 200
    if soft < needed:  # this process and the replica (which inherits it) hold a socket per listener
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    with tempfile.TemporaryDirectory(prefix="memory-at-scale-") as tmp, RedisServer(Path(tmp) / "redis") as redis:
        env = {
            **deployed_env(redis.url),
            "BREAKER_ADMIN_TOKENS": f"scale:{ADMIN_TOKEN}",
            "BREAKER_MAX_BREAKERS": str(options.breakers + 100),
        }
        with ServiceProcess(Path(tmp) / "service", env) as service:
            rows = asyncio.run(run(options, service))
    print(f"# memory_at_scale: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; one replica, BREAKER_WORKERS=1")
    print(f"{'step':<44}{'RSS MiB':>9}{'peak MiB':>10}{'at s':>8}")
    for step, rss, peak, at in rows:
        print(f"{step:<44}{rss / 1024:>9.1f}{peak / 1024:>10.1f}{at:>8.1f}")


if __name__ == "__main__":
    main()
