"""Batching: one success outcome per (breaker, generation, failures seen, slow or not), one `rejected` per breaker."""

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
        batcher.add("sms", 1, duration, slow=False, failures_seen=4)
    batcher.add("sms", 1, 900.0, slow=True, failures_seen=4)
    batcher.add("sms", 1, 2.5, slow=False, failures_seen=5)
    batcher.add("sms", 2, 1.5, slow=False, failures_seen=5)
    batcher.add("email", 1, 4.0, slow=False, failures_seen=None)

    await batcher.flush()
    await batcher.flush()

    assert sorted((name, o.generation, o.failures_seen or 0, o.count, o.duration_ms) for name, o in sent) == [
        ("email", 1, 0, 1, 4.0),
        ("sms", 1, 4, 1, 900.0),
        ("sms", 1, 4, 3, 3.0),
        ("sms", 1, 5, 1, 2.5),
        ("sms", 2, 5, 1, 1.5),
    ]
    assert all(o.outcome == "success" and o.permit is None for _, o in sent)
    assert len({o.report_id for _, o in sent}) == len(sent), "every batch has its own report_id"
    assert all(o.report_id is not None and len(o.report_id) >= 16 for _, o in sent)


async def test_refusals_are_sent_as_one_rejected_outcome_per_breaker() -> None:
    sent: list[tuple[str, Outcome]] = []

    async def send(name: str, outcome: Outcome) -> None:
        sent.append((name, outcome))

    batcher = SuccessBatcher(send, interval_s=3600)
    for name in ("sms", "sms", "email", "sms"):
        batcher.add_rejected(name)

    await batcher.flush()

    assert sorted((name, o.outcome, o.count) for name, o in sent) == [("email", "rejected", 1), ("sms", "rejected", 3)]


async def test_close_sends_what_is_left() -> None:
    sent: list[Outcome] = []

    async def send(name: str, outcome: Outcome) -> None:
        sent.append(outcome)

    batcher = SuccessBatcher(send, interval_s=3600)
    batcher.start()
    batcher.add("sms", 1, 1.0, slow=False, failures_seen=0)

    await batcher.aclose()

    assert [o.count for o in sent] == [1]
