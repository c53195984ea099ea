"""What the orchestrator did, per dependency: calls, hits, fallbacks; and what its fallbacks hold and replayed."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

__all__ = ["DependencyCounts", "OrchestratorStats", "Stats"]


class DependencyCounts(msgspec.Struct):
    """`calls`: protected calls made; `attempts`: requests sent to the dependency (retries included);
    `refused`: calls the breaker refused without a request; `fallbacks`: calls the fallback answered."""

    calls: int = 0
    attempts: int = 0
    refused: int = 0
    fallbacks: int = 0


class OrchestratorStats(msgspec.Struct, frozen=True):
    """`GET /stats`."""

    requests: int
    degraded_answers: int
    dependencies: dict[str, DependencyCounts]
    tenant_from_cache: int
    tenant_basic: int
    sms_queued: list[str]
    """message ids the SMS fallback put on the outbox queue (first time only)."""
    sms_replayed: list[str]
    """message ids the outbox worker delivered after the SMS agent recovered."""
    sms_enqueue_errors: int
    notifications_for_review: int
    templates_used: int
    supabase_cached_reads: int
    supabase_rows_buffered: int
    supabase_rows_flushed: int
    supabase_batches_flushed: int


@dataclass
class Stats:
    """Mutable counters (one event loop); `snapshot()` for the wire."""

    dependencies: dict[str, DependencyCounts] = field(default_factory=dict)
    requests: int = 0
    degraded_answers: int = 0
    tenant_from_cache: int = 0
    tenant_basic: int = 0
    sms_queued: list[str] = field(default_factory=list)
    sms_replayed: list[str] = field(default_factory=list)
    sms_enqueue_errors: int = 0
    notifications_for_review: int = 0
    templates_used: int = 0
    supabase_cached_reads: int = 0
    supabase_rows_buffered: int = 0
    supabase_rows_flushed: int = 0
    supabase_batches_flushed: int = 0

    def of(self, dependency: str) -> DependencyCounts:
        """The counters of `dependency`, created at zero."""
        return self.dependencies.setdefault(dependency, DependencyCounts())

    def snapshot(self) -> OrchestratorStats:
        return OrchestratorStats(
            requests=self.requests,
            degraded_answers=self.degraded_answers,
            dependencies={name: msgspec.structs.replace(counts) for name, counts in self.dependencies.items()},
            tenant_from_cache=self.tenant_from_cache,
            tenant_basic=self.tenant_basic,
            sms_queued=list(self.sms_queued),
            sms_replayed=list(self.sms_replayed),
            sms_enqueue_errors=self.sms_enqueue_errors,
            notifications_for_review=self.notifications_for_review,
            templates_used=self.templates_used,
            supabase_cached_reads=self.supabase_cached_reads,
            supabase_rows_buffered=self.supabase_rows_buffered,
            supabase_rows_flushed=self.supabase_rows_flushed,
            supabase_batches_flushed=self.supabase_batches_flushed,
        )
