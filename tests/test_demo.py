"""The demo's scripted incident, shortened: the seed's claims as counts (tests/../examples/demo, `make demo`).

Redis, two service replicas, the five fakes and the orchestrator run as processes; a load generator calls the
orchestrator throughout. Each phase ends on what it observes (breakers OPEN, fallbacks used, the outbox empty),
never on a sleep, so the test holds on a busy machine; it asserts counts, never timings.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import httpx
import pytest

from examples.demo.incident import FORCED, OUTAGE, SRE_REASON, Plan, Timeline, missing_fallbacks, run_incident, settled
from examples.demo.load import LoadGenerator
from examples.demo.observe import Observer
from examples.demo.stack import ADMIN_ACTOR, DemoStack, StackSettings
from examples.demo.summary import CallerFigures, Facts, gather_facts, problems
from examples.fake_dependencies.models import DEPENDENCIES
from tests._waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.redis_server import RedisServerFactory

pytestmark = [pytest.mark.demo, pytest.mark.timeout(240)]

# Shorter than the demo's, never shorter than the work they cover: a healthy call on a busy machine takes well
# under CALL_TIMEOUT_S, and a slow call takes SLOW_S, far beyond it.
SETTINGS = StackSettings(
    open_timeout_s=2.0,
    retry_base_s=0.05,
    retry_max_s=1.0,
    call_timeout_s=2.0,
    drain_interval_s=0.2,
    flush_interval_s=0.2,
    probe_interval_s=5.0,
)
CALLER_ID = re.compile(r"load-\d+-\d+")
PLAN = Plan(slow_s=10.0, retry_after_s=0.5, force_ttl_s=15.0, wait_timeout_s=90.0)


async def _run_incident(stack: DemoStack) -> tuple[Facts, Timeline]:
    timeline = Timeline()
    async with httpx.AsyncClient(timeout=30.0) as http:
        observer = Observer(
            http,
            service_url=stack.service_urls[-1],
            orchestrator_url=stack.orchestrator_url,
            fakes_url=stack.fakes_url,
            admin_token=stack.admin_token,
        )
        load = LoadGenerator(stack.orchestrator_url, rate_per_s=20.0, concurrency=4)
        stop = asyncio.Event()
        load_task = asyncio.create_task(load.run(stop))
        try:
            await run_incident(observer, PLAN, timeline, lambda line: None)
        finally:
            stop.set()
            await load_task
        await wait_until(lambda: settled(observer), "the outbox and the write buffer to empty", timeout_s=60.0)
        result = load.result
        callers = CallerFigures(
            source="test",
            requests=result.requests,
            errors=result.errors,
            requests_per_s=0.0,
            p50_ms=0.0,
            p99_ms=0.0,
            degraded=result.degraded,
            correlation_ids=frozenset(result.correlation_ids),
        )
        return await gather_facts(observer, callers), timeline


async def test_the_scripted_incident_shows_every_seed_fallback_and_loses_nothing(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    redis = redis_server_factory()
    stack = DemoStack(tmp_path / "demo", SETTINGS, redis_url=redis.url)
    await asyncio.to_thread(stack.start)
    try:
        facts, timeline = await _run_incident(stack)
    finally:
        await asyncio.to_thread(stack.stop)

    assert len(stack.replicas) == 2
    # The callers' correlation ids reached the breaker service too (the client sends them with acquire and record).
    assert facts.callers.correlation_ids is not None
    service_logs = "".join(path.read_text(errors="replace") for path in stack.log_paths() if "replica" in str(path))
    assert set(CALLER_ID.findall(service_logs)) & facts.callers.correlation_ids
    # The demo's own verdict: every fallback used, every queued SMS replayed and received, nothing left in the
    # outbox or the write buffer, no error reached a caller, every dependency call carried a caller's correlation id.
    assert problems(facts) == []
    stats = facts.orchestrator
    assert timeline.before_outage is not None
    assert missing_fallbacks(stats, since=timeline.before_outage) == []  # used because of the incident
    assert facts.callers.errors == {}
    assert facts.callers.requests > 0
    assert facts.callers.degraded
    assert stats.sms_queued
    assert set(stats.sms_queued) <= set(facts.fakes.dependencies["sms_agent"].delivered)
    assert facts.outbox.ready == facts.outbox.pending == facts.outbox.dead == 0

    for name in DEPENDENCIES:
        # Each breaker refused calls without a request to its dependency, and ended CLOSED.
        assert stats.dependencies[name].refused > 0, name
        targets = [t.target for t in facts.transitions if t.name == name]
        assert "OPEN" in targets, (name, targets)
        assert targets[-1] == "CLOSED", (name, targets)
    before = timeline.before_outage.dependencies
    for name in OUTAGE:
        # Opened by failures, not by anyone: the client's retries and the shared breaker did it.
        opening = next(t for t in facts.transitions if t.name == name and t.target == "OPEN")
        assert opening.actor is None
        # The breaker let through fewer calls to the failing dependency than the orchestrator tried to make.
        assert facts.hits_while_failing(name) < stats.dependencies[name].calls - before[name].calls
    forced = [t for t in facts.transitions if t.actor is not None]
    assert [(t.name, t.target, t.actor, t.reason) for t in forced] == [(FORCED, "OPEN", ADMIN_ACTOR, SRE_REASON)]
    assert facts.hits_while_failing(FORCED) == 0  # Supabase itself never failed: the SRE's force stopped the calls
    assert stats.supabase_rows_flushed == stats.supabase_rows_buffered > 0
