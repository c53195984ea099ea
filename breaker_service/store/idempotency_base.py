"""Answers to admin writes kept under their `Idempotency-Key` (DESIGN.md v1.1; the route side is
`breaker_service/idempotency.py`).

`IdempotencyStore` has two implementations, as `StatusStore` does: `RedisIdempotencyStore`
(store/idempotency_redis.py, shared by every replica, so a retry that lands on another replica is answered the same)
and `MemoryIdempotencyStore` (store/idempotency_memory.py, one replica). Each breaker store hands out its own with
`idempotency_store()`.

A key holds one entry at a time:

- `Pending` from the claim until the write is answered: the request's fingerprint and a random claim id, so only
  the request that claimed the key settles it. It lasts `PENDING_TTL_S`: a replica that dies mid-write frees the key
  after that, not after a day;
- `Answered` once the write succeeded (2xx): the fingerprint, status, body and media type, kept `ANSWER_TTL_S`.

A failed write releases its claim, so the key is free to retry.
"""

from __future__ import annotations

from typing import Final, Protocol

from msgspec import Struct

ANSWER_TTL_S: Final = 24 * 3600.0
"""How long the answer to an admin write is kept under its Idempotency-Key."""
PENDING_TTL_S: Final = 60.0
"""How long a claim holds its key without an answer: far longer than an admin write may take (the store timeout,
plus `WAIT` for replicas), short enough that a replica that died mid-write does not block the key for a day."""


class Pending(Struct, frozen=True, kw_only=True, tag="pending"):
    """A claimed key whose write is still in flight."""

    fingerprint: str
    claim: str


class Answered(Struct, frozen=True, kw_only=True, tag="answered"):
    """A successful write's answer, replayed to every retry with the same key and the same request."""

    fingerprint: str
    status: int
    body: bytes
    media_type: str | None


Entry = Pending | Answered


class IdempotencyStore(Protocol):
    """Idempotency-Key entries, shared (Redis) or local (memory). Raises `StoreUnavailableError`."""

    async def claim(self, scope: str, pending: Pending) -> Entry | None:
        """Hold `scope` with `pending` and answer None; or, when something holds it already, answer that, untouched."""
        ...

    async def complete(self, scope: str, pending: Pending, answer: Answered) -> None:
        """Replace this request's claim with its answer, kept `ANSWER_TTL_S` (nothing when the claim is gone)."""

    async def release(self, scope: str, pending: Pending) -> None:
        """Drop this request's claim, so the key may be used again (nothing when the claim is gone)."""
