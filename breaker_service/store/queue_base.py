"""The queue store interface: deferred work queues, every operation atomic (README, "Deferred work").

Two implementations hold the same semantics: `RedisQueueStore` (a Redis stream and consumer group per queue,
changed only by the `lua/queue_*.lua` scripts) and `MemoryQueueStore` (one replica). `tests/test_queue_conformance.py`
runs one suite against both.

The rules:
- enqueue creates the queue; a repeated idempotency key (kept `IDEMPOTENCY_TTL_S`) answers the first job's id.
  A queue holds at most `QueueBounds.max_jobs` jobs, live jobs and dead letters together: one more is refused
  (`QueueFullError`, 409 ORC_002) until jobs are acked or the dead letters purged.
- claim first takes back jobs whose lease ran out (each counts as a failed attempt), then hands out jobs due for a
  retry (oldest due first), then new jobs in enqueue order; each is leased to the consumer for `lease_s`. The
  payloads one claim hands out add up to at most `QueueBounds.max_claim_bytes`, but the first job always goes
  out (a queue never sticks); jobs that do not fit stay where they were, for the next claim.
- purge drops every dead letter.
- ack finishes delivered jobs still in the queue (claimed, or waiting for a retry); other ids count nothing.
- nack gives claimed jobs back, due after `delay_s`; a job whose failed attempts (nacks and lease expiries) reach
  the queue's `max_attempts` goes to the dead letters instead. A nack with `count_attempt=False` spends no attempt.
- `attempts` is a job's delivery number; a job is dead after the delivery numbered `max_attempts` fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from breaker_service.errors import QueueFullError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from breaker_client.protocol.queue_models import Enqueued, Job, Nacked, QueueStats

DEFAULT_MAX_ATTEMPTS: Final = 5
IDEMPOTENCY_TTL_S: Final = 24 * 3600.0
"""How long an idempotency key is remembered after its first enqueue."""
SWEEP_LIMIT: Final = 100
"""Expired leases one claim takes back at most; more wait for the next claim."""
LEASE_EXPIRED: Final = "lease expired"
NACKED: Final = "nacked"


@dataclass(frozen=True)
class QueueBounds:
    """What one queue may hold and one claim may answer (BREAKER_QUEUE_MAX_JOBS, BREAKER_MAX_BODY_BYTES)."""

    max_jobs: int = 100_000
    max_claim_bytes: int = 1024 * 1024


DEFAULT_BOUNDS: Final = QueueBounds()


def queue_full(name: str, max_jobs: int, held: int) -> QueueFullError:
    """The error for an enqueue into a full queue."""
    return QueueFullError(
        f"the queue {name!r} holds its maximum of {max_jobs} jobs (live and dead); ack jobs or purge dead letters",
        details={"max_jobs": max_jobs, "jobs": held},
    )


class QueueLimits:
    """name -> max_attempts: the queue's `[queues.<name>]` table in the config file, else the default."""

    def __init__(self, max_attempts: Mapping[str, int] | None = None, default: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self._max_attempts = dict(max_attempts or {})
        self._default = default

    def __call__(self, name: str) -> int:
        return self._max_attempts.get(name, self._default)


class QueueStore(Protocol):
    """Deferred work queues, shared (Redis) or local (memory). Raises `breaker_service.errors.ServiceError`s."""

    @property
    def kind(self) -> str:
        """`redis` or `memory`."""
        ...

    async def start(self) -> None:
        """Load what is needed (scripts); called once from the app's lifespan."""

    async def close(self) -> None:
        """Release what the store owns."""

    async def enqueue(self, name: str, payload: bytes, idempotency_key: str | None = None) -> Enqueued:
        """Add a job (JSON bytes, kept as they are); creates the queue."""
        ...

    async def claim(self, name: str, consumer: str, *, max_jobs: int, lease_s: float) -> list[Job]:
        """Up to `max_jobs` jobs leased to `consumer` for `lease_s`; none from a queue that does not exist."""
        ...

    async def ack(self, name: str, ids: Sequence[str]) -> int:
        """Finish delivered jobs; how many were still in the queue."""
        ...

    async def nack(
        self, name: str, ids: Sequence[str], *, delay_s: float, error: str | None, count_attempt: bool = True
    ) -> Nacked:
        """Give claimed jobs back (or bury those out of attempts)."""
        ...

    async def stats(self, name: str) -> QueueStats | None:
        """The queue's counts; None when it was never created."""
        ...

    async def purge_dead(self, name: str) -> int | None:
        """Drop every dead letter; how many there were, or None when the queue was never created."""
        ...
