"""Success batching: one outcome per (breaker, generation, slow or not), with `count`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from breaker_client._batcher import SuccessBatcher

if TYPE_CHECKING:
    from breaker_client import Outcome


async def test_successes_are_counted_per_breaker_generation_and_speed() -> None:
    sent: list[tuple[str, Outcome]] = []

    async def send(name: str, outcome: Outcome) -> None:
        sent.append((name, outcome))

    batcher = SuccessBatcher(send, interval_s=3600)
    for duration in (1.0, 2.0, 3.0):
        batcher.add("sms", 1, duration, slow=False)
    batcher.add("sms", 1, 900.0, slow=True)
    batcher.add("sms", 2, 1.5, slow=False)
    batcher.add("email", 1, 4.0, slow=False)

    await batcher.flush()
    await batcher.flush()

    assert sorted((name, o.generation, o.count, o.duration_ms) for name, o in sent) == [
        ("email", 1, 1, 4.0),
        ("sms", 1, 1, 900.0),
        ("sms", 1, 3, 3.0),
        ("sms", 2, 1, 1.5),
    ]
    assert all(o.outcome == "success" and o.permit is None for _, o in sent)


async def test_close_sends_what_is_left() -> None:
    sent: list[Outcome] = []

    async def send(name: str, outcome: Outcome) -> None:
        sent.append(outcome)

    batcher = SuccessBatcher(send, interval_s=3600)
    batcher.start()
    batcher.add("sms", 1, 1.0, slow=False)

    await batcher.aclose()

    assert [o.count for o in sent] == [1]
