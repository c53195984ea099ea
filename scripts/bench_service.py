"""acquire and record through the HTTP API, as a share of the Python HTTP floor measured in the same run.

Starts, on 127.0.0.1 only: a redis-server on a free port; the floor, a bare Starlette route on uvicorn (uvloop +
httptools) answering the same Decision JSON (scripts/bare_route.py); `python -m breaker_service` on that Redis at
default settings; with `--workers`, a second replica with `BREAKER_WORKERS=auto`. Then, for `--rounds` rounds, it
runs every case in turn (interleaved, so a neighbour's burst of load hits all cases alike): the floor, acquire,
record, and the raw EVALSHA of the acquire script. The load comes from `wrk` when it is installed (Debian package
`wrk`), else from a keep-alive HTTP/1.1 client in this process (slower: its own cost is part of the figures);
the raw EVALSHA from `redis-benchmark` when installed, else from redis-py.

Printed for each case and round: requests/s, p50 and p99 latency, the server's CPU time per request (from
/proc: on a machine shared with other work it is steadier than requests/s) and the load average at the time;
then the median over rounds of each case's ratio to the floor of its own round.

    python scripts/bench_service.py [--rounds N] [--seconds S] [--connections C] [--workers] [--python-load]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the redis-server and service processes are the tests' (tests/fixtures/)

import httpx  # noqa: E402
from bench_load import evalsha_load, python_load  # noqa: E402

from breaker_client.protocol.machine import new_permit  # noqa: E402
from breaker_service.events import EVENTS_CHANNEL  # noqa: E402
from breaker_service.store.keys import breaker_keys  # noqa: E402
from breaker_service.store.scripts_redis import SOURCES  # noqa: E402
from tests.fixtures.process import HOST, ManagedProcess  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.service import ServiceProcess, deployed_env  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

BODIES: Final = {"acquire": b"{}", "record": b'{"outcome":"success"}'}
_WRK_SCRIPT: Final = 'wrk.method = "POST"\nwrk.body = {body!r}\nwrk.headers["Content-Type"] = "application/json"\n'
_UNITS: Final = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Figure:
    """One case of one round."""

    case: str
    round: int
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None
    load: str


class BareRoute(ManagedProcess):
    """scripts/bare_route.py: the floor."""

    what = "the bare route"
    start_timeout_s = 30.0
    poll_interval_s = 0.05

    @property
    def output_path(self) -> Path:
        return self._directory / "bare.out"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.output_path.open("wb") as out:
            script = str(REPO_ROOT / "scripts" / "bare_route.py")
            return subprocess.Popen([sys.executable, script, str(self.port)], stdout=out, stderr=out, cwd=REPO_ROOT)

    @contextlib.contextmanager
    def _readiness(self) -> Iterator[Callable[[], bool]]:
        with httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=1.0) as client:
            yield lambda: _answers(client)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.post("/breakers/bench/acquire", content=b"{}").status_code == 200
    except httpx.TransportError:
        return False


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and of its children still running (the workers of a replica), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *_children(pid)]
    total = 0.0
    for one in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def wrk(url: str, body: bytes, *, connections: int, seconds: float, directory: Path) -> tuple[int, float, float, float]:
    """(requests, per second, p50 ms, p99 ms) of one wrk run; a non-2xx answer is an error."""
    script = directory / f"post-{hashlib.sha1(body).hexdigest()[:8]}.lua"
    script.write_text(_WRK_SCRIPT.format(body=body.decode()))
    threads = "1"  # one thread: on a small machine wrk's own threads would take the cores from the server
    command = [
        "wrk",
        "-t",
        threads,
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk {url}: errors\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return requests, per_s, _percentile(out, "50"), _percentile(out, "99")


def _percentile(out: str, which: str) -> float:
    found = re.search(rf"^\s+{which}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {which}% latency in wrk's output:\n{out}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def redis_benchmark(port: int, *, connections: int, requests: int) -> tuple[int, float, float, float]:
    """(requests, per second, p50 ms, p99 ms) of `redis-benchmark` calling the acquire script by SHA."""
    sha = hashlib.sha1(SOURCES["acquire"]).hexdigest()
    command = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(connections), "-n", str(requests)]
    # A plain acquire ({}): no lease, the permit id the replica would make.
    command += ["--csv", "evalsha", sha, "4", *breaker_keys("bench-raw"), "bench-raw", EVENTS_CHANNEL, "", new_permit()]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    row = [cell.strip('"') for cell in out.strip().splitlines()[-1].split(",")]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max..."
    return requests, float(row[1]), float(row[4]), float(row[6])


class Bench:
    """The processes of one run and the figures they gave."""

    def __init__(self, options: argparse.Namespace, directory: Path) -> None:
        self.options = options
        self.directory = directory
        self.figures: list[Figure] = []
        self.use_wrk = shutil.which("wrk") is not None and not options.python_load

    def http(self, case: str, round_: int, process: ManagedProcess, path: str, body: bytes) -> None:
        url = f"http://{HOST}:{process.port}{path}"
        pid = process.pid
        assert pid is not None
        load, before = load_average(), cpu_seconds(pid)
        if self.use_wrk:
            requests, per_s, p50, p99 = wrk(
                url, body, connections=self.options.connections, seconds=self.options.seconds, directory=self.directory
            )
        else:
            requests, per_s, p50, p99 = asyncio.run(
                python_load(process.port, path, body, self.options.connections, self.options.seconds)
            )
        cpu_us = (cpu_seconds(pid) - before) / requests * 1e6
        self.figures.append(Figure(case, round_, requests, per_s, p50, p99, cpu_us, load))

    def evalsha(self, round_: int, redis: RedisServer) -> None:
        load = load_average()
        if shutil.which("redis-benchmark") is not None:
            requests = max(20_000, int(self.figures[-1].per_s * self.options.seconds * 2))
            figures = redis_benchmark(redis.port, connections=self.options.connections, requests=requests)
        else:
            figures = asyncio.run(evalsha_load(redis.url, self.options.connections, self.options.seconds))
        self.figures.append(Figure("raw EVALSHA", round_, *figures, None, load))


def run(options: argparse.Namespace) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        redis = stack.enter_context(RedisServer(directory / "redis"))
        bare = stack.enter_context(BareRoute(directory / "bare"))
        # Default settings, as deployed: client routes open (no tokens), the default access-log policy.
        service = stack.enter_context(ServiceProcess(directory / "service", deployed_env(redis.url)))
        replicas: list[tuple[str, ServiceProcess]] = [("service", service)]
        if options.workers:
            env = {**deployed_env(redis.url), "BREAKER_WORKERS": "auto"}
            replicas.append(("workers=auto", stack.enter_context(ServiceProcess(directory / "workers", env))))
        asyncio.run(_seed(redis.url))
        bench = Bench(options, directory)
        for round_ in range(1, options.rounds + 1):
            bench.http("bare route", round_, bare, "/breakers/bench/acquire", BODIES["acquire"])
            for label, replica in replicas:
                for operation, body in BODIES.items():
                    bench.http(f"{label} {operation}", round_, replica, f"/breakers/bench/{operation}", body)
            bench.evalsha(round_, redis)
        return bench.figures


async def _seed(redis_url: str) -> None:
    from breaker_client.protocol.models import BreakerConfig
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.scripts_redis import BreakerScripts

    client = create_redis(redis_url)
    try:
        scripts = BreakerScripts(client)
        await scripts.load()
        await scripts.create("bench-raw", BreakerConfig(), registry=None, cap=1)
    finally:
        await client.aclose()


def report(figures: list[Figure], options: argparse.Namespace, loader: str) -> str:
    lines = [
        f"# bench_service: Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu_model()}),"
        f" {platform.machine()}; load from {loader}, {options.connections} connections, {options.seconds:g} s a case,"
        f" {options.rounds} rounds interleaved",
        f"{'case':<24}{'round':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'x floor':>9}  load avg",
    ]
    floors = {f.round: f for f in figures if f.case == "bare route"}
    for f in figures:
        cpu = f"{f.cpu_us:.0f}" if f.cpu_us is not None else "-"
        share = f.per_s / floors[f.round].per_s
        lines.append(
            f"{f.case:<24}{f.round:>6}{f.per_s:>10.0f}{f.p50_ms:>9.2f}{f.p99_ms:>9.2f}{cpu:>12}{share:>9.2f}  {f.load}"
        )
    lines.append("# median over rounds: req/s as a share of the floor's (x floor), and the floor's CPU per request")
    lines.append("# as a share of the case's (CPU x floor: what the share would be were every process CPU-bound)")
    for case in dict.fromkeys(f.case for f in figures):
        mine = [f for f in figures if f.case == case]
        share = statistics.median(f.per_s / floors[f.round].per_s for f in mine)
        p99 = statistics.median(f.p99_ms for f in mine)
        cpu_shares = [
            floor_cpu / f.cpu_us for f in mine if f.cpu_us and (floor_cpu := floors[f.round].cpu_us) is not None
        ]
        cpu = f"{statistics.median(cpu_shares):.2f}" if cpu_shares else "-"
        lines.append(f"{case:<24} x floor {share:5.2f}   CPU x floor {cpu:>5}   p99 {p99:6.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case, interleaved (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds a case (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--workers", action="store_true", help="also a replica with BREAKER_WORKERS=auto")
    parser.add_argument("--python-load", action="store_true", help="the Python load generator even if wrk is here")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s a case")
    options = parser.parse_args()
    if options.quick:
        options.rounds, options.seconds = 1, 2.0
    loader = "wrk" if shutil.which("wrk") and not options.python_load else "Python (wrk not installed)"
    started = time.monotonic()
    figures = run(options)
    print(report(figures, options, loader))
    print(f"# took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
