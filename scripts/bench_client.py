"""What the client costs per call, and what a fleet of processes sends a dying dependency, beside pybreaker.

Starts, on 127.0.0.1 only: a redis-server on a free port, two `python -m breaker_service` replicas on it, and a
local HTTP dependency (tests/fixtures/dependency.py) that counts every request it gets. Then:

1. The added cost of one protected call in CLOSED state (median and p99, microseconds), against calling the
   function bare, for our client on its fast path and for pybreaker with its memory and its Redis storage, all in
   this process, interleaved in rounds. pybreaker's async support needs tornado, so it guards the `await` with its
   `calling()` context manager (the same work as `call()`).
1b. The same for `SyncBreakerClient` from plain code, beside pybreaker's `call()` with its memory and its Redis
   storage (scripts/bench_client_sync.py).
2. Fleet figures: 8 worker processes (tests/fleet/), one call in flight each, threshold 5, a dependency that fails
   fast (503). A cold fleet (fresh breaker, the processes start together at a barrier while the dependency is dead),
   a warm fleet (proven healthy, every process on the fast path, calling, when the dependency dies), and the probes
   each half-open window lets through; for ours, for pybreaker with Redis storage shared by the 8 processes, and
   for a naive shared breaker with one atomic Lua check per call.
3. Propagation: 8 client processes follow `/events` (4 per replica); the controller forces a breaker open and
   closed in turn, and measures from just before each admin request to the moment every client knows the new state
   with its force (p50/p99 over transitions of the slowest client, and over every client's view).

Every loop is bounded in count and time; the script stops everything it started and exits by itself.

    python scripts/bench_client.py [--quick] [--propagation-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the fleet workers and fixtures live in the tests package

import httpx  # noqa: E402
import pybreaker  # noqa: E402
import redis  # noqa: E402
from bench_client_sync import sync_cost_per_call  # noqa: E402  (this directory: the sync client's section)

from breaker_client import BreakerClient, RetryPolicy  # noqa: E402
from tests.fixtures.dependency import Dependency, Hit, Mode, running_dependency  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceProcess, service_env  # noqa: E402
from tests.fleet.fleet import Fleet, total  # noqa: E402
from tests.fleet.protocol import Kind, Run, WorkerSpec  # noqa: E402
from tests.fleet.watcher import Seen, watcher_main  # noqa: E402
from tests.fleet.worker import CountingTransport  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from multiprocessing.connection import Connection

FLEET_SIZE: Final = 8
THRESHOLD: Final = 5
HALF_OPEN_MAX_CALLS: Final = 3
OPEN_TIMEOUT_S: Final = 1.0
"""pybreaker keeps `opened_at` in whole seconds, so shorter open times would not mean what they say there."""
WARM_CALLS: Final = 100
"""Healthy calls the warm fleet makes (in all) before the dependency dies under it."""


PROPAGATION_CLIENTS: Final = 8
PROPAGATION_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Options:
    calls: int
    rounds: int
    trials: int
    windows: int
    transitions: int = 200


# -- 1. cost per call ----------------------------------------------------------------------------------------------


async def noop() -> None:
    return None


async def time_calls(call: Callable[[], Awaitable[object]], count: int, into: list[int]) -> None:
    for _ in range(count):
        started = time.perf_counter_ns()
        await call()
        into.append(time.perf_counter_ns() - started)


def pybreaker_call(breaker: pybreaker.CircuitBreaker) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        with breaker.calling():
            await noop()

    return call


def quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


async def cost_per_call(service_url: str, redis_url: str, options: Options) -> None:
    counting = CountingTransport()
    async with BreakerClient(service_url, token=CLIENT_TOKEN, transport=counting) as client:
        await client.wait_for(lambda c: c.live)
        ours = client.breaker("bench-cost")
        ours_no_retry = client.breaker("bench-cost", retry=RetryPolicy(attempts=1))
        await ours.call(noop)  # the first call is strict; its success earns the fast path
        await client.wait_for(lambda c: (v := c.view("bench-cost")) is not None and v.healthy)
        await ours.call(noop)

        async def ours_async_with() -> None:
            async with ours:
                await noop()

        memory = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=60, name="bench-memory")
        redis_client = redis.Redis.from_url(redis_url)
        stored = pybreaker.CircuitBreaker(
            fail_max=THRESHOLD,
            reset_timeout=60,
            name="bench-redis",
            state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis_client, namespace="bench"),
        )
        cases: dict[str, Callable[[], Awaitable[object]]] = {
            "bare await fn()": noop,
            "ours: await breaker.call(fn)": lambda: ours.call(noop),
            "ours: call(fn), RetryPolicy(attempts=1)": lambda: ours_no_retry.call(noop),
            "ours: async with breaker": ours_async_with,
            "pybreaker, memory storage": pybreaker_call(memory),
            "pybreaker, Redis storage": pybreaker_call(stored),
        }
        samples: dict[str, list[int]] = {name: [] for name in cases}
        per_round = max(1, options.calls // options.rounds)
        counting.reset()
        for _ in range(options.rounds):
            for name, call in cases.items():
                # pybreaker's Redis storage costs round trips per call: fewer of them, the median holds anyway.
                count = per_round // 10 if "Redis" in name else per_round
                await time_calls(call, min(count, 50), [])  # warm-up, not counted
                gc.collect()
                await time_calls(call, max(1, count), samples[name])
        redis_client.close()
        requests_during = counting.acquires

    bare_p50, bare_p99 = quantile(samples["bare await fn()"], 0.5), quantile(samples["bare await fn()"], 0.99)
    print(
        f"\n1. Added cost per protected call in CLOSED state ({options.calls} calls per case, {options.rounds} rounds)"
    )
    print(f"   {'case':<42}{'calls':>8}{'p50 us':>10}{'p99 us':>10}{'added p50':>11}{'added p99':>11}")
    added: dict[str, float] = {}
    for name, values in samples.items():
        p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
        added[name] = p50 - bare_p50
        extra = "" if name.startswith("bare") else f"{p50 - bare_p50:>11.2f}{p99 - bare_p99:>11.2f}"
        print(f"   {name:<42}{len(values):>8}{p50:>10.2f}{p99:>10.2f}{extra}")
    ours_added = added["ours: await breaker.call(fn)"]
    memory_added = added["pybreaker, memory storage"]
    redis_added = added["pybreaker, Redis storage"]
    print(f"   requests from our client to the service while measuring: {requests_during} acquires (fast path: 0)")
    print(
        f"   ours vs pybreaker memory: {ours_added / memory_added:.2f}x the added p50 (target <= 3x); "
        f"pybreaker Redis vs ours: {redis_added / ours_added:.0f}x (target >= 50x)"
    )


# -- 2. fleet figures ----------------------------------------------------------------------------------------------


class Services:
    """Admin requests to our service."""

    def __init__(self, url: str) -> None:
        self._http = httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=10.0)

    def fresh(self, name: str, **config: float) -> None:
        self._http.delete(f"/breakers/{name}")
        response = self._http.put(f"/breakers/{name}", json={"failure_threshold": THRESHOLD, **config})
        response.raise_for_status()

    def transitions(self, name: str, from_state: str, to_state: str) -> int:
        history = self._http.get(f"/breakers/{name}/history").json()["transitions"]
        return sum(1 for t in history if t["from"] == from_state and t["to"] == to_state)

    def close(self) -> None:
        self._http.close()


@dataclass
class FleetFigures:
    cold: list[int]
    warm: list[int]
    probes: list[int]
    clean: bool = True


def windows_of(hits: list[Hit], gap_s: float) -> list[int]:
    """Sizes of the bursts of hits separated by quiet gaps longer than `gap_s` (an open breaker sends none)."""
    sizes: list[int] = []
    last: float | None = None
    for hit in hits:
        if last is None or hit.at - last > gap_s:
            sizes.append(0)
        sizes[-1] += 1
        last = hit.at
    return sizes


def fleet_figures(
    kind: Kind, fleet: Fleet, dependency: Dependency, services: Services, options: Options
) -> FleetFigures:
    figures = FleetFigures(cold=[], warm=[], probes=[])
    url = dependency.url

    def breaker(label: str, trial: int) -> str:
        name = f"bench-{kind}-{label}-{trial}-{os.getpid()}"
        if kind == "client":
            services.fresh(
                name,
                open_timeout_s=OPEN_TIMEOUT_S,
                half_open_max_calls=HALF_OPEN_MAX_CALLS,
                success_threshold=HALF_OPEN_MAX_CALLS,
            )
        return name

    def run(name: str, **fields: object) -> None:
        results = fleet.run(Run(breaker=name, url=url, open_timeout_s=OPEN_TIMEOUT_S, **fields))  # type: ignore[arg-type]
        figures.clean &= all(not r.unexpected for r in results)

    for trial in range(options.trials):
        # Cold: a fresh breaker, the dependency dead before anyone calls; everyone starts at the barrier.
        name = breaker("cold", trial)
        dependency.set_mode(Mode.DEAD)
        before = dependency.hits
        run(name, until="refused")
        figures.cold.append(dependency.hits - before)

        # Warm: healthy calls until every process is on the fast path (ours: a run without one acquire), then
        # the dependency dies while they are calling.
        name = breaker("warm", trial)
        dependency.set_mode(Mode.HEALTHY)
        for _ in range(5):
            results = fleet.run(Run(breaker=name, url=url, until="stopped", max_calls=20))
            if kind != "client" or total(results, "acquires") == 0:
                break
        dead_before = dependency.hits_in(Mode.DEAD)
        fleet.begin(Run(breaker=name, url=url, until="refused", max_s=30, open_timeout_s=OPEN_TIMEOUT_S))
        dependency.wait_for_hits(dependency.hits + WARM_CALLS, timeout_s=30)
        dependency.set_mode(Mode.DEAD)
        results = fleet.collect()
        figures.clean &= all(not r.unexpected for r in results)
        figures.warm.append(dependency.hits_in(Mode.DEAD) - dead_before)

    # Half-open windows: the last warm breaker is open; let the fleet run through `windows` of them, the dependency
    # dead. Each window is a burst of hits after a quiet open time.
    first = len(dependency.hit_log())
    fleet.begin(
        Run(breaker=name, url=url, until="stopped", max_s=60, refusal_pause_s=0.005, open_timeout_s=OPEN_TIMEOUT_S)
    )
    deadline = time.monotonic() + (options.windows + 2) * (OPEN_TIMEOUT_S + 1) + 10
    while time.monotonic() < deadline:
        bursts = windows_of(dependency.hit_log()[first:], OPEN_TIMEOUT_S / 2)
        # A burst is over once the open time after it has started (no hit for half of it).
        log = dependency.hit_log()
        quiet = len(log) > first and time.time() - log[-1].at > OPEN_TIMEOUT_S / 2
        if len(bursts) >= options.windows and quiet:
            break
        time.sleep(0.05)
    fleet.stop()
    results = fleet.collect()
    figures.clean &= all(not r.unexpected for r in results)
    figures.probes = windows_of(dependency.hit_log()[first:], OPEN_TIMEOUT_S / 2)[: options.windows]
    return figures


def spread(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def run_fleets(service_urls: tuple[str, ...], redis_url: str, options: Options) -> None:
    print(
        f"\n2. Fleet: {FLEET_SIZE} processes, one call in flight each, failure threshold {THRESHOLD}, "
        f"a dependency that answers 503 at once; open time {OPEN_TIMEOUT_S:g}s, half_open_max_calls "
        f"{HALF_OPEN_MAX_CALLS} (ours). min / median / max over {options.trials} trials ({options.windows} windows)"
    )
    kinds: dict[Kind, str] = {"client": "ours", "pybreaker": "pybreaker+Redis", "lua": "atomic Lua check per call"}
    columns: dict[str, FleetFigures] = {}
    services = Services(service_urls[0])
    with running_dependency() as dependency:
        for kind, label in kinds.items():
            spec = WorkerSpec(
                kind=kind, service_urls=service_urls, token=CLIENT_TOKEN, redis_url=redis_url, flush_interval_s=0.1
            )
            with Fleet(FLEET_SIZE, spec) as fleet:
                columns[label] = fleet_figures(kind, fleet, dependency, services, options)
    services.close()
    width = 28
    print(f"   {'':<58}" + "".join(f"{label:>{width}}" for label in columns))
    rows = [
        ("cold fleet: dependency hits until all stopped", "cold", "(ideal 5, target <= 7)"),
        ("warm fleet: hits after it died, until all stopped", "warm", "(5 + up to 1 per process)"),
        ("probes per half-open window", "probes", f"(target {HALF_OPEN_MAX_CALLS})"),
    ]
    for title, field, note in rows:
        cells = "".join(f"{spread(getattr(figures, field)):>{width}}" for figures in columns.values())
        print(f"   {title:<58}{cells}   {note}")
    dirty = [label for label, figures in columns.items() if not figures.clean]
    print(f"   errors of a client's own plumbing seen by callers: {', '.join(dirty) if dirty else 'none'}")


# -- 3. propagation -------------------------------------------------------------------------------------------------


def first_view(conn: Connection, generation: int, forced: str | None) -> float:
    """When this watcher first knew the breaker at `generation` (or later) with force `forced`."""
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while conn.poll(max(0.0, deadline - time.monotonic())):
        seen: Seen = conn.recv()
        at, seen_generation, seen_forced = seen
        if seen_generation > generation or (seen_generation == generation and seen_forced == forced):
            return at
    raise TimeoutError(f"a client did not learn generation {generation} within {PROPAGATION_TIMEOUT_S}s")


def run_propagation(service_urls: tuple[str, ...], options: Options) -> None:
    name = f"bench-propagation-{os.getpid()}"
    admin = httpx.Client(base_url=service_urls[0], headers=ADMIN_HEADERS, timeout=10.0)
    admin.put(f"/breakers/{name}", json={"failure_threshold": THRESHOLD}).raise_for_status()
    spawn = multiprocessing.get_context("spawn")
    watchers: list[tuple[Connection, multiprocessing.process.BaseProcess]] = []
    for index in range(PROPAGATION_CLIENTS):
        ours, theirs = spawn.Pipe()
        url = service_urls[index % len(service_urls)]
        process = spawn.Process(target=watcher_main, args=(theirs, url, CLIENT_TOKEN, name), daemon=True)
        process.start()
        watchers.append((ours, process))
    slowest: list[float] = []
    every: list[float] = []
    answered: list[float] = []
    try:
        for conn, _ in watchers:
            if not conn.poll(60.0) or conn.recv() != "ready":
                raise TimeoutError("a watcher did not start")
        for index in range(options.transitions):
            mode, path = ("OPEN", "force-open") if index % 2 == 0 else ("CLOSED", "force-close")
            started = time.monotonic()
            answer = admin.post(f"/breakers/{name}/{path}", json={"reason": "bench"})
            answer.raise_for_status()
            answered.append((time.monotonic() - started) * 1000)
            generation = answer.json()["generation"]
            seen_ms = [(first_view(conn, generation, mode) - started) * 1000 for conn, _ in watchers]
            slowest.append(max(seen_ms))
            every.extend(seen_ms)
    finally:
        for conn, watcher in watchers:
            with contextlib.suppress(OSError):
                conn.send("stop")
            watcher.join(timeout=10.0)
            if watcher.is_alive():
                watcher.kill()
        admin.close()
    print(
        f"\n3. Propagation: {PROPAGATION_CLIENTS} client processes (following /events on {len(service_urls)} "
        f"replicas), {options.transitions} forced transitions; ms from just before the admin request to the "
        "clients' views"
    )
    figures = (
        ("every client knows it (slowest of 8)", slowest),
        ("one client's view", every),
        ("for scale: the admin request answered", answered),
    )
    for label, values in figures:
        goal = "" if label.startswith("for scale") else "   (goal p99 <= 10)"
        print(
            f"   {label:<42} p50 {statistics.median(values):7.2f}   p99 {quantile_ms(values, 0.99):7.2f}   "
            f"max {max(values):7.2f}{goal}"
        )


def quantile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- setup ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def backend(directory: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """A redis-server and two service replicas on it: (redis URL, service URLs)."""
    with RedisServer(directory / "redis") as server, contextlib.ExitStack() as replicas:
        urls = tuple(
            replicas.enter_context(ServiceProcess(directory / f"service-{i}", service_env(server.url))).url
            for i in range(2)
        )
        yield server.url, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run: fewer calls, trials and windows")
    parser.add_argument("--propagation-only", action="store_true", help="only section 3")
    args = parser.parse_args()
    quick = Options(calls=3000, rounds=3, trials=1, windows=2, transitions=100)
    options = quick if args.quick else Options(20000, 10, 5, 5, 400)
    print(f"bench_client: Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp, backend(Path(tmp)) as (redis_url, urls):
        if not args.propagation_only:
            asyncio.run(cost_per_call(urls[0], redis_url, options))
            sync_cost_per_call(urls[0], redis_url, CLIENT_TOKEN, calls=options.calls, rounds=options.rounds)
            run_fleets(urls, redis_url, options)
        run_propagation(urls, options)
    print(f"\ndone in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
