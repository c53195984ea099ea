"""`MemoryIdempotencyStore`: Idempotency-Key entries of one replica (store/idempotency_base.py)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from breaker_service.store.idempotency_base import ANSWER_TTL_S, PENDING_TTL_S, Answered, Entry, Pending

if TYPE_CHECKING:
    from breaker_service.clock import Clock


class MemoryIdempotencyStore:
    """The `IdempotencyStore` of one replica; time from an injectable clock."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[Entry, int]] = {}
        """Scope -> (entry, expiry ms)."""

    async def claim(self, scope: str, pending: Pending) -> Entry | None:
        now_ms = self._clock()
        # Admin writes are rare, so a sweep on each claim keeps a day of keys bounded at little cost.
        self._entries = {key: held for key, held in self._entries.items() if held[1] > now_ms}
        held = self._entries.get(scope)
        if held is not None:
            return held[0]
        self._entries[scope] = (pending, now_ms + _ms(PENDING_TTL_S))
        return None

    async def complete(self, scope: str, pending: Pending, answer: Answered) -> None:
        if self._holds(scope, pending):
            self._entries[scope] = (answer, self._clock() + _ms(ANSWER_TTL_S))

    async def release(self, scope: str, pending: Pending) -> None:
        if self._holds(scope, pending):
            del self._entries[scope]

    def _holds(self, scope: str, pending: Pending) -> bool:
        held = self._entries.get(scope)
        return held is not None and held[0] == pending and held[1] > self._clock()


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)
