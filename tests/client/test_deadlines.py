"""Per-attempt timeouts sharing timer slots: the same outcomes as asyncio.timeout."""

from __future__ import annotations

import asyncio

import pytest

from breaker_client._deadlines import Deadlines


async def never() -> None:
    await asyncio.Event().wait()


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines()

    with pytest.raises(TimeoutError), deadlines.limit(0.01):
        await never()


async def test_a_block_that_finishes_in_time_is_left_alone() -> None:
    deadlines = Deadlines()

    with deadlines.limit(30.0):
        await asyncio.sleep(0)
    # The slot's timer may still fire later: it must find nothing of this block to cancel.
    with pytest.raises(TimeoutError), deadlines.limit(0.01):
        await never()


async def test_no_limit_sets_no_timer() -> None:
    deadlines = Deadlines()

    with deadlines.limit(None):
        await asyncio.sleep(0)

    assert deadlines._slots == {}


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    entered = asyncio.Event()

    async def guarded() -> None:
        with deadlines.limit(30.0):
            entered.set()
            await never()

    task = asyncio.create_task(guarded())
    await entered.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_the_inner_of_two_nested_limits_that_expires_is_the_one_that_raises() -> None:
    deadlines = Deadlines()
    outer_timed_out = False

    try:
        with deadlines.limit(30.0), pytest.raises(TimeoutError), deadlines.limit(0.01):
            await never()
    except TimeoutError:
        outer_timed_out = True

    task = asyncio.current_task()
    assert not outer_timed_out
    assert task is not None
    assert task.cancelling() == 0
