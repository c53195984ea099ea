"""The demo's end: the facts (read once the load has stopped), what they prove or not, and the printed summary."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from examples.demo.incident import missing_fallbacks
from examples.fake_dependencies.models import DEPENDENCIES, Mode

if TYPE_CHECKING:
    from collections import Counter

    from examples.demo.incident import Timeline
    from examples.demo.observe import Observer, OutboxCounts, Transition
    from examples.fake_dependencies.models import Stats
    from examples.orchestrator.stats import OrchestratorStats

__all__ = ["CallerFigures", "Facts", "gather_facts", "problems", "render"]

BACKGROUND_ID_PREFIXES: Final = ("flush-",)
"""Correlation ids the orchestrator makes for its own background work (the Supabase flusher)."""


@dataclass(frozen=True, kw_only=True)
class CallerFigures:
    """What the orchestrator's callers saw (the built-in load generator or Locust)."""

    source: str
    requests: int
    errors: Counter[str]
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    degraded: int | None = None
    correlation_ids: frozenset[str] | None = None
    """The ids the callers sent, when known."""


@dataclass(frozen=True, kw_only=True)
class Facts:
    callers: CallerFigures
    orchestrator: OrchestratorStats
    fakes: Stats
    outbox: OutboxCounts
    transitions: list[Transition]

    def hits_while_failing(self, name: str) -> int:
        return sum(count for mode, count in self.fakes.dependencies[name].by_mode.items() if mode != Mode.HEALTHY)


async def gather_facts(observer: Observer, callers: CallerFigures) -> Facts:
    histories = await asyncio.gather(*(observer.history(name) for name in DEPENDENCIES))
    return Facts(
        callers=callers,
        orchestrator=await observer.orchestrator(),
        fakes=await observer.fakes(),
        outbox=await observer.outbox(),
        transitions=sorted((t for history in histories for t in history), key=lambda t: (t.at, t.generation)),
    )


def problems(facts: Facts) -> list[str]:
    """Every way the run falls short of what the demo claims; empty when it proves it."""
    found: list[str] = []
    stats = facts.orchestrator
    found += [f"the {name} fallback was never used" for name in missing_fallbacks(stats)]
    queued = set(stats.sms_queued)
    if not queued <= set(stats.sms_replayed):
        found.append(f"{len(queued - set(stats.sms_replayed))} queued SMS were never replayed")
    if not queued <= set(facts.fakes.dependencies["sms_agent"].delivered):
        found.append("the SMS agent never received some queued messages")
    if facts.outbox.waiting or facts.outbox.dead:
        found.append(f"the outbox still holds jobs: {facts.outbox}")
    if stats.sms_enqueue_errors:
        found.append(f"{stats.sms_enqueue_errors} SMS could not be queued")
    if stats.supabase_rows_flushed < stats.supabase_rows_buffered:
        found.append(f"{stats.supabase_rows_buffered - stats.supabase_rows_flushed} buffered Supabase rows unwritten")
    if facts.callers.errors:
        found.append(f"errors reached the orchestrator's callers: {dict(facts.callers.errors)}")
    if facts.callers.requests == 0:
        found.append("no request reached the orchestrator")
    for name in DEPENDENCIES:
        dependency = facts.fakes.dependencies[name]
        if dependency.without_correlation_id:
            found.append(f"{dependency.without_correlation_id} calls reached {name} without a correlation id")
        sent = facts.callers.correlation_ids
        if sent is not None:
            foreign = [
                i for i in dependency.correlation_ids if i not in sent and not i.startswith(BACKGROUND_ID_PREFIXES)
            ]
            if foreign:
                found.append(f"{name} saw correlation ids no caller sent, e.g. {foreign[0]!r}")
    return found


def render(facts: Facts, timeline: Timeline) -> str:
    stats = facts.orchestrator
    callers = facts.callers
    lines = [
        "",
        f"== Callers ({callers.source}) ==",
        f"requests {callers.requests}, {callers.requests_per_s:.1f}/s, p50 {callers.p50_ms:.0f} ms, "
        f"p99 {callers.p99_ms:.0f} ms, errors {sum(callers.errors.values())}"
        + ("" if callers.degraded is None else f", degraded answers {callers.degraded}"),
        "",
        "== Dependencies ==",
        f"{'dependency':<22}{'calls':>7}{'hits':>7}{'hits while failing':>20}{'refused':>9}{'fallbacks':>11}",
    ]
    for name in DEPENDENCIES:
        counts = stats.dependencies.get(name)
        hits = facts.fakes.dependencies[name].hits
        calls, refused, fallbacks = (0, 0, 0) if counts is None else (counts.calls, counts.refused, counts.fallbacks)
        failing = facts.hits_while_failing(name)
        lines.append(f"{name:<22}{calls:>7}{hits:>7}{failing:>20}{refused:>9}{fallbacks:>11}")
    lines += [
        "(calls: protected calls the orchestrator made; hits: requests that reached the fake, retries and replays",
        " included; refused: calls the open breaker answered at once, with no request)",
        "",
        "== Seed fallbacks used ==",
        f"collections_monitor   cached tenant data {stats.tenant_from_cache}, basic information {stats.tenant_basic}",
        f"sms_agent             SMS queued {len(stats.sms_queued)}, replayed after recovery "
        f"{len(set(stats.sms_replayed) & set(stats.sms_queued))}, outbox now ready {facts.outbox.ready} "
        f"pending {facts.outbox.pending} dead {facts.outbox.dead}",
        f"notification_service  logged for manual review {stats.notifications_for_review}",
        f"openai                template answers {stats.templates_used}",
        f"supabase              cached reads {stats.supabase_cached_reads}, rows buffered "
        f"{stats.supabase_rows_buffered}, written later {stats.supabase_rows_flushed} "
        f"in {stats.supabase_batches_flushed} batches",
        "",
        "== Incident ==",
        *(f"t+{at:5.1f}s  {what}" for at, what in timeline.events),
        "",
        "== Transitions (from the service's history) ==",
    ]
    for t in facts.transitions:
        who = f"  by {t.actor}" if t.actor else ""
        why = f"  ({t.reason})" if t.reason else ""
        lines.append(f"t+{t.at - timeline.started_at:5.1f}s  {t.name:<22}{t.source:>9} -> {t.target:<9}{who}{why}")
    forced = [t for t in facts.transitions if t.actor]
    lines += ["", "== Who forced what =="]
    lines += [f"{t.actor} forced {t.name} {t.target}: {t.reason}" for t in forced] or ["nobody"]
    return "\n".join(lines)
