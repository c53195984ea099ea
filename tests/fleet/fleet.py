"""`Fleet`: N worker processes (spawned, so each is a fresh interpreter) driven in runs that start together.

    with Fleet(4, WorkerSpec(service_urls=(url,), token=TOKEN)) as fleet:
        results = fleet.run(Run(breaker="payments", url=dependency.url))

`begin()` sends a run and returns at once, `stop()` ends a `until="stopped"` run, `collect()` waits for the
results: that lets the controller act while the fleet is calling (kill the service, switch the dependency).
Every wait is bounded; a worker that crashes or does not answer fails the caller with what it said.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from typing import TYPE_CHECKING, Final, TypeVar

from tests.fleet.protocol import Crashed, Exit, Ready, Run, RunResult, WorkerSpec
from tests.fleet.worker import worker_main

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["Fleet", "FleetError", "total"]

T = TypeVar("T")

JOIN_TIMEOUT_S: Final = 10.0
RESULT_MARGIN_S: Final = 30.0


class FleetError(RuntimeError):
    """A worker crashed, or did not answer in time."""


def total(results: list[RunResult], field: str) -> int:
    """The sum of an integer field over the fleet's results."""
    return sum(int(getattr(result, field)) for result in results)


class Fleet:
    """Worker processes sharing one barrier and one stop flag."""

    def __init__(self, size: int, spec: WorkerSpec) -> None:
        if size < 1:
            raise ValueError("a fleet needs at least one worker")
        self.size = size
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(size)
        self._stop = context.Event()
        self._conns: list[Connection] = []
        self._child_conns: list[Connection] = []
        self._processes: list[BaseProcess] = []
        for index in range(size):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, self._barrier, self._stop, spec, index),
                daemon=True,
                name=f"fleet-worker-{index}",
            )
            self._conns.append(parent)
            self._child_conns.append(child)
            self._processes.append(process)
        self._pending: Run | None = None
        self.ready: list[Ready] = []

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every worker and wait until each says it is ready."""
        for process in self._processes:
            process.start()
        for child in self._child_conns:
            child.close()  # only the worker holds its end now: a dead worker reads as EOF, not silence
        self.ready = [self._receive(conn, self.spec.ready_timeout_s + RESULT_MARGIN_S, Ready) for conn in self._conns]

    def run(self, run: Run) -> list[RunResult]:
        """One run, start to end."""
        self.begin(run)
        return self.collect()

    def begin(self, run: Run) -> None:
        """Send `run` to every worker; they start together once all have it."""
        if self._pending is not None:
            raise RuntimeError("a run is under way: collect() it first")
        self._stop.clear()
        for conn in self._conns:
            conn.send(run)
        self._pending = run

    def stop(self) -> None:
        """End the current run (its workers finish the call they are in)."""
        self._stop.set()

    def collect(self) -> list[RunResult]:
        """The results of the current run, one per worker."""
        run, self._pending = self._pending, None
        if run is None:
            raise RuntimeError("no run under way")
        timeout_s = run.max_s + run.call_timeout_s * run.retry_attempts + RESULT_MARGIN_S
        return [self._receive(conn, timeout_s, RunResult) for conn in self._conns]

    def close(self) -> None:
        """Ask every worker to exit; kill those that do not."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # already gone
                conn.send(Exit())
        for process in self._processes:
            if process.pid is None:
                continue
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT_S)
        for conn in self._conns:
            conn.close()

    def _receive(self, conn: Connection, timeout_s: float, expected: type[T]) -> T:
        if not conn.poll(timeout_s):
            raise FleetError(f"a worker did not answer within {timeout_s:.0f}s")
        try:
            message = conn.recv()
        except EOFError:
            raise FleetError("a worker exited without answering") from None
        if isinstance(message, Crashed):
            raise FleetError(f"worker {message.pid} crashed:\n{message.traceback}")
        if not isinstance(message, expected):
            raise FleetError(f"expected {expected.__name__}, a worker sent {message!r}")
        return message
