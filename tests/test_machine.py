"""Unit tests of the reference state machine (docs/semantics.md), on an explicit millisecond clock."""

from __future__ import annotations

import random
from typing import Final

import pytest

from breaker_client.protocol.machine import BreakerMachine, Event
from breaker_client.protocol.models import TRANSITIONS, BreakerConfig, FailureSignal, Outcome, State, Transition
from tests._outcomes import AUTOMATIC_REASONS, failure, success

T0: Final = 1_700_000_000_000
BASE: Final = BreakerConfig(
    failure_threshold=3,
    open_timeout_s=10.0,
    success_threshold=2,
    half_open_max_calls=2,
    permit_ttl_s=5.0,
)


def new_machine(config: BreakerConfig = BASE) -> BreakerMachine:
    return BreakerMachine(name="svc", config=config)


def transitions(events: list[Event]) -> list[Transition]:
    return [event for event in events if isinstance(event, Transition)]


def signals(events: list[Event]) -> list[FailureSignal]:
    return [event for event in events if isinstance(event, FailureSignal)]


def assert_automatic_transitions_legal(events: list[Event]) -> None:
    """Every transition without an actor is in TRANSITIONS with its reason's pair, or is a force expiry."""
    for event in transitions(events):
        if event.actor is not None or event.reason == "force expired":
            continue
        pair = (event.from_state, event.to_state)
        assert pair in TRANSITIONS, event
        assert AUTOMATIC_REASONS.get(event.reason) == pair, event


def trip(machine: BreakerMachine, now_ms: int) -> None:
    events = machine.record(failure(machine.config.failure_threshold), now_ms)
    assert [(t.from_state, t.to_state) for t in transitions(events)] == [(State.CLOSED, State.OPEN)]


def half_open(machine: BreakerMachine, now_ms: int = T0) -> tuple[str, int]:
    """Trip the machine and take the first probe permit; answers the permit and the time it was taken."""
    trip(machine, now_ms)
    at_ms = machine.open_until_ms
    decision, _ = machine.acquire(at_ms, lease=True)
    assert decision.allowed
    assert decision.permit is not None
    return decision.permit, at_ms


# -- CLOSED ---------------------------------------------------------------------------------------------------------


def test_new_breaker_is_closed_at_generation_one_with_zero_counts() -> None:
    snapshot, events = new_machine().snapshot(T0)

    assert (snapshot.state, snapshot.forced, snapshot.generation) == (State.CLOSED, None, 1)
    assert (snapshot.counts.success, snapshot.counts.failure, snapshot.counts.rejected) == (0, 0, 0)
    assert snapshot.opened_at is None
    assert snapshot.retry_after_s is None
    assert events == []


def test_closed_without_failures_allows_without_permit_once_proven() -> None:
    machine = new_machine()
    machine.record(success(), T0)
    decision, events = machine.acquire(T0, lease=True)

    assert decision.allowed
    assert decision.permit is None
    assert decision.retry_after_s is None
    assert (decision.state, decision.generation) == (State.CLOSED, 1)
    assert events == []


def test_failures_add_their_count_to_the_consecutive_failures() -> None:
    machine = new_machine()

    machine.record(failure(), T0)
    machine.record(failure(), T0)

    assert machine.consecutive_failures == 2
    assert machine.state is State.CLOSED
    assert machine.failure == 2


def test_a_leased_success_resets_the_consecutive_failures() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)
    lease, _ = machine.acquire(T0, lease=True)

    machine.record(success(permit=lease.permit), T0)
    machine.record(failure(2), T0)

    assert machine.state is State.CLOSED
    assert machine.consecutive_failures == 2
    assert (machine.success, machine.failure) == (1, 4)


def test_a_late_success_batch_does_not_end_a_failure_streak() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)

    machine.record(success(count=50, failures_seen=0), T0)
    machine.record(failure(), T0)

    assert machine.state is State.OPEN
    assert (machine.success, machine.failure) == (50, 3)


def test_a_plain_success_ends_a_failure_streak() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)

    machine.record(success(), T0)
    machine.record(failure(), T0)

    assert (machine.state, machine.consecutive_failures) == (State.CLOSED, 1)


def test_a_plain_acquire_in_closed_never_leases() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)

    decisions = [machine.acquire(T0)[0] for _ in range(10)]

    assert all((d.allowed, d.permit) == (True, None) for d in decisions)
    assert machine.permits == {}


def test_a_report_id_is_counted_once_while_remembered() -> None:
    machine = new_machine()
    machine.record(failure(report_id="r"), T0)

    machine.record(failure(report_id="r"), T0 + 59_999)
    remembered = machine.failure
    machine.record(failure(report_id="r"), T0 + 60_000)

    assert remembered == 1
    assert machine.failure == 2, "forgotten after max(permit_ttl_s, 60 s)"


def test_rejected_outcomes_only_count() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)

    events = machine.record(Outcome(outcome="rejected", count=3), T0)

    assert events == []
    assert (machine.rejected, machine.failure, machine.consecutive_failures) == (3, 2, 2)


def test_a_success_without_a_lease_resets_nothing_but_proves_the_breaker() -> None:
    machine = new_machine()
    machine.record(success(), T0)

    decision, _ = machine.acquire(T0, lease=True)

    assert (decision.allowed, decision.permit) == (True, None)


def test_reaching_the_failure_threshold_opens_once_and_bumps_generation() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)

    events = machine.record(failure(), T0 + 7)

    assert machine.state is State.OPEN
    assert machine.generation == 2
    assert machine.opened_at_ms == T0 + 7
    assert machine.open_until_ms == T0 + 7 + 10_000
    assert machine.consecutive_failures == 0
    assert transitions(events) == [
        Transition(
            name="svc",
            from_state=State.CLOSED,
            to_state=State.OPEN,
            at=(T0 + 7) / 1000,
            reason="failure threshold reached",
            actor=None,
            generation=2,
        )
    ]
    assert signals(events) == []


def test_one_outcome_with_a_count_at_the_threshold_opens() -> None:
    machine = new_machine()

    events = machine.record(failure(3), T0)

    assert machine.state is State.OPEN
    assert len(transitions(events)) == 1


def test_failure_signal_is_emitted_when_failures_start_and_when_they_clear() -> None:
    machine = new_machine()

    first = machine.record(failure(), T0)
    second = machine.record(failure(), T0)
    lease, _ = machine.acquire(T0, lease=True)
    cleared = machine.record(success(permit=lease.permit), T0)
    quiet = machine.record(success(), T0)

    assert signals(first) == [FailureSignal(name="svc", consecutive_failures=1, generation=1)]
    assert second == []
    assert signals(cleared) == [FailureSignal(name="svc", consecutive_failures=0, generation=1)]
    assert quiet == []


# -- OPEN -----------------------------------------------------------------------------------------------------------


def test_open_denies_with_the_time_left_and_counts_rejected() -> None:
    machine = new_machine()
    trip(machine, T0)

    decision, events = machine.acquire(T0 + 2_500, lease=True)

    assert not decision.allowed
    assert decision.permit is None
    assert decision.retry_after_s == 7.5
    assert decision.state is State.OPEN
    assert machine.rejected == 1
    assert events == []


def test_open_one_millisecond_before_the_timeout_still_denies() -> None:
    machine = new_machine()
    trip(machine, T0)

    decision, _ = machine.acquire(machine.open_until_ms - 1, lease=True)

    assert not decision.allowed
    assert decision.retry_after_s == 0.001
    assert machine.state is State.OPEN


def test_snapshot_of_open_past_its_timeout_still_reads_open_with_zero_retry_after() -> None:
    machine = new_machine()
    trip(machine, T0)

    snapshot, events = machine.snapshot(T0 + 60_000)

    assert snapshot.state is State.OPEN
    assert snapshot.retry_after_s == 0
    assert snapshot.opened_at == T0 / 1000
    assert events == []


def test_first_acquire_after_the_timeout_moves_to_half_open_and_takes_a_permit() -> None:
    machine = new_machine()
    trip(machine, T0)

    decision, events = machine.acquire(T0 + 10_000, lease=True)

    assert decision.allowed
    assert decision.state is State.HALF_OPEN
    assert decision.generation == 3
    assert decision.permit is not None
    assert machine.permits == {decision.permit: T0 + 10_000 + 5_000}
    assert [(t.from_state, t.to_state, t.reason, t.generation) for t in transitions(events)] == [
        (State.OPEN, State.HALF_OPEN, "open timeout elapsed", 3)
    ]
    assert machine.opened_at_ms == T0, "opened_at is kept through HALF_OPEN"


def test_outcomes_while_open_change_only_the_counts() -> None:
    machine = new_machine()
    trip(machine, T0)
    generation = machine.generation

    events = machine.record(success(4), T0 + 1)

    assert events == []
    assert (machine.state, machine.generation, machine.consecutive_successes) == (State.OPEN, generation, 0)
    assert machine.success == 4


# -- HALF_OPEN ------------------------------------------------------------------------------------------------------


def test_half_open_grants_at_most_half_open_max_calls_permits() -> None:
    machine = new_machine()
    first, at_ms = half_open(machine)

    second, _ = machine.acquire(at_ms + 1_000, lease=True)
    third, _ = machine.acquire(at_ms + 2_000, lease=True)

    assert second.allowed
    assert second.permit not in (None, first)
    assert not third.allowed
    assert third.permit is None
    assert third.retry_after_s == 3.0, "time until the first live permit expires"
    assert machine.rejected == 1


def test_permit_ids_are_random_or_the_given_ones() -> None:
    machine = new_machine(BreakerConfig(failure_threshold=100))

    drawn = [machine.acquire(T0, lease=True)[0].permit for _ in range(50)]
    given, _ = machine.acquire(T0, lease=True, permit="chosen-by-the-replica")

    assert len(set(drawn)) == 50
    assert all(permit is not None and len(permit) >= 16 for permit in drawn), "96 bits from secrets"
    assert given.permit == "chosen-by-the-replica"


def test_a_reported_probe_keeps_its_slot_and_an_expired_one_gives_it_back() -> None:
    machine = new_machine(BreakerConfig(half_open_max_calls=2, success_threshold=2, permit_ttl_s=5.0))
    first, at_ms = half_open(machine)
    machine.record(success(permit=first), at_ms)
    second, _ = machine.acquire(at_ms, lease=True)

    full, _ = machine.acquire(at_ms + 1, lease=True)
    after_expiry, _ = machine.acquire(at_ms + 5_000, lease=True)

    assert second.allowed
    assert not full.allowed, "2 probes per window in total: the reported one still counts"
    assert after_expiry.allowed, "the second probe expired unreported: its slot is back"
    assert machine.half_open_used == 2


def test_expired_permit_frees_its_slot() -> None:
    machine = new_machine(
        BreakerConfig(half_open_max_calls=1, success_threshold=1, permit_ttl_s=5.0, open_timeout_s=10.0)
    )
    first, at_ms = half_open(machine)
    denied, _ = machine.acquire(at_ms + 4_999, lease=True)

    regranted, _ = machine.acquire(at_ms + 5_000, lease=True)

    assert not denied.allowed
    assert regranted.allowed
    assert regranted.permit not in (None, first)
    assert list(machine.permits) == [regranted.permit]


def test_probe_successes_up_to_the_threshold_close_the_breaker() -> None:
    machine = new_machine()
    first, at_ms = half_open(machine)
    second, _ = machine.acquire(at_ms, lease=True)
    assert second.permit is not None

    after_one = machine.record(success(permit=first), at_ms + 1)
    successes_after_one = machine.consecutive_successes
    after_two = machine.record(success(permit=second.permit), at_ms + 2)

    assert after_one == []
    assert successes_after_one == 1
    assert machine.state is State.CLOSED
    assert machine.opened_at_ms == 0
    assert machine.open_streak == 0
    assert machine.permits == {}
    assert [(t.from_state, t.to_state, t.reason) for t in transitions(after_two)] == [
        (State.HALF_OPEN, State.CLOSED, "probes succeeded")
    ]


def test_one_probe_failure_reopens_with_a_fresh_open_time() -> None:
    machine = new_machine()
    permit, at_ms = half_open(machine)

    events = machine.record(failure(permit=permit), at_ms + 3)

    assert machine.state is State.OPEN
    assert machine.open_streak == 1
    assert machine.opened_at_ms == at_ms + 3
    assert machine.open_until_ms == at_ms + 3 + 10_000
    assert machine.permits == {}
    assert [(t.from_state, t.to_state, t.reason) for t in transitions(events)] == [
        (State.HALF_OPEN, State.OPEN, "probe failed")
    ]


def test_failed_half_open_rounds_multiply_the_open_time_up_to_the_cap() -> None:
    config = BreakerConfig(failure_threshold=1, open_timeout_s=1.0, open_backoff=2.0, max_open_timeout_s=5.0)
    machine = new_machine(config)
    trip(machine, T0)
    open_times_ms = [machine.open_until_ms - machine.opened_at_ms]

    for _ in range(4):
        decision, _ = machine.acquire(machine.open_until_ms, lease=True)
        assert decision.permit is not None
        machine.record(failure(permit=decision.permit), machine.open_until_ms)
        open_times_ms.append(machine.open_until_ms - machine.opened_at_ms)

    assert open_times_ms == [1_000, 2_000, 4_000, 5_000, 5_000]


def test_a_backoff_too_large_for_a_float_is_capped_not_an_error() -> None:
    config = BreakerConfig(failure_threshold=1, open_timeout_s=1.0, open_backoff=100.0, max_open_timeout_s=600.0)
    machine = new_machine(config)
    trip(machine, T0)
    machine.open_streak = 200  # 100.0**200 overflows a float; Lua's arithmetic gives inf and caps it

    decision, _ = machine.acquire(machine.open_until_ms, lease=True)
    machine.record(failure(permit=decision.permit), machine.open_until_ms)

    assert machine.open_until_ms - machine.opened_at_ms == 600_000


def test_closing_through_probes_resets_the_backoff() -> None:
    config = BreakerConfig(failure_threshold=1, success_threshold=1, open_timeout_s=1.0, open_backoff=3.0)
    machine = new_machine(config)
    permit, at_ms = half_open(machine)
    machine.record(failure(permit=permit), at_ms)
    decision, _ = machine.acquire(machine.open_until_ms, lease=True)
    assert decision.permit is not None
    machine.record(success(permit=decision.permit), machine.open_until_ms)
    assert machine.state is State.CLOSED

    trip(machine, T0 + 100_000)

    assert machine.open_until_ms - machine.opened_at_ms == 1_000


@pytest.mark.parametrize("permit", [None, "no-such-permit", "expired"])
def test_half_open_outcome_without_a_valid_permit_changes_nothing_but_counts(permit: str | None) -> None:
    machine = new_machine(
        BreakerConfig(failure_threshold=3, success_threshold=1, permit_ttl_s=1.0, open_timeout_s=10.0)
    )
    live, at_ms = half_open(machine)
    now_ms = at_ms + 10
    if permit == "expired":
        permit, now_ms = live, at_ms + 1_000
    generation = machine.generation

    after_success = machine.record(success(permit=permit), now_ms)
    after_failure = machine.record(failure(permit=permit), now_ms)

    assert (after_success, after_failure) == ([], [])
    assert (machine.state, machine.generation) == (State.HALF_OPEN, generation)
    assert machine.consecutive_successes == 0
    assert (machine.success, machine.failure) == (1, 4)


# -- generation -----------------------------------------------------------------------------------------------------


def test_stale_generation_changes_no_state_but_counts_and_keeps_the_permit() -> None:
    machine = new_machine(BreakerConfig(failure_threshold=3, success_threshold=1))
    before_trip, _ = machine.acquire(T0, lease=True)
    permit, at_ms = half_open(machine)

    late = machine.record(failure(permit=permit, generation=before_trip.generation), at_ms + 1)

    assert late == []
    assert machine.state is State.HALF_OPEN
    assert machine.failure == 4
    assert permit in machine.permits
    closing = machine.record(success(permit=permit, generation=machine.generation), at_ms + 2)
    assert [t.to_state for t in transitions(closing)] == [State.CLOSED]


def test_stale_generation_in_closed_does_not_add_to_consecutive_failures() -> None:
    machine = new_machine()

    machine.record(failure(2, generation=0), T0)

    assert machine.consecutive_failures == 0
    assert machine.failure == 2


def test_generation_bumps_once_for_every_transition_force_reset_and_force_expiry() -> None:
    machine = new_machine(BreakerConfig(failure_threshold=1, success_threshold=1, open_timeout_s=1.0))
    generations = [machine.generation]

    trip(machine, T0)
    generations.append(machine.generation)
    decision, _ = machine.acquire(T0 + 1_000, lease=True)
    generations.append(machine.generation)
    assert decision.permit is not None
    machine.record(success(permit=decision.permit), T0 + 1_000)
    generations.append(machine.generation)
    machine.force(State.OPEN, "drill", 1.0, "ops", T0 + 2_000)
    generations.append(machine.generation)
    machine.snapshot(T0 + 3_000)
    generations.append(machine.generation)
    machine.reset("clean", "ops", T0 + 3_000)
    generations.append(machine.generation)

    assert generations == [1, 2, 3, 4, 5, 6, 7]


# -- leases while failures accumulate --------------------------------------------------------------------------------


def test_closed_with_failures_hands_out_leases_until_failures_plus_leases_reach_the_threshold() -> None:
    machine = new_machine()
    machine.record(failure(), T0)

    first, _ = machine.acquire(T0, lease=True)
    second, _ = machine.acquire(T0 + 1_000, lease=True)
    third, _ = machine.acquire(T0 + 2_000, lease=True)

    assert first.allowed
    assert first.permit is not None
    assert first.state is State.CLOSED
    assert second.allowed
    assert second.permit is not None
    assert not third.allowed
    assert third.retry_after_s == 3.0, "time until the first lease expires"
    assert machine.rejected == 1
    assert machine.state is State.CLOSED


def test_a_success_on_a_lease_clears_failures_so_calls_flow_without_permits() -> None:
    machine = new_machine()
    machine.record(failure(), T0)
    lease, _ = machine.acquire(T0, lease=True)

    machine.record(success(permit=lease.permit), T0 + 1)
    decision, _ = machine.acquire(T0 + 2, lease=True)

    assert machine.permits == {}
    assert decision.allowed
    assert decision.permit is None


def test_a_failure_on_a_lease_releases_it_and_counts_toward_the_threshold() -> None:
    machine = new_machine()
    machine.record(failure(), T0)
    lease, _ = machine.acquire(T0, lease=True)
    other, _ = machine.acquire(T0, lease=True)

    machine.record(failure(permit=lease.permit), T0 + 1)
    denied, _ = machine.acquire(T0 + 2, lease=True)

    assert list(machine.permits) == [other.permit]
    assert machine.consecutive_failures == 2
    assert not denied.allowed


def test_an_expired_lease_frees_the_budget() -> None:
    machine = new_machine()
    machine.record(failure(), T0)
    machine.acquire(T0, lease=True)
    machine.acquire(T0, lease=True)

    decision, _ = machine.acquire(T0 + 5_000, lease=True)

    assert decision.allowed
    assert decision.permit is not None


# -- rate mode ------------------------------------------------------------------------------------------------------

RATE: Final = BreakerConfig(failure_threshold=100, window_s=10.0, min_calls=10, failure_rate=0.5)
SLOW: Final = BreakerConfig(failure_threshold=100, window_s=10.0, min_calls=4, slow_call_ms=100.0, slow_call_rate=0.5)


def test_failure_rate_does_not_open_below_min_calls() -> None:
    machine = new_machine(RATE)

    machine.record(failure(5), T0)
    machine.record(success(4), T0)

    assert machine.state is State.CLOSED


def test_failure_rate_at_the_threshold_over_min_calls_opens() -> None:
    machine = new_machine(RATE)
    machine.record(failure(5), T0)
    machine.record(success(4), T0 + 100)

    events = machine.record(success(), T0 + 200)

    assert machine.state is State.OPEN
    assert [t.reason for t in transitions(events)] == ["failure rate exceeded"]


def test_failure_rate_under_the_threshold_stays_closed() -> None:
    machine = new_machine(RATE)

    for _ in range(4):
        machine.record(failure(), T0)
        machine.record(success(), T0)
    machine.record(success(2), T0)

    assert machine.state is State.CLOSED, "4 failures in 10 calls is under 50%"


def test_calls_older_than_the_window_no_longer_count() -> None:
    machine = new_machine(RATE)
    machine.record(failure(9), T0)

    machine.record(success(), T0 + 10_000)

    assert machine.state is State.CLOSED
    assert sum(bucket.calls for bucket in machine.window.values()) == 1


def test_slow_call_rate_opens_and_a_call_at_slow_call_ms_counts_as_slow() -> None:
    machine = new_machine(SLOW)
    machine.record(success(duration_ms=100.0), T0)
    machine.record(success(duration_ms=99.9), T0)
    machine.record(success(), T0)

    events = machine.record(success(duration_ms=250.0), T0)

    assert machine.state is State.OPEN
    assert [t.reason for t in transitions(events)] == ["slow call rate exceeded"]


def test_calls_without_a_duration_are_not_slow() -> None:
    machine = new_machine(SLOW)

    machine.record(success(3), T0)
    machine.record(success(duration_ms=500.0), T0)

    assert machine.state is State.CLOSED


def test_consecutive_failures_open_in_rate_mode_too() -> None:
    machine = new_machine(BreakerConfig(failure_threshold=2, window_s=10.0, min_calls=50, failure_rate=0.9))

    events = machine.record(failure(2), T0)

    assert [t.reason for t in transitions(events)] == ["failure threshold reached"]


def test_a_transition_clears_the_window() -> None:
    machine = new_machine(RATE)
    machine.record(failure(5), T0)
    machine.record(success(5), T0)
    assert machine.state is State.OPEN

    assert machine.window == {}


# -- force and reset ------------------------------------------------------------------------------------------------


def test_forced_open_denies_everything_without_retry_after_when_it_has_no_ttl() -> None:
    machine = new_machine()

    events = machine.force(State.OPEN, "maintenance", None, "ops", T0)
    decision, _ = machine.acquire(T0 + 1, lease=True)

    assert not decision.allowed
    assert decision.state is State.OPEN
    assert decision.retry_after_s is None
    assert machine.rejected == 1
    assert [(t.from_state, t.to_state, t.reason, t.actor) for t in transitions(events)] == [
        (State.CLOSED, State.OPEN, "maintenance", "ops")
    ]


def test_forced_open_with_a_ttl_answers_the_time_left_on_the_force() -> None:
    machine = new_machine()
    machine.force(State.OPEN, "maintenance", 30.0, "ops", T0)

    decision, _ = machine.acquire(T0 + 10_000, lease=True)
    snapshot, _ = machine.snapshot(T0 + 10_000)

    assert decision.retry_after_s == 20.0
    assert snapshot.retry_after_s == 20.0


def test_forced_open_ignores_outcomes_except_for_counts() -> None:
    machine = new_machine()
    machine.force(State.OPEN, "maintenance", None, "ops", T0)

    events = machine.record(success(), T0)

    assert events == []
    assert (machine.forced, machine.state, machine.success) == (State.OPEN, State.CLOSED, 1)


def test_forced_closed_allows_everything_and_never_trips() -> None:
    machine = new_machine()
    machine.force(State.CLOSED, "trust me", None, "ops", T0)

    events = machine.record(failure(1_000), T0)
    decision, _ = machine.acquire(T0, lease=True)

    assert events == []
    assert decision.allowed
    assert decision.permit is None
    assert (machine.state, machine.forced, machine.consecutive_failures) == (State.CLOSED, State.CLOSED, 0)
    assert machine.failure == 1_000


def test_force_leaves_a_fresh_closed_machine_underneath() -> None:
    config = BreakerConfig(failure_threshold=1, open_timeout_s=1.0, open_backoff=2.0)
    machine = new_machine(config)
    permit, at_ms = half_open(machine)
    machine.record(failure(permit=permit), at_ms)

    events = machine.force(State.CLOSED, "override", None, "ops", at_ms)

    assert (machine.state, machine.consecutive_failures, machine.open_streak) == (State.CLOSED, 0, 0)
    assert (machine.opened_at_ms, machine.open_until_ms, machine.permits) == (0, 0, {})
    assert [(t.from_state, t.to_state) for t in transitions(events)] == [(State.OPEN, State.CLOSED)]


def test_force_to_the_current_state_is_still_audited() -> None:
    machine = new_machine()

    events = machine.force(State.CLOSED, "pin", None, "ops", T0)

    assert [(t.from_state, t.to_state, t.generation) for t in transitions(events)] == [(State.CLOSED, State.CLOSED, 2)]


@pytest.mark.parametrize("operation", ["acquire", "record", "snapshot", "force"])
def test_an_expired_force_lifts_to_fresh_closed_on_any_operation(operation: str) -> None:
    machine = new_machine()
    machine.force(State.OPEN, "drill", 2.0, "ops", T0)
    expiry_ms = T0 + 2_000

    if operation == "acquire":
        _, events = machine.acquire(expiry_ms, lease=True)
    elif operation == "record":
        events = machine.record(success(), expiry_ms)
    elif operation == "snapshot":
        _, events = machine.snapshot(expiry_ms)
    else:
        events = machine.force(State.CLOSED, "again", None, "ops", expiry_ms)

    lifted = transitions(events)[0]
    assert (lifted.from_state, lifted.to_state, lifted.reason, lifted.actor) == (
        State.OPEN,
        State.CLOSED,
        "force expired",
        None,
    )
    assert lifted.generation == 3
    assert machine.forced is (State.CLOSED if operation == "force" else None)


def test_a_force_is_still_in_place_one_millisecond_before_its_ttl() -> None:
    machine = new_machine()
    machine.force(State.OPEN, "drill", 2.0, "ops", T0)

    snapshot, events = machine.snapshot(T0 + 1_999)

    assert snapshot.forced is State.OPEN
    assert events == []


def test_force_ttl_is_floored_to_whole_milliseconds() -> None:
    machine = new_machine()

    machine.force(State.OPEN, "drill", 0.0019, "ops", T0)

    assert machine.forced_until_ms == T0 + 1


def test_reset_gives_fresh_closed_with_counts_cleared_and_force_lifted() -> None:
    machine = new_machine()
    machine.record(failure(2), T0)
    machine.record(success(), T0)
    machine.force(State.OPEN, "drill", None, "ops", T0)
    machine.acquire(T0, lease=True)
    generation = machine.generation

    events = machine.reset("all clear", "admin", T0 + 5)

    snapshot = machine.view(T0 + 5)
    assert (snapshot.state, snapshot.forced, snapshot.generation) == (State.CLOSED, None, generation + 1)
    assert (snapshot.counts.success, snapshot.counts.failure, snapshot.counts.rejected) == (0, 0, 0)
    assert (snapshot.consecutive_failures, snapshot.consecutive_successes) == (0, 0)
    assert transitions(events) == [
        Transition(
            name="svc",
            from_state=State.OPEN,
            to_state=State.CLOSED,
            at=(T0 + 5) / 1000,
            reason="all clear",
            actor="admin",
            generation=generation + 1,
        )
    ]


def test_reset_of_an_open_breaker_closes_it_and_clears_the_backoff() -> None:
    machine = new_machine(BreakerConfig(failure_threshold=1, open_timeout_s=1.0, open_backoff=4.0))
    permit, at_ms = half_open(machine)
    machine.record(failure(permit=permit), at_ms)

    machine.reset("fixed", "admin", at_ms)
    trip(machine, at_ms)

    assert machine.open_until_ms - machine.opened_at_ms == 1_000


def test_view_does_not_lift_an_expired_force() -> None:
    machine = new_machine()
    machine.force(State.OPEN, "drill", 1.0, "ops", T0)

    snapshot = machine.view(T0 + 5_000)

    assert snapshot.forced is State.OPEN
    assert snapshot.retry_after_s == 0


# -- seeded random walks --------------------------------------------------------------------------------------------

WALK_CONFIGS: Final = [
    BASE,
    BreakerConfig(failure_threshold=1, success_threshold=1, half_open_max_calls=1, open_timeout_s=0.5),
    BreakerConfig(open_timeout_s=1.0, open_backoff=2.0, max_open_timeout_s=4.0, permit_ttl_s=0.3),
    BreakerConfig(failure_threshold=50, window_s=2.0, min_calls=5, failure_rate=0.5, open_timeout_s=0.5),
    BreakerConfig(failure_threshold=50, window_s=1.0, min_calls=3, slow_call_ms=50.0, slow_call_rate=0.6),
]


def _random_step(machine: BreakerMachine, rng: random.Random, now_ms: int, held: list[str]) -> list[Event]:
    roll = rng.random()
    if roll < 0.35:
        decision, events = machine.acquire(now_ms, lease=True)
        if decision.allowed and decision.state is State.HALF_OPEN:
            assert decision.permit is not None, "a half-open call always carries a permit"
        if decision.permit is not None:
            held.append(decision.permit)
        return events
    if roll < 0.85:
        permit = held.pop(rng.randrange(len(held))) if held and rng.random() < 0.7 else None
        generation = rng.choice([None, machine.generation, machine.generation - 1])
        outcome = Outcome(
            outcome=rng.choice(["success", "failure"]),
            count=1 if permit is not None else rng.randint(1, 3),
            duration_ms=rng.choice([None, 10.0, 80.0]),
            permit=permit,
            generation=generation,
        )
        return machine.record(outcome, now_ms)
    if roll < 0.93:
        return machine.force(rng.choice([State.OPEN, State.CLOSED]), "walk", rng.choice([None, 0.5, 2.0]), "op", now_ms)
    if roll < 0.96:
        return machine.reset("walk", "op", now_ms)
    return machine.snapshot(now_ms)[1]


@pytest.mark.parametrize("seed", range(20))
def test_random_operation_sequences_keep_the_machine_invariants(seed: int) -> None:
    rng = random.Random(seed)
    config = WALK_CONFIGS[seed % len(WALK_CONFIGS)]
    machine = new_machine(config)
    now_ms = T0
    held: list[str] = []

    for _ in range(500):
        now_ms += rng.choice([0, 1, 10, 100, 400, 1_500])
        generation = machine.generation
        events = _random_step(machine, rng, now_ms, held)

        assert_automatic_transitions_legal(events)
        assert machine.generation == generation + len(transitions(events))
        for signal in signals(events):
            assert machine.state is State.CLOSED
            assert signal.generation == machine.generation
        if machine.forced is not None:
            assert (machine.state, machine.consecutive_failures, machine.permits) == (State.CLOSED, 0, {})
        if machine.state is State.CLOSED and machine.forced is None:
            assert machine.consecutive_failures < config.failure_threshold
        if machine.state is State.HALF_OPEN:
            live = [expiry for expiry in machine.permits.values() if expiry > now_ms]
            assert len(live) <= config.half_open_max_calls
            assert machine.consecutive_successes < config.success_threshold
        if machine.state is State.OPEN:
            assert machine.opened_at_ms > 0
            assert 0 < machine.open_until_ms - machine.opened_at_ms <= config.max_open_timeout_s * 1000
        snapshot = machine.view(now_ms)
        assert snapshot.retry_after_s is None or snapshot.retry_after_s >= 0
