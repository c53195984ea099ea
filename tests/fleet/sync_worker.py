"""A fleet worker process with one `SyncBreakerClient` and `spec.threads` caller threads sharing it.

Each thread calls in a loop as the async worker's single caller does (one call in flight per thread); a run's
result sums the threads. `stopped_by` is the reason every thread stopped, or "mixed".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx

from breaker_client import CircuitOpenError, ClientError, RetryPolicy, SyncBreakerClient
from tests.fixtures.dependency import CALLER_HEADER
from tests.fleet.protocol import Exit, Ready, Run, RunResult, WorkerSpec
from tests.fleet.worker import BARRIER_TIMEOUT_S, CountingTransport, Outcomes

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier, Event

__all__ = ["serve_sync"]


def serve_sync(conn: Connection, barrier: Barrier, stop: Event, spec: WorkerSpec, index: int) -> None:
    """Answer `Ready`, then one `RunResult` per `Run`, until `Exit`."""
    counting = CountingTransport()
    urls = list(spec.service_urls)
    shift = index % len(urls)
    client = SyncBreakerClient(
        urls[shift:] + urls[:shift],
        token=spec.token,
        transport=counting,
        timeout_s=spec.timeout_s,
        budget_wait_s=spec.budget_wait_s,
        recheck_s=spec.recheck_s,
        flush_interval_s=spec.flush_interval_s,
    )
    limits = httpx.Limits(max_connections=spec.threads)
    with client, httpx.Client(timeout=spec.timeout_s, limits=limits) as http:
        with contextlib.suppress(TimeoutError):
            client.wait_for(lambda c: c.live, timeout_s=spec.ready_timeout_s)
        conn.send(Ready(os.getpid(), client.live))
        with ThreadPoolExecutor(spec.threads, thread_name_prefix="fleet-caller") as pool:
            while True:
                command = conn.recv()
                if isinstance(command, Exit):
                    return
                assert isinstance(command, Run), command
                barrier.wait(BARRIER_TIMEOUT_S)
                counting.reset()
                futures = [
                    pool.submit(_calls, client, http, stop, command, f"{index}.{t}") for t in range(spec.threads)
                ]
                outcomes = [future.result() for future in futures]
                client.flush()
                conn.send(_summary(client, counting, command, outcomes))


def _calls(client: SyncBreakerClient, http: httpx.Client, stop: Event, run: Run, caller: str) -> Outcomes:
    breaker = client.breaker(
        run.breaker,
        retry=RetryPolicy(attempts=run.retry_attempts, base_s=run.retry_base_s, max_s=1.0, jitter=False),
    )

    def call() -> str:
        response = http.get(run.url, headers={CALLER_HEADER: caller}, timeout=run.call_timeout_s)
        response.raise_for_status()
        return response.text

    outcomes = Outcomes(run, stop)
    pause = threading.Event()  # never set: a bounded wait that is not a sleep in a loop of the test's own
    while outcomes.more():
        outcomes.calls += 1
        try:
            breaker.call(call)
        except CircuitOpenError:
            outcomes.refused += 1
            if run.until != "refused":
                pause.wait(run.refusal_pause_s)
            continue
        except ClientError as exc:  # the client's own plumbing: must never reach a caller
            outcomes.unexpected.append(repr(exc))
        except httpx.HTTPError:
            outcomes.failed += 1
        except Exception as exc:
            outcomes.unexpected.append(repr(exc))
        else:
            outcomes.ok += 1
        if run.pause_s:
            pause.wait(run.pause_s)
    return outcomes


def _summary(client: SyncBreakerClient, counting: CountingTransport, run: Run, outcomes: list[Outcomes]) -> RunResult:
    results = [o.result() for o in outcomes]
    reasons = {r.stopped_by for r in results}
    view = client.view(run.breaker)
    return dataclasses.replace(
        results[0],
        calls=sum(r.calls for r in results),
        ok=sum(r.ok for r in results),
        failed=sum(r.failed for r in results),
        refused=sum(r.refused for r in results),
        unexpected=tuple(u for r in results for u in r.unexpected),
        stopped_by=reasons.pop() if len(reasons) == 1 else "mixed",
        acquires=counting.acquires,
        records=counting.records,
        degraded=client.degraded,
        live=client.live,
        state=None if view is None else str(view.effective_state),
    )
