"""The five dependencies, each a `ProtectedHttp` plus its seed fallback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from breaker_client import ClientError, current_correlation_id, use_correlation_id
from examples.orchestrator.fallbacks import LastGood, ReviewLog, WriteBuffer, template_reply
from examples.orchestrator.protected import Fell

if TYPE_CHECKING:
    from breaker_client import WorkQueue
    from examples.orchestrator.protected import ProtectedHttp
    from examples.orchestrator.stats import Stats

__all__ = ["CollectionsMonitor", "NotificationService", "OpenAI", "SmsAgent", "Supabase"]

_log = structlog.get_logger("orchestrator")


class CollectionsMonitor:
    """Tenant data; fallback: the cached tenant, else basic information (the id alone)."""

    def __init__(self, http: ProtectedHttp, stats: Stats) -> None:
        self._http = http
        self._stats = stats
        self._cache = LastGood()

    async def tenant(self, tenant_id: str) -> tuple[dict[str, Any], str]:
        """The tenant and where it came from: `live`, `cache` or `basic`."""
        answer = await self._http.call("GET", f"/tenants/{tenant_id}")
        if not isinstance(answer, Fell):
            self._cache.put(tenant_id, answer)
            return answer, "live"
        cached = self._cache.get(tenant_id)
        if cached is not None:
            self._stats.tenant_from_cache += 1
            return cached, "cache"
        self._stats.tenant_basic += 1
        return {"id": tenant_id}, "basic"


class Supabase:
    """Conversations and the message log; fallbacks: local caching of reads, buffered writes sent in batches."""

    def __init__(self, http: ProtectedHttp, stats: Stats) -> None:
        self._http = http
        self._stats = stats
        self._cache = LastGood()
        self.buffer = WriteBuffer()

    async def conversation(self, tenant_id: str) -> tuple[dict[str, Any], str]:
        answer = await self._http.call("GET", f"/conversations/{tenant_id}")
        if not isinstance(answer, Fell):
            self._cache.put(tenant_id, answer)
            return answer, "live"
        self._stats.supabase_cached_reads += 1
        return self._cache.get(tenant_id) or {"tenant_id": tenant_id, "messages": None}, "cache"

    async def save(self, row: dict[str, Any]) -> str:
        """`written`, or `buffered` for the flusher (workers.py) to write later."""
        if len(self.buffer) == 0 and not isinstance(await self._http.call("POST", "/messages", [row]), Fell):
            return "written"
        # While older rows wait, a new row waits behind them, so rows reach Supabase in order.
        self.buffer.add(row)
        self._stats.supabase_rows_buffered += 1
        return "buffered"

    async def flush(self, batch_size: int) -> int:
        """Write buffered rows in batches through the breaker until none is left or a write fails; rows written."""
        written = 0
        while rows := self.buffer.take(batch_size):
            try:
                answer = await self._http.call("POST", "/messages", rows)
            except BaseException:
                self.buffer.restore(rows)
                raise
            if isinstance(answer, Fell):
                self.buffer.restore(rows)
                break
            written += len(rows)
            self._stats.supabase_rows_flushed += len(rows)
            self._stats.supabase_batches_flushed += 1
            _log.info("supabase.batch_written", rows=len(rows), waiting=len(self.buffer))
        return written


class OpenAI:
    """Replies; fallback: a template answer."""

    def __init__(self, http: ProtectedHttp, stats: Stats) -> None:
        self._http = http
        self._stats = stats

    async def reply(self, tenant: dict[str, Any], text: str) -> tuple[str, str]:
        """The reply and its source: `openai` or `template`."""
        answer = await self._http.call("POST", "/v1/chat/completions", {"tenant": tenant.get("id"), "prompt": text})
        if isinstance(answer, Fell):
            self._stats.templates_used += 1
            return template_reply(text), "template"
        return str(answer["reply"]), "openai"


class SmsAgent:
    """Outgoing SMS; fallback: the message goes on the `sms_outbox` queue, replayed by `deliver` on recovery."""

    def __init__(self, http: ProtectedHttp, outbox: WorkQueue, stats: Stats) -> None:
        self._http = http
        self._outbox = outbox
        self._stats = stats

    async def send(self, message: dict[str, Any]) -> str:
        """`sent`, `queued`, or `not_sent` when even the queue could not take it."""
        if not isinstance(await self._http.call("POST", "/messages", message), Fell):
            return "sent"
        job = {**message, "correlation_id": current_correlation_id()}
        try:
            enqueued = await self._outbox.enqueue(job, idempotency_key=message["message_id"])
        except ClientError as exc:
            self._stats.sms_enqueue_errors += 1
            _log.error("sms.enqueue_failed", message_id=message["message_id"], error=repr(exc))
            return "not_sent"
        if not enqueued.duplicate:
            self._stats.sms_queued.append(message["message_id"])
        _log.info("sms.queued", message_id=message["message_id"], job=enqueued.id)
        return "queued"

    async def deliver(self, job: Any) -> None:
        """Replay one queued message (the outbox worker runs it inside the breaker); raises if it fails."""
        correlation_id = job.get("correlation_id")
        with use_correlation_id(correlation_id), structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            message = {key: value for key, value in job.items() if key != "correlation_id"}
            await self._http.send("POST", "/messages", message)
            self._stats.sms_replayed.append(message["message_id"])
            _log.info("sms.replayed", message_id=message["message_id"])


class NotificationService:
    """Manager alerts; fallback: logged for manual review."""

    def __init__(self, http: ProtectedHttp, review: ReviewLog, stats: Stats) -> None:
        self._http = http
        self._review = review
        self._stats = stats

    async def notify(self, notification: dict[str, Any]) -> str:
        """`sent`, or `logged_for_review`."""
        if not isinstance(await self._http.call("POST", "/notifications", notification), Fell):
            return "sent"
        self._review.add(notification)
        self._stats.notifications_for_review += 1
        return "logged_for_review"
