"""Wire models of the deferred work queues (DESIGN.md, "Deferred work queues"), shared by service and client.

Payloads travel as `msgspec.Raw`: the JSON bytes a producer sent are stored and handed to consumers as they are,
never decoded and encoded again by the service.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from breaker_client.protocol.models import MAX_SECONDS, PositiveSeconds

JOB_ID_PATTERN: Final = r"^[0-9]{1,19}-[0-9]{1,19}\Z"
r"""A Redis stream entry id (`<ms>-<seq>`); 19 digits keep each part within 64 bits; `\Z` refuses a final newline."""

MAX_CLAIM: Final = 100
MAX_IDS: Final = 1000
DEFAULT_LEASE_S: Final = 30.0

JobId = Annotated[str, Meta(pattern=JOB_ID_PATTERN)]
JobIds = Annotated[list[JobId], Meta(min_length=1, max_length=MAX_IDS)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=200)]
Consumer = Annotated[str, Meta(min_length=1, max_length=200)]
ClaimCount = Annotated[int, Meta(ge=1, le=MAX_CLAIM)]
Delay = Annotated[float, Meta(ge=0, le=MAX_SECONDS)]
ErrorText = Annotated[str, Meta(max_length=2000)]


class EnqueueRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /queues/{name}/jobs`: any JSON payload, and a key that makes a repeated enqueue a no-op."""

    payload: msgspec.Raw
    idempotency_key: IdempotencyKey | None = None


class Enqueued(Struct, frozen=True, kw_only=True):
    """The job's id; `duplicate` when the idempotency key was seen before (the id is then the first job's)."""

    id: str
    duplicate: bool


class ClaimRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /queues/{name}/claim`: up to `max` jobs for `consumer`, each leased for `lease_s`."""

    consumer: Consumer
    max: ClaimCount = 1
    lease_s: PositiveSeconds = DEFAULT_LEASE_S


class Job(Struct, frozen=True, kw_only=True):
    """A claimed job; `attempts` is this delivery's number (1 on the first)."""

    id: str
    payload: msgspec.Raw
    attempts: int


class Claimed(Struct, frozen=True, kw_only=True):
    """The answer to a claim; empty when nothing is ready (or the queue does not exist yet)."""

    jobs: list[Job]


class AckRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /queues/{name}/ack`."""

    ids: JobIds


class Acked(Struct, frozen=True, kw_only=True):
    """How many of the ids were delivered jobs still in the queue (now done)."""

    acked: int


class NackRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /queues/{name}/nack`: give claimed jobs back, due again after `delay_s`.

    `count_attempt: false` (an extension of the contract) gives a job back without spending one of its attempts:
    for work refused before it was tried, e.g. while the dependency's circuit is open.
    """

    ids: JobIds
    delay_s: Delay = 0.0
    error: ErrorText | None = None
    count_attempt: bool = True


class Nacked(Struct, frozen=True, kw_only=True):
    """Jobs given back to the queue, and jobs that had used their last attempt and went to the dead letters."""

    requeued: int
    dead: int


class QueueStats(Struct, frozen=True, kw_only=True):
    """`GET /queues/{name}`: `ready` waits to be claimed (`delayed` of them not yet due), `pending` is claimed and
    not acked, `dead` the dead letters."""

    ready: int
    pending: int
    dead: int
    delayed: int = 0
