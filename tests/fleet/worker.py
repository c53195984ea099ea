"""A fleet worker process: one `BreakerClient` (or a baseline breaker) calling the dependency in runs.

Started by `Fleet` with the spawn method; it answers `Ready`, then, for each `Run` it receives, waits at the shared
barrier (so the whole fleet starts together), calls in a loop, and answers a `RunResult`. `Exit` ends it. Every call
is one caller's call: at most one in flight per process, as the fleet guarantees are stated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import traceback
from typing import TYPE_CHECKING

import httpx

from breaker_client import BreakerClient, CircuitOpenError, ClientError, RetryPolicy
from tests.fixtures.dependency import CALLER_HEADER
from tests.fleet.protocol import Crashed, Exit, Ready, Run, RunResult, WorkerSpec

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier, Event

__all__ = ["CountingTransport", "Outcomes", "worker_main"]

BARRIER_TIMEOUT_S = 30.0


def worker_main(conn: Connection, barrier: Barrier, stop: Event, spec: WorkerSpec, index: int) -> None:
    """The process's entry point; worker `index` starts on service URL `index % len(service_urls)`."""
    try:
        if spec.kind == "client":
            asyncio.run(_serve(conn, barrier, stop, spec, index))
        elif spec.kind == "sync":
            from tests.fleet.sync_worker import serve_sync

            serve_sync(conn, barrier, stop, spec, index)
        else:
            from tests.fleet.baselines import serve_baseline

            serve_baseline(conn, barrier, stop, spec)
    except Exception:
        conn.send(Crashed(os.getpid(), traceback.format_exc()))
    finally:
        conn.close()


class CountingTransport(httpx.AsyncBaseTransport):
    """The real transport, counting the client's acquires and records."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.acquires = 0
        self.records = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            if request.url.path.endswith("/acquire"):
                self.acquires += 1
            elif request.url.path.endswith("/record"):
                self.records += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def reset(self) -> None:
        self.acquires = self.records = 0


class Outcomes:
    """Counts of one run, and when it should end."""

    def __init__(self, run: Run, stop: Event) -> None:
        self._run = run
        self._stop = stop
        self._deadline = time.monotonic() + run.max_s
        self.calls = self.ok = self.failed = self.refused = 0
        self.unexpected: list[str] = []
        self.stopped_by = ""

    def more(self) -> bool:
        """Whether to make another call."""
        run = self._run
        if run.until == "refused" and self.refused:
            self.stopped_by = "refused"
        elif run.until == "ok" and self.ok:
            self.stopped_by = "ok"
        elif self._stop.is_set():
            self.stopped_by = "stop"
        elif self.calls >= run.max_calls:
            self.stopped_by = "max_calls"
        elif time.monotonic() >= self._deadline:
            self.stopped_by = "max_s"
        return not self.stopped_by

    def result(self) -> RunResult:
        """What this process saw; the client's worker adds what its client knows."""
        return RunResult(
            pid=os.getpid(),
            calls=self.calls,
            ok=self.ok,
            failed=self.failed,
            refused=self.refused,
            unexpected=tuple(self.unexpected),
            stopped_by=self.stopped_by,
        )


async def _serve(conn: Connection, barrier: Barrier, stop: Event, spec: WorkerSpec, index: int) -> None:
    counting = CountingTransport()
    urls = list(spec.service_urls)
    shift = index % len(urls) if urls else 0
    client = BreakerClient(
        urls[shift:] + urls[:shift],
        token=spec.token,
        transport=counting,
        timeout_s=spec.timeout_s,
        budget_wait_s=spec.budget_wait_s,
        recheck_s=spec.recheck_s,
        flush_interval_s=spec.flush_interval_s,
    )
    async with client, httpx.AsyncClient(timeout=spec.timeout_s) as http:
        with contextlib.suppress(TimeoutError):  # the service may be down on purpose; `Ready.live` says so
            await client.wait_for(lambda c: c.live, timeout_s=spec.ready_timeout_s)
        conn.send(Ready(os.getpid(), client.live))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if isinstance(command, Exit):
                return
            assert isinstance(command, Run), command
            await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)
            conn.send(await _run(client, http, counting, stop, command, caller=str(index)))


async def _run(
    client: BreakerClient, http: httpx.AsyncClient, counting: CountingTransport, stop: Event, run: Run, *, caller: str
) -> RunResult:
    counting.reset()
    breaker = client.breaker(
        run.breaker,
        retry=RetryPolicy(
            attempts=run.retry_attempts, base_s=run.retry_base_s, max_s=1.0, jitter=False, timeout_s=run.call_timeout_s
        ),
    )

    async def call() -> str:
        response = await http.get(run.url, headers={CALLER_HEADER: caller})
        response.raise_for_status()
        return response.text

    outcomes = Outcomes(run, stop)
    while outcomes.more():
        outcomes.calls += 1
        try:
            await breaker.call(call)
        except CircuitOpenError:
            outcomes.refused += 1
            if run.until != "refused":
                await asyncio.sleep(run.refusal_pause_s)
            continue
        except ClientError as exc:  # the client's own plumbing: must never reach a caller
            outcomes.unexpected.append(repr(exc))
        except (httpx.HTTPError, TimeoutError):
            outcomes.failed += 1
        except Exception as exc:
            outcomes.unexpected.append(repr(exc))
        else:
            outcomes.ok += 1
        if run.pause_s:
            await asyncio.sleep(run.pause_s)
    await client.flush()
    view = client.view(run.breaker)
    return dataclasses.replace(
        outcomes.result(),
        acquires=counting.acquires,
        records=counting.records,
        degraded=client.degraded,
        live=client.live,
        state=None if view is None else str(view.effective_state),
    )
