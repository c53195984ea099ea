"""The scripted incident, phase by phase; each phase ends on what it observes (a breaker OPEN, a fallback used,
the outbox empty), never on a fixed sleep. `Plan` adds minimum phase lengths for people watching (`make demo`);
the test runs it with none.

1. steady: every dependency healthy until each has answered (the caches fill).
2. outage: the SMS agent and OpenAI fail (503), Collections Monitor is slow (longer than a call's timeout), the
   Notification Service rate limits (429, Retry-After); until their four breakers have opened.
3. sre: an SRE force-opens Supabase with a reason and a TTL (a planned failover); until every seed fallback has
   answered at least once.
4. recovery: every dependency healthy again; until all five breakers are CLOSED (Supabase's force lifts when its
   TTL runs out), every queued SMS is replayed and every buffered Supabase row is written.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from examples.fake_dependencies.models import DEPENDENCIES, Mode, ModeChange

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from examples.demo.observe import Observer
    from examples.orchestrator.stats import OrchestratorStats

__all__ = [
    "OUTAGE",
    "SRE_REASON",
    "IncidentError",
    "Plan",
    "Timeline",
    "fallback_counts",
    "missing_fallbacks",
    "refused",
    "run_incident",
    "settled",
]

OUTAGE: Final = {
    "sms_agent": Mode.FAILING,
    "openai": Mode.FAILING,
    "collections_monitor": Mode.SLOW,
    "notification_service": Mode.RATE_LIMITED,
}
FORCED: Final = "supabase"
SRE_REASON: Final = "planned Supabase failover (demo)"
POLL_S: Final = 0.2


class IncidentError(RuntimeError):
    """A phase did not reach what it waits for in time."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Minimum phase lengths (seconds from the incident's start or the phase's), the outage's shape, the bound on
    each wait."""

    steady_s: float = 0.0
    outage_s: float = 0.0
    total_s: float = 0.0
    warm_hits: int = 3
    slow_s: float = 5.0
    retry_after_s: float = 1.0
    force_ttl_s: float = 10.0
    wait_timeout_s: float = 90.0


@dataclass
class Timeline:
    """The phase now, and what happened when (seconds since the start)."""

    phase: str = "starting"
    started_at: float = field(default_factory=time.time)
    """Unix time of the start: history entries are in Unix seconds (Redis time on this machine)."""
    before_outage: OrchestratorStats | None = None
    """The orchestrator's counters when the outage began: what the incident caused is the difference."""
    events: list[tuple[float, str]] = field(default_factory=list)


async def run_incident(observer: Observer, plan: Plan, timeline: Timeline, report: Callable[[str], None]) -> None:
    """Run the four phases (then hold until `plan.total_s`); `IncidentError` if a phase does not get there."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    def mark(phase: str | None, what: str) -> None:
        if phase is not None:
            timeline.phase = phase
        timeline.events.append((loop.time() - start, what))
        report(what)

    async def hold_until(seconds_from_start: float) -> None:
        await asyncio.sleep(max(0.0, start + seconds_from_start - loop.time()))

    async def wait(what: str, check: Callable[[], Awaitable[bool]]) -> None:
        deadline = loop.time() + plan.wait_timeout_s
        while not await check():
            if loop.time() > deadline:
                raise IncidentError(f"phase {timeline.phase}: no {what} after {plan.wait_timeout_s:g}s")
            await asyncio.sleep(POLL_S)
        mark(None, f"observed: {what}")

    async def warm() -> bool:
        stats = await observer.fakes()
        return all(stats.dependencies[name].by_mode[Mode.HEALTHY] >= plan.warm_hits for name in DEPENDENCIES)

    mark("steady", "steady: all five dependencies healthy")
    await wait("answers from every dependency", warm)
    await hold_until(plan.steady_s)

    outage_start = loop.time() - start
    before = timeline.before_outage = await observer.orchestrator()
    generations = {name: (await observer.breaker(name)).generation for name in OUTAGE}
    for name, mode in OUTAGE.items():
        await observer.set_mode(name, ModeChange(mode=mode, slow_s=plan.slow_s, retry_after_s=plan.retry_after_s))
    mark("outage", "outage: " + ", ".join(f"{name} {mode}" for name, mode in OUTAGE.items()))

    async def opened() -> bool:
        for name, generation in generations.items():
            history = await observer.history(name)
            if not any(t.target == "OPEN" and t.generation > generation for t in history):
                return False
        return True

    await wait("the four breakers OPEN", opened)

    refused_before_force = refused(await observer.orchestrator(), FORCED)
    await observer.force_open(FORCED, reason=SRE_REASON, ttl_s=plan.force_ttl_s)
    mark("sre", f"sre: force-open {FORCED} for {plan.force_ttl_s:g}s: {SRE_REASON}")

    async def every_fallback() -> bool:
        stats = await observer.orchestrator()
        return (
            not missing_fallbacks(stats, since=before)
            and all(refused(stats, name) > refused(before, name) for name in OUTAGE)
            and refused(stats, FORCED) > refused_before_force
        )

    await wait("every seed fallback used since the outage began, calls refused by every open breaker", every_fallback)
    await hold_until(outage_start + plan.outage_s)

    for name in OUTAGE:
        await observer.heal(name)
    mark("recovery", "recovery: every dependency healthy")

    async def recovered() -> bool:
        states = [await observer.breaker(name) for name in DEPENDENCIES]
        return all(s.state == "CLOSED" and s.forced is None for s in states) and await settled(observer)

    await wait("five breakers CLOSED, outbox replayed, buffered rows written", recovered)
    timeline.phase = "after"
    await hold_until(plan.total_s)


def fallback_counts(stats: OrchestratorStats) -> dict[str, int]:
    """How often each seed fallback answered."""
    return {
        "collections_monitor": stats.tenant_from_cache + stats.tenant_basic,
        "sms_agent": len(stats.sms_queued),
        "notification_service": stats.notifications_for_review,
        "openai": stats.templates_used,
        "supabase": stats.supabase_rows_buffered + stats.supabase_cached_reads,
    }


def missing_fallbacks(stats: OrchestratorStats, since: OrchestratorStats | None = None) -> list[str]:
    """The seed fallbacks the orchestrator has not used (since `since`, when given)."""
    now = fallback_counts(stats)
    before = fallback_counts(since) if since is not None else dict.fromkeys(now, 0)
    return [name for name, count in now.items() if count <= before[name]]


def refused(stats: OrchestratorStats, name: str) -> int:
    counts = stats.dependencies.get(name)
    return 0 if counts is None else counts.refused


async def settled(observer: Observer) -> bool:
    """Nothing left behind: the outbox empty, every queued SMS replayed, every buffered Supabase row written."""
    stats = await observer.orchestrator()
    outbox = await observer.outbox()
    return (
        outbox.waiting == 0
        and set(stats.sms_queued) <= set(stats.sms_replayed)
        and stats.supabase_rows_flushed >= stats.supabase_rows_buffered
    )
