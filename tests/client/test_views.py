"""What the client knows of a breaker: which news is applied, when it goes strict, when a denial ends."""

from __future__ import annotations

import msgspec

from breaker_client import Decision, State, Transition
from breaker_client._views import Views
from breaker_client.protocol.models import FailureSignal
from tests.client._fake import snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def opened(generation: int) -> Transition:
    return Transition(
        name="sms",
        from_state=State.CLOSED,
        to_state=State.OPEN,
        at=1.0,
        reason="failure threshold reached",
        actor=None,
        generation=generation,
    )


def test_a_transition_already_known_from_an_answer_is_no_news() -> None:
    views = Views(Clock())
    known = msgspec.structs.replace(snapshot("sms", generation=2, state=State.OPEN), retry_after_s=30.0)
    views.apply_snapshot(known, from_stream=False)

    assert views.apply_transition(opened(2)) is False
    view = views.get("sms")
    assert view is not None
    assert view.deadline == 130.0


def test_a_newer_transition_is_known_at_once_and_the_writers_snapshot_completes_it() -> None:
    views = Views(Clock())
    views.replace_all([snapshot("sms")])

    assert views.apply_transition(opened(2)) is True
    view = views.get("sms")
    assert view is not None
    assert (view.state, view.generation, view.healthy, view.deadline) == (State.OPEN, 2, False, None)

    left_behind = msgspec.structs.replace(snapshot("sms", generation=2, state=State.OPEN), retry_after_s=30.0)
    views.apply_snapshot(left_behind, from_stream=True)
    completed = views.get("sms")
    assert completed is not None
    assert completed.deadline == 130.0


def test_older_answer_does_not_overwrite_newer_knowledge() -> None:
    views = Views(Clock())
    views.replace_all([snapshot("sms", generation=5)])

    views.apply_snapshot(snapshot("sms", generation=4, consecutive_failures=2), from_stream=False)

    view = views.get("sms")
    assert view is not None
    assert view.generation == 5
    assert view.consecutive_failures == 0


def test_denied_decision_sets_the_deadline() -> None:
    clock = Clock()
    views = Views(clock)
    views.replace_all([snapshot("sms", generation=2, state=State.OPEN)])

    views.apply_decision("sms", Decision(allowed=False, state=State.OPEN, generation=2, retry_after_s=12.0))

    view = views.get("sms")
    assert view is not None
    assert view.deadline == 112.0
    clock.now = 110.0
    assert view.retry_after_s(clock()) == 2.0


def test_epoch_moves_when_the_breaker_goes_strict_not_while_it_stays_strict() -> None:
    views = Views(Clock())
    views.replace_all([snapshot("sms")])
    healthy = views.epoch("sms")

    views.apply_failures(FailureSignal(name="sms", consecutive_failures=1, generation=1))
    strict = views.epoch("sms")
    views.apply_snapshot(snapshot("sms", consecutive_failures=2), from_stream=False)

    assert strict != healthy
    assert views.epoch("sms") == strict


def test_stream_drop_moves_every_epoch() -> None:
    views = Views(Clock())
    views.replace_all([snapshot("sms")])
    views.set_live(True)
    before = views.epoch("sms")

    views.set_live(False)

    assert views.epoch("sms") != before
