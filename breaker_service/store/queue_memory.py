"""`MemoryQueueStore`: the queue rules of `queue_base` in this process (one replica; lost on restart).

It mirrors the Lua scripts step for step, down to their orders: job ids are `<ms>-<seq>` like stream ids, and
leases and retries are taken by (time, id as text), as a Redis sorted set orders them.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from breaker_client.protocol.queue_models import Enqueued, Job, Nacked, QueueStats
from breaker_service.clock import Clock, wall_clock_ms
from breaker_service.store.queue_base import (
    DEFAULT_BOUNDS,
    IDEMPOTENCY_TTL_S,
    LEASE_EXPIRED,
    NACKED,
    SWEEP_LIMIT,
    QueueBounds,
    QueueLimits,
    queue_full,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence


@dataclass
class _Job:
    payload: bytes
    attempts: int = 0
    delivered: bool = False
    holder: str | None = None
    """The consumer the job was last delivered to (a Redis stream's pending entry owner)."""


@dataclass(frozen=True)
class DeadLetter:
    """A job that used its last attempt, with the error that ended it."""

    id: str
    payload: bytes
    attempts: int
    error: str


@dataclass
class _Queue:
    jobs: dict[str, _Job] = field(default_factory=dict)
    """Every job not yet acked or dead, in enqueue order."""
    leases: dict[str, int] = field(default_factory=dict)
    retry: dict[str, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    keys: OrderedDict[str, tuple[str, int]] = field(default_factory=OrderedDict)
    """Idempotency key -> (job id, expiry ms), oldest first."""
    last_ms: int = 0
    seq: int = -1


class MemoryQueueStore:
    """Queues held in this process, with the same semantics as the Lua scripts."""

    def __init__(
        self,
        *,
        max_attempts: Callable[[str], int] | None = None,
        clock: Clock = wall_clock_ms,
        idempotency_ttl_s: float = IDEMPOTENCY_TTL_S,
        bounds: QueueBounds = DEFAULT_BOUNDS,
    ) -> None:
        self._max_attempts = max_attempts or QueueLimits()
        self._bounds = bounds
        self._clock = clock
        self._idempotency_ttl_ms = math.ceil(idempotency_ttl_s * 1000)
        self._queues: dict[str, _Queue] = {}

    @property
    def kind(self) -> str:
        return "memory"

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def dead_letters(self, name: str) -> list[DeadLetter]:
        """The queue's dead letters, oldest first."""
        queue = self._queues.get(name)
        return [] if queue is None else list(queue.dead)

    async def enqueue(self, name: str, payload: bytes, idempotency_key: str | None = None) -> Enqueued:
        now_ms = self._clock()
        queue = self._queues.get(name)
        if idempotency_key is not None and queue is not None:
            while queue.keys and next(iter(queue.keys.values()))[1] <= now_ms:
                queue.keys.popitem(last=False)
            seen = queue.keys.get(idempotency_key)
            if seen is not None:
                return Enqueued(id=seen[0], duplicate=True)
        if queue is None:
            queue = self._queues[name] = _Queue()
        held = len(queue.jobs) + len(queue.dead)
        if held >= self._bounds.max_jobs:
            raise queue_full(name, self._bounds.max_jobs, held)
        job_id = _next_id(queue, now_ms)
        queue.jobs[job_id] = _Job(payload=bytes(payload))
        if idempotency_key is not None:
            queue.keys[idempotency_key] = (job_id, now_ms + self._idempotency_ttl_ms)
        return Enqueued(id=job_id, duplicate=False)

    async def claim(self, name: str, consumer: str, *, max_jobs: int, lease_s: float) -> list[Job]:
        queue = self._queues.get(name)
        if queue is None:
            return []
        now_ms = self._clock()
        max_attempts = self._max_attempts(name)
        for job_id, until_ms in _due(queue.leases, now_ms, SWEEP_LIMIT):
            del queue.leases[job_id]
            job = queue.jobs[job_id]
            if job.attempts >= max_attempts:
                _bury(queue, job_id, LEASE_EXPIRED)
            else:
                queue.retry[job_id] = until_ms
        lease_until_ms = now_ms + max(1, math.floor(lease_s * 1000))
        budget = _Budget(self._bounds.max_claim_bytes)
        # Jobs the consumer still holds come first, same attempt (its last claim answer may have been lost).
        pending = itertools.islice((i for i, job in queue.jobs.items() if job.holder == consumer), max_jobs)
        claimed = []
        for job_id in budget.take(queue, [i for i in pending if i in queue.leases]):
            job = queue.jobs[job_id]
            queue.leases[job_id] = lease_until_ms
            claimed.append(Job(id=job_id, payload=msgspec.Raw(job.payload), attempts=job.attempts))
        room = max_jobs - len(claimed)
        due = (job_id for job_id, _ in _due(queue.retry, now_ms, room))
        chosen = list(budget.take(queue, due)) if room > 0 else []
        for job_id in chosen:
            del queue.retry[job_id]
        if len(chosen) < room:
            new = (job_id for job_id, job in queue.jobs.items() if not job.delivered)
            chosen += budget.take(queue, itertools.islice(new, room - len(chosen)))
        for job_id in chosen:
            job = queue.jobs[job_id]
            job.delivered = True
            job.holder = consumer
            job.attempts += 1
            queue.leases[job_id] = lease_until_ms
            claimed.append(Job(id=job_id, payload=msgspec.Raw(job.payload), attempts=job.attempts))
        return claimed

    async def ack(self, name: str, ids: Sequence[str]) -> int:
        queue = self._queues.get(name)
        if queue is None:
            return 0
        acked = 0
        for job_id in ids:
            job = queue.jobs.get(job_id)
            if job is not None and job.delivered:
                _remove(queue, job_id)
                acked += 1
        return acked

    async def nack(
        self, name: str, ids: Sequence[str], *, delay_s: float, error: str | None, count_attempt: bool = True
    ) -> Nacked:
        queue = self._queues.get(name)
        if queue is None:
            return Nacked(requeued=0, dead=0)
        due_ms = self._clock() + math.floor(delay_s * 1000)
        max_attempts = self._max_attempts(name)
        requeued = dead = 0
        for job_id in ids:
            if queue.leases.pop(job_id, None) is None:
                continue
            job = queue.jobs[job_id]
            if not count_attempt:
                job.attempts = max(0, job.attempts - 1)
            elif job.attempts >= max_attempts:
                _bury(queue, job_id, error or NACKED)
                dead += 1
                continue
            queue.retry[job_id] = due_ms
            requeued += 1
        return Nacked(requeued=requeued, dead=dead)

    async def purge_dead(self, name: str) -> int | None:
        queue = self._queues.get(name)
        if queue is None:
            return None
        dropped = len(queue.dead)
        queue.dead.clear()
        return dropped

    async def stats(self, name: str) -> QueueStats | None:
        queue = self._queues.get(name)
        if queue is None:
            return None
        now_ms = self._clock()
        pending = len(queue.leases)
        return QueueStats(
            ready=len(queue.jobs) - pending,
            pending=pending,
            dead=len(queue.dead),
            delayed=sum(1 for due_ms in queue.retry.values() if due_ms > now_ms),
        )


class _Budget:
    """The payload bytes one claim may still hand out; the first job always fits (queue_claim.lua's `fits`)."""

    def __init__(self, max_bytes: int) -> None:
        self._left = max_bytes
        self._taken = 0

    def take(self, queue: _Queue, job_ids: Iterable[str]) -> Iterator[str]:
        """The leading ids of `job_ids` whose payloads fit, in order; stops at the first that does not."""
        for job_id in job_ids:
            size = len(queue.jobs[job_id].payload)
            if self._taken and size > self._left:
                return
            self._left -= size
            self._taken += 1
            yield job_id


def _next_id(queue: _Queue, now_ms: int) -> str:
    # XADD's rule: the time part never goes back; within one millisecond the sequence counts up.
    if now_ms > queue.last_ms:
        queue.last_ms, queue.seq = now_ms, 0
    else:
        queue.seq += 1
    return f"{queue.last_ms}-{queue.seq}"


def _due(scored: dict[str, int], now_ms: int, limit: int) -> list[tuple[str, int]]:
    """Members scored at or before `now_ms`, in sorted-set order (score, then member as text), at most `limit`."""
    return sorted(((m, s) for m, s in scored.items() if s <= now_ms), key=lambda item: (item[1], item[0]))[:limit]


def _remove(queue: _Queue, job_id: str) -> None:
    del queue.jobs[job_id]
    queue.leases.pop(job_id, None)
    queue.retry.pop(job_id, None)


def _bury(queue: _Queue, job_id: str, error: str) -> None:
    job = queue.jobs[job_id]
    queue.dead.append(DeadLetter(id=job_id, payload=job.payload, attempts=job.attempts, error=error))
    _remove(queue, job_id)
