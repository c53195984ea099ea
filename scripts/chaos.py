"""Chaos against two replicas and a fleet of client processes: Redis flushed, restarted empty, stopped, killed.

Starts, on 127.0.0.1 only and fresh for each scenario: a redis-server on a free port, two `python -m breaker_service`
replicas on it, a local HTTP dependency that counts every request (tests/fixtures/dependency.py) and a fleet of
client worker processes (tests/fleet/) calling it through breaker `payments`. Scenarios:

1. FLUSHALL while `payments` is forced OPEN: the time until the force is back on both replicas, the dependency hits
   meanwhile (0: nobody may call a force-opened dependency), restore history entries beyond one ("duplicates").
2. An empty restart (kill, start on an empty data dir) while forced: the same figures.
3. Redis SIGSTOPped for 5 s while records (one per probe breaker), enqueues (with idempotency keys) and claims go to
   both replicas: the slowest answer (the contract: the store timeout, 2 s, plus 0.5 s), failures counted twice and
   jobs made twice after the resume ("duplicates"), and the time until both replicas are ready again.
4. Redis killed for 3 s and started empty under a calling fleet: errors reaching callers, requests the clients sent
   to the service, and the time from the restart until every client is back on its fast path (a phase of calls
   with no request to the service).
5. A replica started while Redis is down: what it answers (503, never a guess), and the time until it is ready.

Prints one table. Every wait is bounded; the script stops everything it started.

    python scripts/chaos.py [--fleet N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the fleet workers and fixtures live in the tests package

import httpx  # noqa: E402
import redis  # noqa: E402

from tests.fixtures.dependency import running_dependency  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS, CLIENT_TOKEN, ServiceProcess, service_env  # noqa: E402
from tests.fleet.fleet import Fleet, total  # noqa: E402
from tests.fleet.protocol import Run, RunResult, WorkerSpec  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

RESTORE_REASON: Final = "restored after store reset"
WAIT_S: Final = 30.0
PAUSE_S: Final = 5.0
PROBES: Final = 6
"""Records, enqueues and claims sent while Redis is stopped."""


@dataclass
class Row:
    """One scenario's figures; None where a figure does not apply."""

    scenario: str
    calls: int | None = None
    errors: int | None = None
    hits: int | None = None
    service_requests: int | None = None
    duplicates: int | None = None
    slowest_s: float | None = None
    recovery_s: float | None = None
    note: str = ""


@dataclass
class Backend:
    """A Redis and two replicas on it."""

    server: RedisServer
    replicas: list[ServiceProcess]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in self.replicas)


@contextlib.contextmanager
def backend(directory: Path) -> Iterator[Backend]:
    with RedisServer(directory / "redis") as server, contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(ServiceProcess(directory / f"service-{i}", service_env(server.url))) for i in range(2)
        ]
        yield Backend(server, replicas)


def until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Poll `predicate` (bounded); the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"chaos: timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def get(url: str, path: str) -> httpx.Response:
    return httpx.get(url + path, headers=CLIENT_HEADERS, timeout=10.0)


def post(url: str, path: str, body: Any, *, admin: bool = False) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=ADMIN_HEADERS if admin else CLIENT_HEADERS, timeout=10.0)


def ready(urls: tuple[str, ...]) -> bool:
    try:
        return all(get(url, "/health/ready").status_code == 200 for url in urls)
    except httpx.TransportError:
        return False


def forced_everywhere(urls: tuple[str, ...], above: int) -> bool:
    for url in urls:
        answer = get(url, "/breakers/payments")
        if answer.status_code != 200 or answer.json()["forced"] != "OPEN" or answer.json()["generation"] <= above:
            return False
    return True


def restore_entries(url: str) -> int:
    transitions = get(url, "/breakers/payments/history").json()["transitions"]
    return sum(1 for t in transitions if t["reason"] == RESTORE_REASON)


def errors(results: list[RunResult]) -> int:
    return sum(len(r.unexpected) for r in results)


def forced_reset(name: str, empty_restart: bool, fleet_size: int, directory: Path) -> Row:
    """Scenarios 1 and 2."""
    with backend(directory) as up, running_dependency() as dependency:
        forced = post(up.urls[0], "/breakers/payments/force-open?create=true", {"reason": "chaos"}, admin=True).json()
        get(up.urls[1], "/breakers/payments")
        spec = WorkerSpec(service_urls=up.urls, token=CLIENT_TOKEN, recheck_s=0.2, timeout_s=2.0)
        with Fleet(fleet_size, spec) as fleet:
            fleet.begin(Run(breaker="payments", url=dependency.url, until="stopped", max_s=120, pause_s=0.01))
            try:
                time.sleep(0.5)
                hits_before = dependency.hits
                if empty_restart:
                    up.server.restart()
                else:
                    client = redis.Redis.from_url(up.server.url)
                    client.flushall()
                    client.close()
                took = until(lambda: forced_everywhere(up.urls, forced["generation"]), "the force to be restored")
                time.sleep(1.0)  # the fleet goes on calling a little after the restore
            finally:
                fleet.stop()
                results = fleet.collect()
        return Row(
            name,
            calls=total(results, "calls"),
            errors=errors(results),
            hits=dependency.hits - hits_before,
            service_requests=total(results, "acquires") + total(results, "records"),
            duplicates=restore_entries(up.urls[0]) - 1,
            recovery_s=took,
            note="force back on both replicas",
        )


def timed(call: Callable[[], httpx.Response], into: list[float]) -> httpx.Response:
    started = time.monotonic()
    try:
        return call()
    finally:
        into.append(time.monotonic() - started)


def hung_redis(directory: Path) -> Row:
    """Scenario 3."""
    with backend(directory) as up:
        a, b = up.urls
        for i in range(PROBES):
            post(a, f"/breakers/probe-{i}/acquire", {})
        times: dict[str, list[float]] = {"record": [], "enqueue": [], "claim": []}
        threads = [
            threading.Thread(target=timed, args=(call, times[kind]))
            for i in range(PROBES)
            for kind, call in (
                ("record", lambda i=i: post((a, b)[i % 2], f"/breakers/probe-{i}/record", {"outcome": "failure"})),
                (
                    "enqueue",
                    lambda i=i: post((a, b)[i % 2], "/queues/chaos/jobs", {"payload": i, "idempotency_key": f"k{i}"}),
                ),
                (
                    "claim",
                    lambda i=i: post(
                        (a, b)[i % 2], "/queues/chaos/claim", {"consumer": f"c{i}", "max": 1, "lease_s": 60}
                    ),
                ),
            )
        ]
        up.server.pause()
        paused_at = time.monotonic()
        paused_at_wall = time.time()
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_S)
            time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
        finally:
            up.server.resume()
        took = until(lambda: ready(up.urls), "both replicas to be ready")
        failures_twice = sum(
            max(0, get(a, f"/breakers/probe-{i}").json()["counts"]["failure"] - 1) for i in range(PROBES)
        )
        for i in range(PROBES):  # the enqueues answered 503 (outcome unknown): sent again with the same key
            post((b, a)[i % 2], "/queues/chaos/jobs", {"payload": i, "idempotency_key": f"k{i}"})
        stats = get(a, "/queues/chaos").json()
        jobs_twice = stats["ready"] + stats["pending"] + stats["delayed"] - PROBES
        served_s = max(_served_s(replica, paused_at_wall) for replica in up.replicas)
        return Row(
            "SIGSTOP 5 s (records, enqueues, claims)",
            duplicates=failures_twice + jobs_twice,
            slowest_s=max(max(values) for values in times.values()),
            recovery_s=took,
            note="slowest as seen by callers: "
            + ", ".join(f"{kind} {max(values):.2f} s" for kind, values in times.items())
            + f"; by the replicas: {served_s:.2f} s",
        )


def _served_s(replica: ServiceProcess, since: float) -> float:
    """The longest request a replica logged (its own `duration_ms`) since Unix time `since`."""
    longest_ms = 0.0
    for line in replica.stdout_path.read_text(errors="replace").splitlines():
        if '"event":"request"' not in line:
            continue
        entry = json.loads(line)
        at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        if at >= since and entry["path"].startswith(("/breakers/probe-", "/queues/chaos/")):
            longest_ms = max(longest_ms, float(entry["duration_ms"]))
    return longest_ms / 1000


def fleet_through_kill(fleet_size: int, directory: Path) -> Row:
    """Scenario 4."""
    with backend(directory) as up, running_dependency() as dependency:
        post(up.urls[0], "/breakers/payments/acquire", {})
        spec = WorkerSpec(service_urls=up.urls, token=CLIENT_TOKEN, recheck_s=0.2, timeout_s=2.0)
        phase = Run(breaker="payments", url=dependency.url, until="stopped", max_calls=50, pause_s=0.002)
        with Fleet(fleet_size, spec) as fleet:
            fleet.run(phase)
            hits_before = dependency.hits
            fleet.begin(Run(breaker="payments", url=dependency.url, until="stopped", max_s=120, pause_s=0.005))
            try:
                time.sleep(0.5)
                up.server.kill()
                time.sleep(3.0)
                up.server.start()
                restarted = time.monotonic()
                until(lambda: ready(up.urls), "both replicas back on Redis")
            finally:
                fleet.stop()
                through = fleet.collect()
            phases = [fleet.run(phase)]
            while not _fast(phases[-1]) and time.monotonic() - restarted < WAIT_S:
                phases.append(fleet.run(phase))
            fast_after = time.monotonic() - restarted
        results = [*through, *(r for p in phases for r in p)]
        return Row(
            "Redis killed 3 s, empty restart, fleet",
            calls=total(results, "calls"),
            errors=errors(results),
            hits=dependency.hits - hits_before,
            service_requests=total(results, "acquires") + total(results, "records"),
            recovery_s=fast_after if _fast(phases[-1]) else None,
            note="until every client is on its fast path",
        )


def _fast(results: list[RunResult]) -> bool:
    return all(r.acquires == 0 and r.live and not r.degraded for r in results)


def replica_without_redis(directory: Path) -> Row:
    """Scenario 5."""
    with RedisServer(directory / "redis") as server:
        server.stop()
        with ServiceProcess(directory / "service", service_env(server.url)) as replica:
            answers = [post(replica.url, "/breakers/openai/acquire", {}).status_code for _ in range(5)]
            answers.append(get(replica.url, "/health/ready").status_code)
            server.start()
            took = until(lambda: ready((replica.url,)), "the replica to read its store")
    refused = sum(1 for status in answers if status == 503)
    return Row(
        "replica started while Redis is down",
        errors=len(answers) - refused,
        recovery_s=took,
        note=f"{refused}/{len(answers)} answers 503 ORC_005 (no guess)",
    )


def show(rows: list[Row]) -> None:
    def cell(value: float | None, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if digits else str(value)

    header = f"{'scenario':<42}{'calls':>7}{'errors':>8}{'dep hits':>10}{'svc reqs':>10}{'dups':>6}"
    print(f"\n{header}{'slowest s':>11}{'recovery s':>12}   note")
    for row in rows:
        print(
            f"{row.scenario:<42}{cell(row.calls):>7}{cell(row.errors):>8}{cell(row.hits):>10}"
            f"{cell(row.service_requests):>10}{cell(row.duplicates):>6}{cell(row.slowest_s, 2):>11}"
            f"{cell(row.recovery_s, 2):>12}   {row.note}"
        )
    print(
        "\nerrors: errors of the client's own reaching callers (scenario 5: answers other than 503); dep hits: calls "
        "that reached the dependency; svc reqs: requests the clients sent to the service; dups: restore entries "
        "beyond one, failures counted twice, jobs made twice"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fleet", type=int, default=4, help="client worker processes (default 4)")
    args = parser.parse_args()
    print(f"chaos: Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        root = Path(tmp)
        rows.append(forced_reset("FLUSHALL, breaker forced OPEN", False, args.fleet, root / "flush"))
        rows.append(forced_reset("empty restart, breaker forced OPEN", True, args.fleet, root / "restart"))
        rows.append(hung_redis(root / "hung"))
        rows.append(fleet_through_kill(args.fleet, root / "kill"))
        rows.append(replica_without_redis(root / "down"))
    show(rows)
    print(f"\ndone in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
