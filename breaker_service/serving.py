"""Running the app under uvicorn: one server process, or `BREAKER_WORKERS` of them sharing the port.

One Python process serves on one core at a time. With `BREAKER_WORKERS=N` (or `auto`: one per core this process
may run on), the parent binds the listening socket once, then starts N worker processes (spawned, not forked:
each imports the app afresh) that all accept on it; the kernel hands each new connection to one of them. Every
worker builds its own app in its own process: its own Redis connections, its own `/events` subscription. Their
counters are kept in prometheus_client's multiprocess files, in a directory the parent makes for this run (or
`PROMETHEUS_MULTIPROC_DIR` when set, which must then be emptied between runs), so a `/metrics` scrape answered by
any worker reports the replica's totals (metrics.py). The parent serves nothing itself: it waits,
passes SIGTERM/SIGINT on to the workers, and, should a worker die on its own, stops the others and exits with
status 1, so the orchestrator restarts a replica that is whole again rather than one serving on fewer cores.
The memory store lives in one process, so `Settings` refuses workers other than 1 without `REDIS_URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

import uvicorn

from breaker_service.app import context_of, main_app
from breaker_service.coalesce import coalesced
from breaker_service.metrics import MULTIPROCESS_DIR_VARIABLE
from breaker_service.server_limits import server_options

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator
    from multiprocessing.process import BaseProcess
    from types import FrameType

    from starlette.applications import Starlette

    from breaker_service.settings import Settings

GRACEFUL_SHUTDOWN_S: Final = 10.0
STOP_WAIT_S: Final = GRACEFUL_SHUTDOWN_S + 5.0
"""How long the parent waits for a worker told to stop before it kills it."""
_CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")


class _Server(uvicorn.Server):
    """uvicorn, plus: the first shutdown signal also ends the app's event streams, so their connections close."""

    def __init__(self, config: uvicorn.Config, app: Starlette, *, ignore_interrupt: bool = False) -> None:
        super().__init__(config)
        self._stopping = context_of(app).stopping
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ignore_interrupt = ignore_interrupt

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self._ignore_interrupt:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        super().handle_exit(sig, frame)


def server_config(settings: Settings, app: Starlette) -> uvicorn.Config:
    """uvicorn on uvloop and httptools (the fastest pair measured, scripts/bench_service.py) with one write per
    answer (`coalesce.py`), no access log of its own: the app writes the lines its policy asks for. The limits on
    request heads and slow clients are `server_limits.py`'s."""
    options = server_options(settings)
    options["http"] = coalesced(options["http"])
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "auto",
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address; the layer cost 1.5 % of a request's CPU
        server_header=False,  # one header less to write on every answer, and nothing advertised
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        lifespan="on",
        **options,
    )


def worker_count(settings: Settings) -> int:
    """How many server processes `settings` asks for; `auto` is the cores this process is allowed to use."""
    if settings.workers != "auto":
        return settings.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = _CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)


def serve(settings: Settings, app: Starlette) -> int:
    """Serve `app` until SIGINT/SIGTERM, in this process or in `worker_count(settings)` workers; the exit status."""
    workers = worker_count(settings)
    if workers == 1:
        server = _Server(server_config(settings, app), app)
        server.run()
        return 0 if server.started else 3  # the lifespan refused to start (e.g. Redis may evict keys)
    listener = server_config(settings, app).bind_socket()
    print(f"breaker-service: {workers} worker processes share the port", file=sys.stderr)
    with _counters_directory():
        return _supervise(listener, workers)


@contextlib.contextmanager
def _counters_directory() -> Iterator[None]:
    """The workers' shared metrics directory: the operator's, or one made for this run and removed after it."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="breaker-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_VARIABLE] = directory  # inherited by the workers spawned from here on
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR_VARIABLE]


def _supervise(listener: socket.socket, workers: int) -> int:
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(sig: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    processes: list[BaseProcess] = []
    status = 0
    try:
        for index in range(workers):
            process = spawn.Process(target=run_worker, args=(listener,), name=f"breaker-worker-{index}")
            process.start()
            processes.append(process)
        while not stop.is_set():
            ended = multiprocessing.connection.wait([p.sentinel for p in processes], timeout=0.5)
            if ended:
                died = [p for p in processes if not p.is_alive()]
                codes = ", ".join(f"{p.name} (pid {p.pid}) exit {p.exitcode}" for p in died)
                print(f"breaker-service: {codes}; stopping the other workers", file=sys.stderr)
                status = 1
                break
    finally:
        _stop_all(processes)
        listener.close()
    return status


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()


def run_worker(listener: socket.socket) -> None:
    """A worker process: the app from the environment, served on the parent's socket until told to stop."""
    _end_with_parent()
    app = main_app()
    # The parent passes SIGINT on as SIGTERM; a Ctrl-C reaching the whole process group would otherwise count twice
    # (uvicorn takes a second signal as "exit now, skip the graceful shutdown").
    server = _Server(server_config(context_of(app).settings, app), app, ignore_interrupt=True)
    server.run(sockets=[listener])


def _end_with_parent() -> None:
    # Linux: the kernel sends this worker SIGTERM if the parent dies without stopping it (SIGKILL, a crash), so no
    # worker is left serving on the port alone.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
