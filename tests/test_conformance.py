"""One suite, two stores: `MemoryStore` (the Python machine) and `RedisStore` (the Lua scripts) obey the same rules.

The rules are docs/semantics.md. Time differs per store: the memory store runs on a fake clock that `advance`
moves at once; the Lua scripts read Redis `TIME`, so there `advance` waits until the server's clock has passed
the mark. Configs use long timeouts where a test needs something not to expire and short ones where it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

import msgspec
import pytest

from breaker_client.protocol.models import (
    TRANSITIONS,
    BreakerConfig,
    ConfigPatch,
    Decision,
    Deleted,
    FailureSignal,
    Force,
    Outcome,
    Snapshot,
    State,
    Transition,
)
from breaker_service.degradation import Degradation
from breaker_service.errors import BreakerCapError, InvalidRequestError, UnknownBreakerError
from breaker_service.store.breaker_memory import MemoryStore
from tests._outcomes import AUTOMATIC_REASONS, failure, success

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import redis.asyncio

    from breaker_service.events import Resync, StoreEvent
    from breaker_service.store.breaker_base import BreakerStore, ConfigResolver

Backend = Literal["memory", "redis"]
T0_MS: Final = 1_700_000_000_000
POLL_INTERVAL_S: Final = 0.005
ADVANCE_SLACK_S: Final = 10.0
EVENT_TIMEOUT_S: Final = 10.0
PERMIT_ID: Final = re.compile(r"[A-Za-z0-9_-]{16,}")

BASE: Final = BreakerConfig(
    failure_threshold=3,
    open_timeout_s=30.0,
    success_threshold=2,
    half_open_max_calls=2,
    permit_ttl_s=30.0,
)
SHORT_OPEN: Final = msgspec.structs.replace(BASE, open_timeout_s=0.05)
RESOLVED: Final = msgspec.structs.replace(BASE, failure_threshold=7, open_timeout_s=12.0)


# -- time per store ---------------------------------------------------------------------------------------------


class StoreClock(Protocol):
    """The store's own clock, as a test sees and moves it."""

    async def now_ms(self) -> int:
        """The store's time now, in Unix milliseconds."""
        ...

    async def advance(self, seconds: float) -> None:
        """Return once the store's time is at least `seconds` later than when called."""


class FakeClock:
    """The memory store's clock: it moves only when told."""

    def __init__(self, start_ms: int = T0_MS) -> None:
        self.current_ms = start_ms

    def __call__(self) -> int:
        return self.current_ms

    async def now_ms(self) -> int:
        return self.current_ms

    async def advance(self, seconds: float) -> None:
        self.current_ms += math.ceil(seconds * 1000)


class RedisTimeClock:
    """Redis server time, which the Lua scripts read; `advance` polls it until it has moved far enough."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def now_ms(self) -> int:
        seconds, micros = await self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def advance(self, seconds: float) -> None:
        # One millisecond past the mark, so the scripts' own rounding of TIME cannot land on the mark itself.
        target_ms = await self.now_ms() + math.ceil(seconds * 1000) + 1
        deadline = time.monotonic() + seconds + ADVANCE_SLACK_S
        while await self.now_ms() < target_ms:
            if time.monotonic() > deadline:
                pytest.fail(f"Redis TIME did not move {seconds}s forward within {seconds + ADVANCE_SLACK_S}s")
            await asyncio.sleep(POLL_INTERVAL_S)


# -- the two stores ---------------------------------------------------------------------------------------------


def resolve_default(name: str) -> BreakerConfig:
    return RESOLVED


@dataclass
class StoreKit:
    """A store under test, its clock, and a way to open more stores of the same kind."""

    backend: Backend
    clock: StoreClock
    open_store: Callable[[ConfigResolver, int], BreakerStore]
    opened: list[BreakerStore] = field(default_factory=list)

    async def store(
        self, *, resolve_config: ConfigResolver = resolve_default, max_breakers: int = 10_000
    ) -> BreakerStore:
        store = self.open_store(resolve_config, max_breakers)
        await store.start()
        self.opened.append(store)
        return store


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@dataclass(frozen=True)
class RedisTarget:
    """The flushed test Redis: its URL, for the stores' own clients, and a client for the clock."""

    url: str
    client: redis.asyncio.Redis


@pytest.fixture
def redis_target(request: pytest.FixtureRequest, backend: Backend) -> RedisTarget | None:
    """Redis for the redis half only; the memory half needs no Redis at all."""
    if backend == "memory":
        return None
    client: redis.asyncio.Redis = request.getfixturevalue("redis_client")
    url: str = request.getfixturevalue("redis_url")
    return RedisTarget(url=url, client=client)


@pytest.fixture
async def kit(backend: Backend, redis_target: RedisTarget | None) -> AsyncIterator[StoreKit]:
    if redis_target is None:
        fake = FakeClock()

        def open_memory(resolve_config: ConfigResolver, max_breakers: int) -> BreakerStore:
            return MemoryStore(resolve_config=resolve_config, max_breakers=max_breakers, clock=fake)

        built = StoreKit(backend=backend, clock=fake, open_store=open_memory)
    else:
        from breaker_service.store.breaker_redis import RedisStore
        from breaker_service.store.connection_redis import create_redis

        url = redis_target.url

        def open_redis(resolve_config: ConfigResolver, max_breakers: int) -> BreakerStore:
            # The client the service itself builds from REDIS_URL, so its pool is the one under test.
            return RedisStore(create_redis(url), resolve_config=resolve_config, max_breakers=max_breakers)

        built = StoreKit(backend=backend, clock=RedisTimeClock(redis_target.client), open_store=open_redis)
    yield built
    try:
        # Whatever a test did, every automatic transition it left in history must be a legal one.
        for store in built.opened:
            for name in await store.names():
                assert_automatic_transitions_legal(await store.history(name, limit=1000))
    finally:
        for store in built.opened:
            await store.close()


@pytest.fixture
async def store(kit: StoreKit) -> BreakerStore:
    return await kit.store()


# -- helpers ----------------------------------------------------------------------------------------------------


def assert_automatic_transitions_legal(history: list[Transition]) -> None:
    """Every entry without an actor is an automatic transition in TRANSITIONS (with its reason), a force expiry,
    or an audit entry that changes nothing."""
    for entry in history:
        if entry.actor is not None or entry.reason == "force expired" or entry.from_state == entry.to_state:
            continue
        pair = (entry.from_state, entry.to_state)
        assert pair in TRANSITIONS, entry
        assert AUTOMATIC_REASONS.get(entry.reason) == pair, entry


def moves(history: list[Transition]) -> list[tuple[State, State, str, str | None]]:
    return [(entry.from_state, entry.to_state, entry.reason, entry.actor) for entry in history]


async def configured(store: BreakerStore, name: str, config: BreakerConfig) -> Snapshot:
    return await store.configure(name, config, actor="tester", reason="setup")


async def tripped(store: BreakerStore, name: str, config: BreakerConfig) -> Snapshot:
    await configured(store, name, config)
    snapshot = await store.record(name, failure(config.failure_threshold))
    assert snapshot.state is State.OPEN
    return snapshot


async def half_opened(kit: StoreKit, store: BreakerStore, name: str, config: BreakerConfig) -> Decision:
    """Trip the breaker, let its open time pass, and take the first probe permit."""
    await tripped(store, name, config)
    await kit.clock.advance(config.open_timeout_s)
    decision = await store.acquire(name)
    assert decision.allowed
    assert decision.state is State.HALF_OPEN
    assert decision.permit is not None
    return decision


def payload(event: StoreEvent) -> Transition | FailureSignal | Snapshot | Deleted | Degradation | Resync:
    data = event.data
    if not isinstance(data, msgspec.Raw):
        return data
    kinds: dict[str, type[Transition | FailureSignal | Snapshot | Deleted | Degradation]] = {
        "state": Transition,
        "failures": FailureSignal,
        "config": Snapshot,
        "breaker": Snapshot,
        "deleted": Deleted,
        "mode": Degradation,
    }
    return msgspec.json.decode(data, type=kinds[event.kind])


@contextlib.asynccontextmanager
async def subscribed(store: BreakerStore) -> AsyncIterator[asyncio.Queue[StoreEvent]]:
    """A queue of the store's events, answered once the store says the subscription is live: from then on no
    event may be missed, which the tests using it check."""
    queue: asyncio.Queue[StoreEvent] = asyncio.Queue()
    live = asyncio.Event()

    async def consume() -> None:
        async for event in store.events(live):
            queue.put_nowait(event)

    consumer = asyncio.create_task(consume())
    try:
        waiting = asyncio.ensure_future(live.wait())
        await asyncio.wait({waiting, consumer}, timeout=EVENT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not live.is_set():
            pytest.fail("the events subscription never became live")
        yield queue
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def next_event_for(queue: asyncio.Queue[StoreEvent], name: str) -> StoreEvent:
    while True:
        event = await asyncio.wait_for(queue.get(), timeout=EVENT_TIMEOUT_S)
        data = payload(event)
        if not isinstance(data, Degradation) and data.name == name:
            return event


# -- existence, creation, configuration -------------------------------------------------------------------------


async def test_reads_and_admin_actions_on_an_unknown_breaker_raise_unknown(store: BreakerStore) -> None:
    with pytest.raises(UnknownBreakerError):
        await store.snapshot("ghost")
    with pytest.raises(UnknownBreakerError):
        await store.history("ghost")
    with pytest.raises(UnknownBreakerError):
        await store.reset("ghost", reason="why", actor="tester")
    with pytest.raises(UnknownBreakerError):
        await store.delete("ghost", actor="tester", reason=None)

    assert await store.names() == []


@pytest.mark.parametrize("operation", ["acquire", "record", "force"])
async def test_acquire_record_and_force_create_an_unknown_breaker_with_its_resolved_config(
    kit: StoreKit, operation: str
) -> None:
    overrides = {"payments": msgspec.structs.replace(BASE, failure_threshold=9)}
    store = await kit.store(resolve_config=lambda name: overrides.get(name, RESOLVED))

    if operation == "acquire":
        decision = await store.acquire("payments")
        assert (decision.allowed, decision.state, decision.generation) == (True, State.CLOSED, 1)
    elif operation == "record":
        await store.record("payments", failure())
    else:
        await store.force("payments", State.OPEN, reason="drill", ttl_s=None, actor="tester")

    snapshot = await store.snapshot("payments")
    assert snapshot.config == overrides["payments"]
    assert await store.names() == ["payments"]


async def test_configure_creates_a_closed_breaker_at_generation_one_and_audits_it(
    kit: StoreKit, store: BreakerStore
) -> None:
    before_ms = await kit.clock.now_ms()
    snapshot = await store.configure("svc", BASE, actor="alice", reason="onboarding")
    after_ms = await kit.clock.now_ms()

    assert (snapshot.name, snapshot.state, snapshot.forced, snapshot.generation) == ("svc", State.CLOSED, None, 1)
    assert snapshot.config == BASE
    history = await store.history("svc")
    assert moves(history) == [(State.CLOSED, State.CLOSED, "onboarding", "alice")]
    assert history[0].generation == 1
    assert before_ms / 1000 <= history[0].at <= after_ms / 1000


async def test_configure_replaces_the_config_and_keeps_state_and_generation(store: BreakerStore) -> None:
    opened = await tripped(store, "svc", BASE)
    replacement = msgspec.structs.replace(BASE, failure_threshold=10)

    snapshot = await store.configure("svc", replacement, actor="bob", reason="tune")

    assert snapshot.config == replacement
    assert (snapshot.state, snapshot.generation) == (State.OPEN, opened.generation)
    history = await store.history("svc")
    assert moves(history)[0] == (State.OPEN, State.OPEN, "tune", "bob")
    assert history[0].generation == opened.generation
    assert (await store.snapshot("svc")).config == replacement


async def test_patch_merges_fields_keeps_state_and_is_audited(store: BreakerStore) -> None:
    rated = msgspec.structs.replace(BASE, window_s=10.0, min_calls=5, failure_rate=0.5)
    opened = await tripped(store, "svc", rated)
    async with subscribed(store) as queue:
        patch = ConfigPatch(failure_threshold=9, window_s=None, min_calls=None, failure_rate=None)
        snapshot = await store.patch("svc", patch, actor="bob", reason="tune")
        event = await next_event_for(queue, "svc")

    assert snapshot.config == msgspec.structs.replace(BASE, failure_threshold=9)
    assert (snapshot.state, snapshot.generation) == (State.OPEN, opened.generation)
    assert moves(await store.history("svc"))[0] == (State.OPEN, State.OPEN, "tune", "bob")
    assert event.kind == "config"
    assert payload(event) == snapshot


async def test_a_patch_that_breaks_a_rule_is_refused_naming_the_fields_and_changes_nothing(
    store: BreakerStore,
) -> None:
    await configured(store, "svc", BASE)

    with pytest.raises(InvalidRequestError) as refused:
        await store.patch("svc", ConfigPatch(success_threshold=3), actor="bob", reason="tune")

    assert "success_threshold" in refused.value.message
    assert "half_open_max_calls" in refused.value.message
    snapshot = await store.snapshot("svc")
    assert snapshot.config == BASE
    assert moves(await store.history("svc"))[0][2] == "setup", "nothing audited"


async def test_patch_of_an_unknown_breaker_raises_unknown(store: BreakerStore) -> None:
    with pytest.raises(UnknownBreakerError):
        await store.patch("ghost", ConfigPatch(failure_threshold=2), actor="bob", reason=None)
    assert await store.names() == []


async def test_declare_creates_only_a_missing_breaker(store: BreakerStore) -> None:
    await store.declare("svc", BASE)
    await store.record("svc", failure())

    await store.declare("svc", RESOLVED)

    snapshot = await store.snapshot("svc")
    assert snapshot.config == BASE
    assert snapshot.consecutive_failures == 1


async def test_names_and_snapshots_are_sorted_by_name(store: BreakerStore) -> None:
    for name in ("zeta", "alpha", "mid"):
        await configured(store, name, BASE)

    assert await store.names() == ["alpha", "mid", "zeta"]
    assert [snapshot.name for snapshot in await store.snapshots()] == ["alpha", "mid", "zeta"]


async def test_delete_removes_the_breaker_and_its_history(store: BreakerStore) -> None:
    await tripped(store, "svc", BASE)
    await configured(store, "other", BASE)

    await store.delete("svc", actor="tester", reason="retired")

    assert await store.names() == ["other"]
    with pytest.raises(UnknownBreakerError):
        await store.snapshot("svc")
    with pytest.raises(UnknownBreakerError):
        await store.history("svc")
    with pytest.raises(UnknownBreakerError):
        await store.reset("svc", reason="why", actor="tester")
    recreated = await store.acquire("svc")
    assert (recreated.state, recreated.generation) == (State.CLOSED, 1)
    assert (await store.snapshot("svc")).counts.failure == 0


async def test_creating_a_breaker_beyond_the_cap_raises_and_leaves_existing_ones_usable(kit: StoreKit) -> None:
    store = await kit.store(max_breakers=2)
    await configured(store, "one", BASE)
    await store.acquire("two")

    with pytest.raises(BreakerCapError):
        await store.acquire("three")
    with pytest.raises(BreakerCapError):
        await store.record("three", failure())
    with pytest.raises(BreakerCapError):
        await store.force("three", State.OPEN, reason="drill", ttl_s=None, actor="tester")
    with pytest.raises(BreakerCapError):
        await store.configure("three", BASE, actor="tester", reason=None)

    assert await store.names() == ["one", "two"]
    assert (await store.acquire("one")).allowed
    await store.delete("one", actor="tester", reason=None)
    assert (await store.acquire("three")).allowed


# -- CLOSED -----------------------------------------------------------------------------------------------------


async def test_failures_count_by_their_count_and_open_at_the_threshold(kit: StoreKit, store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    after_two = await store.record("svc", failure(2))
    before_ms = await kit.clock.now_ms()
    after_three = await store.record("svc", failure())
    after_ms = await kit.clock.now_ms()

    assert (after_two.state, after_two.consecutive_failures) == (State.CLOSED, 2)
    assert (after_three.state, after_three.generation, after_three.consecutive_failures) == (State.OPEN, 2, 0)
    assert after_three.counts.failure == 3
    assert after_three.opened_at is not None
    assert before_ms / 1000 <= after_three.opened_at <= after_ms / 1000
    history = await store.history("svc")
    assert moves(history)[0] == (State.CLOSED, State.OPEN, "failure threshold reached", None)
    assert history[0].generation == 2


async def test_a_leased_success_resets_the_consecutive_failures(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(2))
    lease = await store.acquire("svc", lease=True)

    reset = await store.record("svc", success(permit=lease.permit, generation=lease.generation))
    again = await store.record("svc", failure(2))

    assert reset.consecutive_failures == 0
    assert (again.state, again.consecutive_failures) == (State.CLOSED, 2)
    assert (again.counts.success, again.counts.failure) == (1, 4)


async def test_a_late_success_batch_does_not_end_a_failure_streak(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", success())
    await store.record("svc", failure(2))

    late = await store.record("svc", success(count=40, failures_seen=0))
    tripped_snapshot = await store.record("svc", failure())

    assert late.consecutive_failures == 2
    assert tripped_snapshot.state is State.OPEN
    assert tripped_snapshot.counts.success == 41


async def test_a_plain_success_ends_a_failure_streak(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(2))

    ended = await store.record("svc", success())
    after = await store.record("svc", failure())

    assert ended.consecutive_failures == 0
    assert (after.state, after.consecutive_failures) == (State.CLOSED, 1)


async def test_a_success_that_saw_every_failure_ends_the_streak(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(2))

    snapshot = await store.record("svc", success(count=3, failures_seen=2))

    assert (snapshot.consecutive_failures, snapshot.counts.success) == (0, 3)


async def test_a_plain_acquire_in_closed_is_always_allowed_without_a_permit(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(BASE.failure_threshold - 1))

    decisions = [await store.acquire("svc") for _ in range(BASE.failure_threshold + 2)]

    assert all((d.allowed, d.permit, d.state) == (True, None, State.CLOSED) for d in decisions)
    assert (await store.snapshot("svc")).counts.rejected == 0


async def test_rejected_outcomes_count_and_change_no_state(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(2))

    snapshot = await store.record("svc", Outcome(outcome="rejected", count=7))

    assert (snapshot.state, snapshot.generation, snapshot.consecutive_failures) == (State.CLOSED, 1, 2)
    assert (snapshot.counts.rejected, snapshot.counts.failure, snapshot.counts.success) == (7, 2, 0)


async def test_a_report_id_is_counted_once(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    first = await store.record("svc", failure(2, report_id="r-1"))
    again = await store.record("svc", failure(2, report_id="r-1"))
    other = await store.record("svc", failure(report_id="r-2"))

    assert (first.consecutive_failures, first.counts.failure) == (2, 2)
    assert (again.consecutive_failures, again.counts.failure, again.generation) == (2, 2, 1)
    assert (other.state, other.counts.failure) == (State.OPEN, 3)


async def test_closed_without_failures_allows_without_a_permit_once_a_success_proved_it(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", success())

    decision = await store.acquire("svc")

    assert (decision.allowed, decision.permit, decision.retry_after_s) == (True, None, None)
    assert (decision.state, decision.generation) == (State.CLOSED, 1)


async def test_an_unproven_breaker_leases_calls_within_the_failure_budget(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    decisions = [await store.acquire("svc", lease=True) for _ in range(BASE.failure_threshold + 1)]

    leased = decisions[: BASE.failure_threshold]
    assert all(d.allowed and d.permit is not None for d in leased)
    assert len({d.permit for d in leased}) == BASE.failure_threshold
    assert (decisions[-1].allowed, decisions[-1].state) == (False, State.CLOSED)
    assert (await store.snapshot("svc")).counts.rejected == 1


async def test_a_leased_success_proves_the_breaker_and_frees_the_budget(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    lease = await store.acquire("svc", lease=True)

    await store.record("svc", success(permit=lease.permit, generation=lease.generation))
    after = [await store.acquire("svc", lease=True) for _ in range(BASE.failure_threshold + 1)]

    assert all(d.allowed and d.permit is None for d in after)


async def test_closing_through_probes_proves_the_breaker(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(BASE, open_timeout_s=0.05, success_threshold=1)
    await tripped(store, "svc", config)
    await kit.clock.advance(0.05)
    probe = await store.acquire("svc", lease=True)

    closed = await store.record("svc", success(permit=probe.permit, generation=probe.generation))
    decision = await store.acquire("svc", lease=True)

    assert closed.state is State.CLOSED
    assert (decision.allowed, decision.permit) == (True, None)


async def test_reset_makes_the_breaker_unproven_again(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", success())

    await store.reset("svc", reason="fresh start", actor="ops")
    decision = await store.acquire("svc", lease=True)

    assert decision.allowed
    assert decision.permit is not None


async def test_calls_in_flight_count_against_the_budget_while_failures_accumulate(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure())

    first = await store.acquire("svc", lease=True)
    second = await store.acquire("svc", lease=True)
    third = await store.acquire("svc", lease=True)

    assert first.allowed
    assert second.allowed
    assert first.permit is not None
    assert second.permit not in (None, first.permit)
    assert not third.allowed
    assert third.retry_after_s is not None
    assert 0 < third.retry_after_s <= BASE.permit_ttl_s
    snapshot = await store.snapshot("svc")
    assert (snapshot.state, snapshot.counts.rejected) == (State.CLOSED, 1)


async def test_a_success_on_a_lease_clears_failures_so_calls_flow_without_permits(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure())
    lease = await store.acquire("svc", lease=True)

    await store.record("svc", success(permit=lease.permit))
    decision = await store.acquire("svc", lease=True)

    assert (decision.allowed, decision.permit) == (True, None)


async def test_a_failure_on_a_lease_releases_it_and_counts_toward_the_threshold(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure())
    lease = await store.acquire("svc", lease=True)
    await store.acquire("svc", lease=True)

    snapshot = await store.record("svc", failure(permit=lease.permit))
    denied = await store.acquire("svc", lease=True)

    assert (snapshot.state, snapshot.consecutive_failures) == (State.CLOSED, 2)
    assert not denied.allowed, "2 failures + 1 lease still out reach the threshold of 3"


async def test_an_expired_lease_frees_the_budget(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(BASE, failure_threshold=2, permit_ttl_s=0.2)
    await configured(store, "svc", config)
    await store.record("svc", failure())
    lease = await store.acquire("svc", lease=True)
    assert lease.permit is not None

    await kit.clock.advance(config.permit_ttl_s)
    decision = await store.acquire("svc", lease=True)

    assert decision.allowed
    assert decision.permit not in (None, lease.permit)


async def test_lowering_the_threshold_below_the_current_failures_denies_without_permits_out(
    store: BreakerStore,
) -> None:
    await configured(store, "svc", msgspec.structs.replace(BASE, failure_threshold=5))
    await store.record("svc", failure(4))
    await store.configure("svc", BASE, actor="tester", reason="tighten")

    decision = await store.acquire("svc", lease=True)
    opened = await store.record("svc", failure())

    assert (decision.allowed, decision.state, decision.permit) == (False, State.CLOSED, None)
    assert opened.state is State.OPEN


# -- OPEN and HALF_OPEN -----------------------------------------------------------------------------------------


async def test_open_denies_with_retry_after_and_counts_rejected(store: BreakerStore) -> None:
    opened = await tripped(store, "svc", BASE)

    decision = await store.acquire("svc")

    assert (decision.allowed, decision.state, decision.permit) == (False, State.OPEN, None)
    assert decision.generation == opened.generation
    assert decision.retry_after_s is not None
    assert 0 < decision.retry_after_s <= BASE.open_timeout_s
    snapshot = await store.snapshot("svc")
    assert snapshot.counts.rejected == 1
    assert snapshot.retry_after_s is not None
    assert 0 < snapshot.retry_after_s <= BASE.open_timeout_s


async def test_outcomes_while_open_change_only_the_counts(store: BreakerStore) -> None:
    opened = await tripped(store, "svc", BASE)

    snapshot = await store.record("svc", success(4))

    assert (snapshot.state, snapshot.generation, snapshot.consecutive_successes) == (State.OPEN, opened.generation, 0)
    assert snapshot.counts.success == 4


async def test_open_past_its_timeout_reads_open_until_an_acquire_moves_it_to_half_open(
    kit: StoreKit, store: BreakerStore
) -> None:
    opened = await tripped(store, "svc", SHORT_OPEN)
    await kit.clock.advance(SHORT_OPEN.open_timeout_s)

    still_open = await store.snapshot("svc")
    decision = await store.acquire("svc")

    assert (still_open.state, still_open.retry_after_s, still_open.generation) == (State.OPEN, 0, opened.generation)
    assert (decision.allowed, decision.state, decision.generation) == (True, State.HALF_OPEN, opened.generation + 1)
    assert decision.permit is not None
    assert PERMIT_ID.fullmatch(decision.permit), "at least 64 random bits, nothing derived from the generation"
    history = await store.history("svc")
    assert moves(history)[0] == (State.OPEN, State.HALF_OPEN, "open timeout elapsed", None)
    half_open = await store.snapshot("svc")
    assert (half_open.state, half_open.opened_at, half_open.retry_after_s) == (State.HALF_OPEN, opened.opened_at, None)


async def test_half_open_grants_at_most_half_open_max_calls_permits(kit: StoreKit, store: BreakerStore) -> None:
    first = await half_opened(kit, store, "svc", SHORT_OPEN)

    second = await store.acquire("svc")
    third = await store.acquire("svc")

    assert second.allowed
    assert second.permit not in (None, first.permit)
    assert (third.allowed, third.permit, third.state) == (False, None, State.HALF_OPEN)
    assert third.retry_after_s is not None
    assert 0 < third.retry_after_s <= SHORT_OPEN.permit_ttl_s
    assert (await store.snapshot("svc")).counts.rejected == 1


async def test_a_reported_probe_keeps_its_slot_for_the_half_open_window(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, half_open_max_calls=2, success_threshold=2)
    first = await half_opened(kit, store, "svc", config)

    reported = await store.record("svc", success(permit=first.permit))
    second = await store.acquire("svc")
    third = await store.acquire("svc")

    assert (reported.state, reported.consecutive_successes) == (State.HALF_OPEN, 1)
    assert second.allowed
    assert (third.allowed, third.state) == (False, State.HALF_OPEN), "2 probes per window in total, reported or not"


async def test_permits_are_distinct_and_unguessable(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(BASE, failure_threshold=50)
    await configured(store, "svc", config)

    permits = [(await store.acquire("svc", lease=True)).permit for _ in range(40)]

    assert all(permit is not None and PERMIT_ID.fullmatch(permit) for permit in permits)
    assert len(set(permits)) == 40


async def test_an_expired_probe_permit_frees_its_slot_and_no_longer_counts(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, half_open_max_calls=1, success_threshold=1, permit_ttl_s=0.2)
    first = await half_opened(kit, store, "svc", config)

    await kit.clock.advance(config.permit_ttl_s)
    late = await store.record("svc", success(permit=first.permit))
    second = await store.acquire("svc")

    assert second.allowed
    assert second.permit not in (None, first.permit)
    assert (late.state, late.consecutive_successes) == (State.HALF_OPEN, 0)


async def test_probe_successes_up_to_the_threshold_close_the_breaker(kit: StoreKit, store: BreakerStore) -> None:
    first = await half_opened(kit, store, "svc", SHORT_OPEN)
    second = await store.acquire("svc")

    after_one = await store.record("svc", success(permit=first.permit))
    after_two = await store.record("svc", success(permit=second.permit))

    assert (after_one.state, after_one.consecutive_successes) == (State.HALF_OPEN, 1)
    assert (after_two.state, after_two.opened_at, after_two.consecutive_successes) == (State.CLOSED, None, 0)
    assert after_two.generation == first.generation + 1
    assert moves(await store.history("svc"))[0] == (State.HALF_OPEN, State.CLOSED, "probes succeeded", None)
    assert (await store.acquire("svc")).permit is None


async def test_one_probe_failure_reopens_with_the_backoff_applied(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, open_backoff=100.0)
    probe = await half_opened(kit, store, "svc", config)

    reopened = await store.record("svc", failure(permit=probe.permit))

    assert (reopened.state, reopened.generation) == (State.OPEN, probe.generation + 1)
    assert reopened.retry_after_s is not None
    assert 4.0 < reopened.retry_after_s <= 5.0, "0.05 s x 100"
    assert moves(await store.history("svc"))[0] == (State.HALF_OPEN, State.OPEN, "probe failed", None)


async def test_the_backoff_compounds_over_failed_half_open_rounds(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, open_backoff=10.0)
    first_probe = await half_opened(kit, store, "svc", config)
    await store.record("svc", failure(permit=first_probe.permit))
    await kit.clock.advance(config.open_timeout_s * config.open_backoff)
    second_probe = await store.acquire("svc")

    reopened = await store.record("svc", failure(permit=second_probe.permit))

    assert reopened.retry_after_s is not None
    assert 4.0 < reopened.retry_after_s <= 5.0, "0.05 s x 10^2"


async def test_the_backed_off_open_time_is_capped_by_max_open_timeout(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, open_backoff=100.0, max_open_timeout_s=1.0)
    probe = await half_opened(kit, store, "svc", config)

    reopened = await store.record("svc", failure(permit=probe.permit))

    assert reopened.retry_after_s is not None
    assert 0.5 < reopened.retry_after_s <= 1.0


async def test_closing_through_probes_resets_the_backoff(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, failure_threshold=1, success_threshold=1, open_backoff=4.0)
    probe = await half_opened(kit, store, "svc", config)
    await store.record("svc", failure(permit=probe.permit))
    await kit.clock.advance(config.open_timeout_s * config.open_backoff)
    second_probe = await store.acquire("svc")
    closed = await store.record("svc", success(permit=second_probe.permit))
    assert closed.state is State.CLOSED

    reopened = await store.record("svc", failure())

    assert reopened.state is State.OPEN
    assert reopened.retry_after_s is not None
    assert reopened.retry_after_s <= config.open_timeout_s, "the streak was reset, so no backoff"


@pytest.mark.parametrize("permit", [None, "999-999"])
async def test_half_open_outcomes_without_a_valid_permit_change_nothing_but_counts(
    kit: StoreKit, store: BreakerStore, permit: str | None
) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, success_threshold=1)
    probe = await half_opened(kit, store, "svc", config)

    after_success = await store.record("svc", success(permit=permit))
    after_failure = await store.record("svc", failure(permit=permit))

    for snapshot in (after_success, after_failure):
        assert (snapshot.state, snapshot.generation, snapshot.consecutive_successes) == (
            State.HALF_OPEN,
            probe.generation,
            0,
        )
    assert (after_failure.counts.success, after_failure.counts.failure) == (1, config.failure_threshold + 1)


# -- generation -------------------------------------------------------------------------------------------------


async def test_an_outcome_from_an_older_generation_changes_no_state_but_counts(
    kit: StoreKit, store: BreakerStore
) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, success_threshold=1)
    await configured(store, "svc", config)
    before_trip = await store.acquire("svc")
    await store.record("svc", failure(config.failure_threshold))
    await kit.clock.advance(config.open_timeout_s)
    probe = await store.acquire("svc")
    assert probe.permit is not None

    late = await store.record("svc", failure(permit=probe.permit, generation=before_trip.generation))
    current = await store.record("svc", success(permit=probe.permit, generation=probe.generation))

    assert (late.state, late.generation) == (State.HALF_OPEN, probe.generation)
    assert late.counts.failure == config.failure_threshold + 1
    assert current.state is State.CLOSED, "the stale outcome did not use up the permit"


async def test_an_outcome_from_an_older_generation_in_closed_adds_no_failures(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    snapshot = await store.record("svc", failure(2, generation=0))

    assert (snapshot.consecutive_failures, snapshot.counts.failure) == (0, 2)


async def test_generation_bumps_on_every_transition_force_reset_and_force_expiry(
    kit: StoreKit, store: BreakerStore
) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, failure_threshold=1, success_threshold=1)
    generations = [(await configured(store, "svc", config)).generation]

    generations.append((await store.record("svc", failure())).generation)
    await kit.clock.advance(config.open_timeout_s)
    probe = await store.acquire("svc")
    generations.append(probe.generation)
    generations.append((await store.record("svc", success(permit=probe.permit))).generation)
    generations.append((await store.configure("svc", config, actor="tester", reason="no bump")).generation)
    generations.append((await store.force("svc", State.OPEN, reason="drill", ttl_s=0.1, actor="tester")).generation)
    await kit.clock.advance(0.1)
    generations.append((await store.snapshot("svc")).generation)
    generations.append((await store.reset("svc", reason="clean", actor="tester")).generation)

    assert generations == [1, 2, 3, 4, 4, 5, 6, 7]


# -- rate mode --------------------------------------------------------------------------------------------------

RATE: Final = BreakerConfig(failure_threshold=100, window_s=60.0, min_calls=10, failure_rate=0.5, open_timeout_s=30.0)
SLOW: Final = BreakerConfig(
    failure_threshold=100, window_s=60.0, min_calls=4, slow_call_ms=100.0, slow_call_rate=0.5, open_timeout_s=30.0
)


async def test_the_failure_rate_over_min_calls_opens_the_breaker(store: BreakerStore) -> None:
    await configured(store, "svc", RATE)
    for _ in range(4):
        await store.record("svc", failure())
        await store.record("svc", success())
    below_min_calls = await store.record("svc", failure())
    assert (below_min_calls.state, below_min_calls.counts.failure) == (State.CLOSED, 5), "9 calls < min_calls"

    opened = await store.record("svc", success())

    assert opened.state is State.OPEN, "5 failures in 10 calls reach 50%"
    assert moves(await store.history("svc"))[0] == (State.CLOSED, State.OPEN, "failure rate exceeded", None)


async def test_a_failure_rate_under_the_threshold_stays_closed(store: BreakerStore) -> None:
    await configured(store, "svc", RATE)
    for _ in range(4):
        await store.record("svc", failure())
        await store.record("svc", success())

    snapshot = await store.record("svc", success(2))

    assert snapshot.state is State.CLOSED, "4 failures in 10 calls is under 50%"


async def test_calls_older_than_the_window_no_longer_count(kit: StoreKit, store: BreakerStore) -> None:
    config = BreakerConfig(failure_threshold=100, window_s=0.1, min_calls=4, failure_rate=0.5)
    await configured(store, "svc", config)
    await store.record("svc", failure(3))

    await kit.clock.advance(0.2)
    snapshot = await store.record("svc", success())

    assert snapshot.state is State.CLOSED, "the 3 old failures left the window"


async def test_the_slow_call_rate_opens_the_breaker_and_slow_call_ms_itself_is_slow(store: BreakerStore) -> None:
    await configured(store, "svc", SLOW)
    await store.record("svc", success(duration_ms=100.0))
    await store.record("svc", success(duration_ms=99.0))
    await store.record("svc", success())

    opened = await store.record("svc", success(duration_ms=250.0))

    assert opened.state is State.OPEN
    assert moves(await store.history("svc"))[0] == (State.CLOSED, State.OPEN, "slow call rate exceeded", None)


async def test_fast_calls_and_calls_without_duration_keep_the_slow_rate_low(store: BreakerStore) -> None:
    await configured(store, "svc", SLOW)
    await store.record("svc", success(2))
    await store.record("svc", success(duration_ms=10.0))

    snapshot = await store.record("svc", success(duration_ms=500.0))

    assert snapshot.state is State.CLOSED


# -- force and reset --------------------------------------------------------------------------------------------


async def test_forced_open_denies_everything_and_is_audited(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    forced = await store.force("svc", State.OPEN, reason="maintenance", ttl_s=None, actor="ops")
    decision = await store.acquire("svc")
    after_success = await store.record("svc", success())

    assert (forced.state, forced.machine_state, forced.generation, forced.retry_after_s) == (
        State.OPEN,
        State.CLOSED,
        2,
        None,
    )
    assert forced.forced is State.OPEN
    assert forced.force == Force(mode=State.OPEN, until=None, actor="ops", reason="maintenance")
    assert (decision.allowed, decision.state, decision.retry_after_s) == (False, State.OPEN, None)
    assert (after_success.generation, after_success.counts.success, after_success.counts.rejected) == (2, 1, 1)
    history = await store.history("svc")
    assert moves(history)[0] == (State.CLOSED, State.OPEN, "maintenance", "ops")
    assert history[0].generation == 2


async def test_forced_open_with_a_ttl_answers_the_time_left(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.force("svc", State.OPEN, reason="maintenance", ttl_s=30.0, actor="ops")

    decision = await store.acquire("svc")
    snapshot = await store.snapshot("svc")

    assert decision.retry_after_s is not None
    assert snapshot.retry_after_s is not None
    assert 0 < decision.retry_after_s <= 30.0
    assert 0 < snapshot.retry_after_s <= 30.0


async def test_forced_closed_allows_everything_and_never_trips(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.force("svc", State.CLOSED, reason="trust me", ttl_s=None, actor="ops")

    snapshot = await store.record("svc", failure(500))
    decisions = [await store.acquire("svc") for _ in range(5)]

    assert (snapshot.state, snapshot.forced, snapshot.consecutive_failures) == (State.CLOSED, State.CLOSED, 0)
    assert snapshot.counts.failure == 500
    assert all(d.allowed and d.permit is None and d.state is State.CLOSED for d in decisions)


async def test_force_leaves_a_fresh_closed_breaker_underneath(store: BreakerStore) -> None:
    opened = await tripped(store, "svc", BASE)

    forced = await store.force("svc", State.CLOSED, reason="override", ttl_s=None, actor="ops")

    assert (forced.state, forced.forced, forced.opened_at, forced.consecutive_failures) == (
        State.CLOSED,
        State.CLOSED,
        None,
        0,
    )
    assert forced.generation == opened.generation + 1
    assert moves(await store.history("svc"))[0] == (State.OPEN, State.CLOSED, "override", "ops")


async def test_force_to_the_current_state_is_still_audited_and_bumps_generation(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)

    forced = await store.force("svc", State.CLOSED, reason="pin", ttl_s=None, actor="ops")

    assert forced.generation == 2
    assert moves(await store.history("svc"))[0] == (State.CLOSED, State.CLOSED, "pin", "ops")


async def test_a_force_ttl_running_out_gives_a_fresh_closed_breaker(kit: StoreKit, store: BreakerStore) -> None:
    await tripped(store, "svc", BASE)
    forced = await store.force("svc", State.OPEN, reason="drill", ttl_s=0.1, actor="ops")

    await kit.clock.advance(0.1)
    lifted = await store.snapshot("svc")
    decision = await store.acquire("svc", lease=True)

    assert (lifted.state, lifted.forced, lifted.generation, lifted.retry_after_s) == (
        State.CLOSED,
        None,
        forced.generation + 1,
        None,
    )
    # Fresh means unproven: the first calls are leased against the failure budget.
    assert decision.allowed
    assert decision.permit is not None
    history = await store.history("svc")
    assert moves(history)[0] == (State.OPEN, State.CLOSED, "force expired", None)
    assert history[0].generation == forced.generation + 1


async def test_reset_clears_counts_lifts_the_force_and_is_audited(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    await store.record("svc", failure(2))
    await store.record("svc", success())
    forced = await store.force("svc", State.OPEN, reason="drill", ttl_s=None, actor="ops")
    await store.acquire("svc")

    snapshot = await store.reset("svc", reason="all clear", actor="admin")

    assert (snapshot.state, snapshot.forced, snapshot.generation) == (State.CLOSED, None, forced.generation + 1)
    assert (snapshot.counts.success, snapshot.counts.failure, snapshot.counts.rejected) == (0, 0, 0)
    assert (snapshot.consecutive_failures, snapshot.consecutive_successes) == (0, 0)
    history = await store.history("svc")
    assert moves(history)[0] == (State.OPEN, State.CLOSED, "all clear", "admin")
    assert history[0].generation == snapshot.generation
    assert (await store.acquire("svc")).allowed


async def test_reset_of_an_open_breaker_closes_it(store: BreakerStore) -> None:
    opened = await tripped(store, "svc", BASE)

    snapshot = await store.reset("svc", reason="fixed", actor="admin")

    assert (snapshot.state, snapshot.opened_at, snapshot.generation) == (State.CLOSED, None, opened.generation + 1)
    assert (await store.acquire("svc")).allowed


# -- history and events -----------------------------------------------------------------------------------------


async def test_history_lists_every_transition_newest_first(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, failure_threshold=1, success_threshold=1)
    await configured(store, "svc", config)
    await store.record("svc", failure())
    await kit.clock.advance(config.open_timeout_s)
    probe = await store.acquire("svc")
    await store.record("svc", failure(permit=probe.permit))
    await store.force("svc", State.CLOSED, reason="pin", ttl_s=None, actor="ops")
    await store.reset("svc", reason="unpin", actor="admin")

    history = await store.history("svc")

    assert moves(history) == [
        (State.CLOSED, State.CLOSED, "unpin", "admin"),
        (State.OPEN, State.CLOSED, "pin", "ops"),
        (State.HALF_OPEN, State.OPEN, "probe failed", None),
        (State.OPEN, State.HALF_OPEN, "open timeout elapsed", None),
        (State.CLOSED, State.OPEN, "failure threshold reached", None),
        (State.CLOSED, State.CLOSED, "setup", "tester"),
    ]
    assert [entry.generation for entry in history] == [6, 5, 4, 3, 2, 1]
    assert all(entry.name == "svc" for entry in history)
    assert [entry.at for entry in history] == sorted((entry.at for entry in history), reverse=True)
    assert moves(await store.history("svc", limit=2)) == moves(history)[:2]


async def test_an_events_consumer_gets_failures_and_state_events(store: BreakerStore) -> None:
    await configured(store, "svc", BASE)
    async with subscribed(store) as queue:
        await store.record("svc", failure())
        started = await next_event_for(queue, "svc")
        lease = await store.acquire("svc", lease=True)
        await store.record("svc", success(permit=lease.permit))
        cleared = await next_event_for(queue, "svc")
        await store.record("svc", failure(BASE.failure_threshold))
        tripped_event = await next_event_for(queue, "svc")
        after_trip = await next_event_for(queue, "svc")

    assert started.kind == "failures"
    assert payload(started) == FailureSignal(name="svc", consecutive_failures=1, generation=1)
    assert cleared.kind == "failures"
    assert payload(cleared) == FailureSignal(name="svc", consecutive_failures=0, generation=1)
    assert tripped_event.kind == "state"
    transition = payload(tripped_event)
    assert isinstance(transition, Transition)
    assert (transition.from_state, transition.to_state, transition.generation) == (State.CLOSED, State.OPEN, 2)
    assert transition == (await store.history("svc"))[0], "the event and the history entry are the same"
    assert after_trip.kind == "breaker", "the writer hands out the snapshot it left behind"
    published, read = payload(after_trip), await store.snapshot("svc")
    assert isinstance(published, Snapshot)
    # The time left runs on between the two; everything else is what the script left behind.
    assert msgspec.structs.replace(published, retry_after_s=None) == msgspec.structs.replace(read, retry_after_s=None)


# -- concurrency ------------------------------------------------------------------------------------------------


async def test_many_concurrent_failures_trip_the_breaker_exactly_once(store: BreakerStore) -> None:
    config = msgspec.structs.replace(BASE, failure_threshold=5)
    await configured(store, "svc", config)

    await asyncio.gather(*(store.record("svc", failure()) for _ in range(120)))

    snapshot = await store.snapshot("svc")
    assert (snapshot.state, snapshot.generation, snapshot.counts.failure) == (State.OPEN, 2, 120)
    trips = [entry for entry in await store.history("svc") if entry.to_state is State.OPEN]
    assert len(trips) == 1


async def test_concurrent_acquires_in_half_open_grant_at_most_half_open_max_calls(
    kit: StoreKit, store: BreakerStore
) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, half_open_max_calls=3)
    await tripped(store, "svc", config)
    await kit.clock.advance(config.open_timeout_s)

    decisions = await asyncio.gather(*(store.acquire("svc") for _ in range(25)))

    permits = [d.permit for d in decisions if d.allowed]
    assert len(permits) == 3
    assert len(set(permits)) == 3
    assert None not in permits
    snapshot = await store.snapshot("svc")
    assert (snapshot.state, snapshot.counts.rejected) == (State.HALF_OPEN, 22)
    to_half_open = [entry for entry in await store.history("svc") if entry.to_state is State.HALF_OPEN]
    assert len(to_half_open) == 1


async def test_concurrent_acquires_while_failures_accumulate_respect_the_lease_budget(store: BreakerStore) -> None:
    config = msgspec.structs.replace(BASE, failure_threshold=5)
    await configured(store, "svc", config)
    await store.record("svc", failure())

    decisions = await asyncio.gather(*(store.acquire("svc", lease=True) for _ in range(30)))

    assert sum(d.allowed for d in decisions) == 4, "1 failure + 4 leases reach the threshold of 5"
    assert (await store.snapshot("svc")).counts.rejected == 26


async def test_concurrent_probe_successes_close_the_breaker_exactly_once(kit: StoreKit, store: BreakerStore) -> None:
    config = msgspec.structs.replace(SHORT_OPEN, half_open_max_calls=3, success_threshold=3)
    await tripped(store, "svc", config)
    await kit.clock.advance(config.open_timeout_s)
    probes = await asyncio.gather(*(store.acquire("svc") for _ in range(3)))

    await asyncio.gather(*(store.record("svc", success(permit=probe.permit)) for probe in probes))

    snapshot = await store.snapshot("svc")
    assert (snapshot.state, snapshot.counts.success) == (State.CLOSED, 3)
    closings = [entry for entry in await store.history("svc") if entry.to_state is State.CLOSED and entry.actor is None]
    assert len(closings) == 1
