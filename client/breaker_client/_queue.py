"""`WorkQueue`: a deferred work queue on the breaker service, and `drain`, which replays it through a breaker.

async with BreakerClient(url, token=TOKEN) as client:
    outbox = client.queue("sms_outbox")
    await outbox.enqueue({"to": "+15550100", "body": "hi"}, idempotency_key="msg-42")
    ...
    report = await outbox.drain(client.breaker("sms_agent"), send_sms, consumer="worker-1")
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import msgspec

from breaker_client._errors import CircuitOpenError
from breaker_client.protocol.models import JSON_ENCODER
from breaker_client.protocol.queue_models import (
    DEFAULT_LEASE_S,
    Acked,
    AckRequest,
    ClaimRequest,
    Enqueued,
    EnqueueRequest,
    Nacked,
    NackRequest,
    QueueStats,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from breaker_client._breaker import Breaker
    from breaker_client._service import ServiceConnection

__all__ = ["ClaimedJob", "DrainReport", "Enqueued", "Nacked", "QueueStats", "WorkQueue"]

T = TypeVar("T")

_ENQUEUED: Final = msgspec.json.Decoder(Enqueued)
_ACKED: Final = msgspec.json.Decoder(Acked)
_NACKED: Final = msgspec.json.Decoder(Nacked)
_STATS: Final = msgspec.json.Decoder(QueueStats)
OPEN_DELAY_S: Final = 5.0
"""How long a job refused by an open circuit waits when the circuit gives no retry time (forced open)."""


class ClaimedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job leased to this consumer, its payload decoded: ack it when done, nack it to give it back."""

    id: str
    payload: Any
    attempts: int
    """This delivery's number: 1 on the first."""


class _Claimed(msgspec.Struct, frozen=True):
    jobs: list[ClaimedJob]


_CLAIMED: Final = msgspec.json.Decoder(_Claimed)


@dataclass(frozen=True, kw_only=True)
class DrainReport:
    """What one `drain` did: jobs done (acked), failed (nacked, `dead` of them out of attempts), and deferred
    because the circuit was open (given back without spending an attempt), with the circuit's retry time."""

    acked: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    retry_after_s: float | None = None


class WorkQueue:
    """One named queue on the service (`client.queue(name)`); every method is one request."""

    def __init__(self, connection: ServiceConnection, name: str) -> None:
        self._connection = connection
        self._name = name
        self._path = f"/queues/{quote(name)}"

    @property
    def name(self) -> str:
        """The queue's name on the service."""
        return self._name

    async def enqueue(self, payload: Any, idempotency_key: str | None = None) -> Enqueued:
        """Add a job (any JSON-encodable payload); a repeated `idempotency_key` answers the first job's id.

        Without a key the client makes one for this call, so that sending it again to another replica (after a
        timeout or a 503, whose outcome is unknown) cannot make a second job. Pass your own to retry safely
        across calls.
        """
        key = idempotency_key if idempotency_key is not None else f"auto-{secrets.token_hex(16)}"
        body = EnqueueRequest(payload=msgspec.Raw(JSON_ENCODER.encode(payload)), idempotency_key=key)
        return await self._send(f"{self._path}/jobs", body, _ENQUEUED)

    async def claim(self, consumer: str, *, max: int = 10, lease_s: float = DEFAULT_LEASE_S) -> list[ClaimedJob]:
        """Lease up to `max` ready jobs for `lease_s`; after that another consumer may claim them."""
        body = ClaimRequest(consumer=consumer, max=max, lease_s=lease_s)
        return (await self._send(f"{self._path}/claim", body, _CLAIMED)).jobs

    async def ack(self, ids: Sequence[str]) -> int:
        """Finish jobs; how many were still in the queue."""
        return (await self._send(f"{self._path}/ack", AckRequest(ids=list(ids)), _ACKED)).acked

    async def nack(
        self, ids: Sequence[str], delay_s: float = 0.0, error: str | None = None, *, count_attempt: bool = True
    ) -> Nacked:
        """Give claimed jobs back, due after `delay_s`; `count_attempt=False` spends none of their attempts."""
        body = NackRequest(ids=list(ids), delay_s=delay_s, error=error, count_attempt=count_attempt)
        return await self._send(f"{self._path}/nack", body, _NACKED)

    async def stats(self) -> QueueStats:
        """The queue's counts; `NotFoundError` for a queue never used nor declared."""
        return await self._connection.request("GET", self._path, _STATS)

    async def drain(
        self,
        breaker: Breaker,
        handler: Callable[[Any], Awaitable[object]],
        *,
        consumer: str,
        batch: int = 10,
        lease_s: float = DEFAULT_LEASE_S,
        failure_delay_s: float = 1.0,
    ) -> DrainReport:
        """Claim jobs and run `handler(payload)` for each through `breaker`, until none is ready or the circuit
        refuses: then the rest of the batch goes back, due when the circuit may let calls through again, without
        spending an attempt. A handler that raises fails the job (nacked, due after `failure_delay_s`).

        Each job is one admission of the breaker (`async with breaker`): no in-process retry and no fallback, since
        redelivery is the retry and a fallback would wrongly finish the job. Jobs are acked one by one as they
        succeed, so a crash repeats as little work as possible; an error talking to the service is raised, and
        the jobs it left unfinished come back when their leases run out.
        """
        acked = failed = dead = 0
        while jobs := await self.claim(consumer, max=batch, lease_s=lease_s):
            for index, job in enumerate(jobs):
                try:
                    async with breaker:
                        await handler(job.payload)
                except CircuitOpenError as exc:
                    rest = [j.id for j in jobs[index:]]
                    delay_s = OPEN_DELAY_S if exc.retry_after_s is None else exc.retry_after_s
                    await self.nack(rest, delay_s, str(exc), count_attempt=False)
                    return DrainReport(acked=acked, failed=failed, dead=dead, deferred=len(rest), retry_after_s=delay_s)
                except Exception as exc:
                    dead += (await self.nack([job.id], failure_delay_s, repr(exc)[:2000])).dead
                    failed += 1
                else:
                    acked += await self.ack([job.id])
        return DrainReport(acked=acked, failed=failed, dead=dead)

    async def _send(self, path: str, body: msgspec.Struct, decoder: msgspec.json.Decoder[T]) -> T:
        return await self._connection.request("POST", path, decoder, JSON_ENCODER.encode(body))
