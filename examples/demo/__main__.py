"""`make demo`: start everything, run the scripted incident under load, print the summary; exit 0 only when it
proves the seed's claims (every fallback used, every queued SMS replayed, no error reached a caller).

    python -m examples.demo [--seconds N] [--load builtin|locust] [--users N] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import httpx

from examples.demo.incident import IncidentError, Plan, Timeline, run_incident, settled
from examples.demo.load import LoadGenerator
from examples.demo.locust_run import LocustRun
from examples.demo.observe import Observer
from examples.demo.stack import ADMIN_ACTOR, DemoStack, StackSettings
from examples.demo.summary import CallerFigures, gather_facts, problems, render
from examples.fake_dependencies.models import DEPENDENCIES

if TYPE_CHECKING:
    from collections.abc import Sequence

PROGRESS_S: Final = 2.0
SETTLE_TIMEOUT_S: Final = 30.0
SETTLE_POLL_S: Final = 0.2
SHORT: Final = {"collections_monitor": "cm", "sms_agent": "sms", "notification_service": "notif"}


def plan_for(seconds: float) -> Plan:
    """Phase lengths for people watching: 15% steady, the outage 35%, Supabase forced for 25%, recovery after."""
    return Plan(steady_s=0.15 * seconds, outage_s=0.35 * seconds, total_s=seconds, force_ttl_s=max(3.0, 0.25 * seconds))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", "60")))
    parser.add_argument("--load", choices=("builtin", "locust"), default=os.environ.get("DEMO_LOAD", "builtin"))
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second, all callers together")
    parser.add_argument("--users", type=int, default=8, help="concurrent callers (Locust users)")
    parser.add_argument("--dir", type=Path, default=None, help="where logs go (default: a new temporary directory)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="breaker-demo-"))
    # Ctrl-C (SIGINT, sent to the whole process group: the children stop too) and SIGTERM end the demo at once;
    # the stack's exit then stops every process it started that is still running.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"starting Redis (if installed), the service, the fakes and the orchestrator; logs in {directory}")
        with DemoStack(directory, StackSettings()) as stack:
            replicas = len(stack.replicas)
            print(f"store: {stack.store}, {replicas} replica{'s' * (replicas > 1)}: {', '.join(stack.service_urls)}")
            print(f"dashboard: {stack.service_urls[0]}/   (admin token for its buttons: {stack.admin_token})")
            print(f"orchestrator: {stack.orchestrator_url}   fakes: {stack.fakes_url}/_admin/stats")
            return asyncio.run(_run(stack, args, directory))
    except Exception:
        if not _interrupted.is_set():
            raise
    except KeyboardInterrupt:
        pass
    print("\ninterrupted: every process the demo started is stopped", file=sys.stderr)
    return 130


_interrupted = threading.Event()


def _interrupt(signum: int, frame: object) -> NoReturn:
    # An error from a child that stopped first must not hide the interruption.
    _interrupted.set()
    raise KeyboardInterrupt


async def _run(stack: DemoStack, args: argparse.Namespace, directory: Path) -> int:
    plan = plan_for(args.seconds)
    timeline = Timeline()
    async with httpx.AsyncClient(timeout=10.0) as http:
        observer = Observer(
            http,
            service_url=stack.service_urls[-1],
            orchestrator_url=stack.orchestrator_url,
            fakes_url=stack.fakes_url,
            admin_token=stack.admin_token,
        )
        stop = asyncio.Event()
        load = LoadGenerator(stack.orchestrator_url, rate_per_s=args.rate, concurrency=args.users)
        locust = LocustRun(
            directory / "locust", stack.orchestrator_url, users=args.users, rate_per_user=args.rate / args.users
        )
        if args.load == "locust":
            locust.start()
            load_task = None
        else:
            load_task = asyncio.create_task(load.run(stop))
        progress = asyncio.create_task(_progress(observer, load if load_task else None, timeline))
        failure: str | None = None
        try:
            await run_incident(observer, plan, timeline, lambda line: print(f"  >> {line}"))
        except IncidentError as exc:
            failure = str(exc)
        finally:
            stop.set()
            locust.stop()
            if load_task is not None:
                await load_task
            progress.cancel()
        await _settle(observer)
        callers = locust.figures() if load_task is None else _builtin_figures(load, timeline)
        facts = await gather_facts(observer, callers)
    print(render(facts, timeline))
    found = problems(facts) + ([failure] if failure else [])
    print(f"\ndashboard: {stack.service_urls[0]}/   logs: {directory}   forced by: {ADMIN_ACTOR}")
    if found:
        print("\nFAILED:\n" + "\n".join(f"  - {problem}" for problem in found))
        return 1
    print("\nOK: every seed fallback answered, every queued SMS was replayed, no error reached a caller")
    return 0


def _builtin_figures(load: LoadGenerator, timeline: Timeline) -> CallerFigures:
    result = load.result
    elapsed = max(time.time() - timeline.started_at, 1e-9)
    return CallerFigures(
        source="built-in load generator",
        requests=result.requests,
        errors=result.errors,
        requests_per_s=result.requests / elapsed,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        degraded=result.degraded,
        correlation_ids=frozenset(result.correlation_ids),
    )


async def _settle(observer: Observer) -> None:
    """After the load stops, give the workers a moment to finish what they hold (bounded)."""
    for _ in range(int(SETTLE_TIMEOUT_S / SETTLE_POLL_S)):
        if await settled(observer):
            return
        await asyncio.sleep(SETTLE_POLL_S)


async def _progress(observer: Observer, load: LoadGenerator | None, timeline: Timeline) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        await asyncio.sleep(PROGRESS_S)
        try:
            states = await asyncio.gather(*(observer.breaker(name) for name in DEPENDENCIES))
            stats = await observer.orchestrator()
        except httpx.HTTPError as exc:
            print(f"  (progress unavailable: {exc!r})")
            continue
        breakers = " ".join(f"{SHORT.get(s.name, s.name)}={s.state}{'(forced)' if s.forced else ''}" for s in states)
        callers = "" if load is None else f"callers {load.result.requests} req, {load.result.caller_errors} errors | "
        print(
            f"[{loop.time() - start:4.0f}s] {timeline.phase:<8} | {callers}{breakers} | "
            f"sms queued {len(stats.sms_queued)} replayed {len(stats.sms_replayed)} | "
            f"templates {stats.templates_used} review {stats.notifications_for_review} "
            f"cached tenants {stats.tenant_from_cache} buffered rows {stats.supabase_rows_buffered}"
        )


if __name__ == "__main__":
    sys.exit(main())
