"""Background work: replay the SMS outbox through the SMS agent's breaker, flush buffered Supabase writes."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import TYPE_CHECKING, Final

import structlog

from breaker_client import use_correlation_id

if TYPE_CHECKING:
    from breaker_client import Breaker, DrainReport, WorkQueue
    from examples.orchestrator.services import SmsAgent, Supabase

__all__ = ["flush_supabase", "replay_outbox"]

_log = structlog.get_logger("orchestrator")

OUTBOX_BATCH: Final = 10
OUTBOX_CONSUMERS: Final = 8  # each replay waits for the agent and for its ack: a few at once keep up with recovery
OUTBOX_LEASE_S: Final = 60.0
SUPABASE_BATCH: Final = 50


async def replay_outbox(outbox: WorkQueue, breaker: Breaker, sms: SmsAgent, *, interval_s: float) -> None:
    """Drain the outbox through the SMS agent's breaker, forever, with `OUTBOX_CONSUMERS` consumers: while the
    circuit refuses, `drain` gives the jobs back unspent, due when it may let calls through again; each replay is
    one admission (a half-open probe too)."""
    await asyncio.gather(
        *(_replay(outbox, breaker, sms, f"orchestrator-{os.getpid()}-{i}", interval_s) for i in range(OUTBOX_CONSUMERS))
    )


async def _replay(outbox: WorkQueue, breaker: Breaker, sms: SmsAgent, consumer: str, interval_s: float) -> None:
    while True:
        delay_s = interval_s
        # Each round has its own correlation id, on its log lines and its requests to the service; each replayed
        # message carries the id of the request that queued it (SmsAgent.deliver).
        round_id = f"outbox-{uuid.uuid4().hex[:12]}"
        with use_correlation_id(round_id), structlog.contextvars.bound_contextvars(correlation_id=round_id):
            report = await _drain_round(outbox, breaker, sms, consumer)
        if report is not None and report.retry_after_s is not None:
            delay_s = min(max(report.retry_after_s, 0.05), interval_s)
        await asyncio.sleep(delay_s)


async def _drain_round(outbox: WorkQueue, breaker: Breaker, sms: SmsAgent, consumer: str) -> DrainReport | None:
    try:
        report = await outbox.drain(breaker, sms.deliver, consumer=consumer, batch=OUTBOX_BATCH, lease_s=OUTBOX_LEASE_S)
    except Exception as exc:
        # The service unreachable or a bug in a handler: the jobs come back when their leases run out.
        _log.error("sms.outbox_drain_failed", error=repr(exc))
        return None
    if report.acked or report.failed or report.deferred:
        _log.info(
            "sms.outbox_drained",
            replayed=report.acked,
            failed=report.failed,
            dead=report.dead,
            deferred=report.deferred,
        )
    return report


async def flush_supabase(supabase: Supabase, *, interval_s: float) -> None:
    """Write the buffered Supabase rows in batches every `interval_s`, through Supabase's breaker."""
    while True:
        if supabase.buffer:
            round_id = f"flush-{uuid.uuid4().hex[:12]}"
            with use_correlation_id(round_id), structlog.contextvars.bound_contextvars(correlation_id=round_id):
                try:
                    await supabase.flush(SUPABASE_BATCH)
                except Exception as exc:
                    _log.error("supabase.flush_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
