"""Differential test: the Lua scripts and the Python machine agree step by step on random operation sequences.

The Lua scripts read Redis `TIME`; to run both sides on the same clock the test builds its own copy of the
production sources (`breaker_service.store.scripts_redis.SOURCES`) in which the `TIME` reply is made from the last
ARGV, a virtual "now" in ms, and calls them with `BreakerScripts`' KEYS/ARGV layout plus that argument. The
production scripts and module globals are left alone. The Python side is `BreakerMachine` itself; configure,
which the machine has no method for, follows `MemoryStore.configure`.

After every step the test compares: the operation's answer (Decision or Snapshot, every field), the history
entries the step appended against the machine's transitions, the `brk:events` messages the step published
against the machine's events (plus the `breaker` snapshot after a transition and the `config` event of a
configure), the state hash against the machine's
fields, the permits sorted set against `machine.permits` (and the live count), and the rate window. Messages
are attributed to a step exactly: after each step the test publishes a marker on a channel of its own, and one
subscriber connection receives messages in publication order, so everything before the marker is the step's.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import msgspec
import pytest

from breaker_client.protocol.machine import REPORT_MIN_TTL_MS, WINDOW_BUCKETS, BreakerMachine, Event, new_permit
from breaker_client.protocol.models import BreakerConfig, Decision, FailureSignal, Outcome, Snapshot, State, Transition
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.keys import breaker_keys, history_key, permits_key, report_key, state_key, window_key
from breaker_service.store.scripts_redis import SOURCES, _decision, _snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

SEEDS: Final = 300
CHUNK: Final = 50
STEPS: Final = (30, 60)
T0_MS: Final = 1_700_000_000_000
EVENT_TIMEOUT_S: Final = 5.0
HORIZON_MS: Final = 300_000

# Redis TIME answers {seconds, microseconds} as strings; this stands in for it, built from the last ARGV (ms), so
# whatever the prelude does with the reply it reads the virtual time.
_TIME_CALL: Final = re.compile(rb"""redis\.p?call\(\s*(['"])TIME\1\s*\)""", re.IGNORECASE)
_TIME_LITERAL: Final = re.compile(rb"""(['"])TIME\1""", re.IGNORECASE)
_VIRTUAL_TIME: Final = (
    b"{tostring(math.floor(tonumber(ARGV[#ARGV]) / 1000)), tostring(tonumber(ARGV[#ARGV]) % 1000 * 1000)}"
)


def virtual_clock_source(operation: str, source: bytes) -> bytes:
    """`source` with its `redis.call('TIME')` answered from the last ARGV; fails if the read cannot be found."""
    patched, found = _TIME_CALL.subn(_VIRTUAL_TIME, source)
    left = _TIME_LITERAL.search(patched)
    if found == 0 or left:
        raise AssertionError(
            f"{operation}.lua: cannot put the script on a virtual clock: found {found} redis.call('TIME') to "
            f"replace{' and another TIME read it does not recognise' if left else ''}; the prelude (lua/_lib.lua) "
            "reads the time differently now, so update virtual_clock_source in tests/test_differential.py"
        )
    return patched


class VirtualClockScripts:
    """The breaker scripts on a virtual clock, called with `BreakerScripts`' KEYS/ARGV plus `now_ms` last."""

    def __init__(self, redis: redis.asyncio.Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            operation: redis.register_script(virtual_clock_source(operation, SOURCES[operation]))
            for operation in ("acquire", "record", "snapshot", "configure", "force", "reset")
        }

    async def _run(
        self, operation: str, name: str, now_ms: int, *args: str | bytes, extra_keys: tuple[str, ...] = ()
    ) -> Any:
        keys = (*breaker_keys(name), *extra_keys)
        return await self._scripts[operation](keys=keys, args=(name, EVENTS_CHANNEL, *args, str(now_ms)))

    async def create(self, name: str, config: BreakerConfig, now_ms: int) -> bool:
        return bool(await self._run("configure", name, now_ms, "create", msgspec.json.encode(config)))

    async def update(self, name: str, config: BreakerConfig, actor: str | None, reason: str, now_ms: int) -> Snapshot:
        raw = await self._run("configure", name, now_ms, "update", msgspec.json.encode(config), actor or "", reason)
        return _present(_snapshot(name, raw))

    async def acquire(self, name: str, lease: bool, permit: str, now_ms: int) -> Decision:
        return _present(_decision(await self._run("acquire", name, now_ms, "1" if lease else "", permit)))

    async def record(self, name: str, outcome: Outcome, now_ms: int) -> Snapshot:
        raw = await self._run(
            "record",
            name,
            now_ms,
            outcome.outcome,
            str(outcome.count),
            "" if outcome.duration_ms is None else repr(outcome.duration_ms),
            outcome.permit or "",
            "" if outcome.generation is None else str(outcome.generation),
            "" if outcome.failures_seen is None else str(outcome.failures_seen),
            extra_keys=() if outcome.report_id is None else (report_key(name, outcome.report_id),),
        )
        return _present(_snapshot(name, raw))

    async def force(
        self, name: str, mode: State, reason: str, ttl_s: float | None, actor: str | None, now_ms: int
    ) -> Snapshot:
        ttl_ms = "" if ttl_s is None else str(math.floor(ttl_s * 1000))
        return _present(
            _snapshot(name, await self._run("force", name, now_ms, mode.value, reason, ttl_ms, actor or ""))
        )

    async def reset(self, name: str, reason: str, actor: str | None, now_ms: int) -> Snapshot:
        return _present(_snapshot(name, await self._run("reset", name, now_ms, reason, actor or "")))

    async def snapshot(self, name: str, now_ms: int) -> Snapshot:
        return _present(_snapshot(name, await self._run("snapshot", name, now_ms)))


_T = TypeVar("_T")


def _present(value: _T | None) -> _T:
    assert value is not None, "the script answered that the breaker does not exist"
    return value


# -- events on brk:events --------------------------------------------------------------------------------------

Published: TypeAlias = tuple[str, Transition | FailureSignal | Snapshot]
"""One `brk:events` message: its kind and its decoded data."""


class _Envelope(msgspec.Struct, frozen=True):
    kind: str
    data: msgspec.Raw


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_EVENT_DATA: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "state": msgspec.json.Decoder(Transition),
    "failures": msgspec.json.Decoder(FailureSignal),
    "config": msgspec.json.Decoder(Snapshot),
    "breaker": msgspec.json.Decoder(Snapshot),
}
_TRANSITION: Final = msgspec.json.Decoder(Transition)


class EventTap:
    """One subscriber to `brk:events` and to a marker channel of its own, read in publication order."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        self.marker_channel = f"differential-marker:{uuid.uuid4().hex}"

    async def subscribe(self) -> None:
        """Subscribe to both channels and wait until Redis confirms them."""
        await self._pubsub.subscribe(EVENTS_CHANNEL, self.marker_channel)
        confirmed = 0
        while confirmed < 2:
            message = await self._pubsub.get_message(timeout=EVENT_TIMEOUT_S)
            assert message is not None, "Redis did not confirm the subscriptions"
            confirmed += message["type"] == "subscribe"

    async def until(self, marker: str, name: str) -> list[Published]:
        """The messages about breaker `name` published before `marker` (bounded wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENT_TIMEOUT_S
        found: list[Published] = []
        while (remaining := deadline - loop.time()) > 0:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is None:
                continue
            if message["channel"] == self.marker_channel.encode():
                if message["data"] == marker.encode():
                    return found
                continue
            envelope = _ENVELOPE.decode(message["data"])
            decoder = _EVENT_DATA.get(envelope.kind)
            if decoder is None:
                continue  # a "deleted" or future kind; this test deletes nothing
            data = decoder.decode(envelope.data)
            if data.name == name:
                found.append((envelope.kind, data))
        raise AssertionError(f"marker {marker!r} did not arrive within {EVENT_TIMEOUT_S}s; so far: {found}")


# -- random inputs -----------------------------------------------------------------------------------------------


def random_config(rng: random.Random) -> BreakerConfig:
    """Consecutive, failure-rate or slow-call mode, with timeouts and TTLs of a few ms to a few hundred."""
    open_timeout_s = rng.choice([0.001, 0.01, 0.0333, 0.05, 0.1, 0.25])
    mode = rng.choice(["consecutive", "rate", "slow", "rate+slow"])
    rate: dict[str, Any] = {}
    if mode != "consecutive":
        rate.update(window_s=rng.choice([0.001, 0.01, 0.0123, 0.05, 0.1, 0.5, 2.0]), min_calls=rng.randint(1, 6))
    if "rate" in mode:
        rate.update(failure_rate=rng.choice([0.1, 0.3, 1 / 3, 0.5, 0.6, 1.0]))
    if "slow" in mode:
        rate.update(
            slow_call_ms=rng.choice([1.0, 50.0, 99.5, 100.0]), slow_call_rate=rng.choice([0.25, 0.34, 0.5, 1.0])
        )
    half_open_max_calls = rng.randint(1, 3)
    return BreakerConfig(
        failure_threshold=rng.randint(1, 5),
        open_timeout_s=open_timeout_s,
        success_threshold=rng.randint(1, half_open_max_calls),
        half_open_max_calls=half_open_max_calls,
        permit_ttl_s=rng.choice([0.001, 0.005, 0.02, 0.05, 0.1, 0.3, 1.0]),
        open_backoff=rng.choice([1.0, 1.0, 1.5, 1.7, 2.0, 3.0, 100.0]),
        max_open_timeout_s=open_timeout_s * rng.choice([1.0, 1.5, 3.0, 10.0, 40.0]),
        **rate,
    )


_OPERATIONS: Final = ("acquire", "success", "failure", "rejected", "snapshot", "force", "reset", "configure")
_WEIGHTS: Final = (32, 20, 20, 2, 5, 4, 2, 3)
_PROBING_WEIGHTS: Final = (30, 35, 12, 1, 5, 3, 1, 2)  # HALF_OPEN: let more probe rounds run to the end
_REASONS: Final = ("maintenance", "config updated", "incident 42")
_ACTORS: Final = (None, "ops", "alice@example.com")


# -- what each side holds ------------------------------------------------------------------------------------------


def _number(raw: bytes) -> int | float:
    value = float(raw)
    return int(value) if value.is_integer() else value


def lua_state(raw: dict[bytes, bytes]) -> dict[str, object]:
    """The state hash, decoded."""
    fields: dict[str, object] = {}
    for key, value in raw.items():
        name = key.decode()
        if name == "config":
            fields[name] = msgspec.json.decode(value, type=BreakerConfig)
        elif name in ("state", "forced", "forced_actor", "forced_reason"):
            fields[name] = value.decode()
        else:
            fields[name] = _number(value)
    return fields


def python_state(machine: BreakerMachine) -> dict[str, object]:
    """The machine's fields as the state hash holds them (docs/semantics.md, "Redis layout")."""
    return {
        "state": machine.state.value,
        "forced": "" if machine.forced is None else machine.forced.value,
        "forced_until_ms": machine.forced_until_ms,
        "forced_actor": machine.forced_actor or "",
        "forced_reason": machine.forced_reason,
        "half_open_used": machine.half_open_used,
        "generation": machine.generation,
        "consecutive_failures": machine.consecutive_failures,
        "consecutive_successes": machine.consecutive_successes,
        "opened_at_ms": machine.opened_at_ms,
        "open_until_ms": machine.open_until_ms,
        "open_streak": machine.open_streak,
        "proven": int(machine.proven),
        "success": machine.success,
        "failure": machine.failure,
        "rejected": machine.rejected,
        "permit_seq": machine.permit_seq,
        "config": machine.config,
    }


def lua_window(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in raw.items()}


def python_window(machine: BreakerMachine) -> dict[str, int]:
    """`<bucket>:c|f|s` counters; the script writes a counter only once it is above zero."""
    counters = {}
    for index, bucket in machine.window.items():
        for kind, value in (("c", bucket.calls), ("f", bucket.failures), ("s", bucket.slow)):
            if value:
                counters[f"{index}:{kind}"] = value
    return counters


def _differing(lua: dict[str, object], python: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """The fields that differ (absent reads as None), from each side; two empty dicts when none do."""
    keys = sorted(key for key in lua.keys() | python.keys() if lua.get(key) != python.get(key))
    return {key: lua.get(key) for key in keys}, {key: python.get(key) for key in keys}


def transitions(events: list[Event]) -> list[Transition]:
    return [event for event in events if isinstance(event, Transition)]


def published(events: list[Event], machine: BreakerMachine, now_ms: int) -> list[Published]:
    """The messages a step publishes: its events, then after a transition the snapshot it left behind."""
    messages: list[Published] = [
        ("state", event) if isinstance(event, Transition) else ("failures", event) for event in events
    ]
    if transitions(events):
        messages.append(("breaker", machine.view(now_ms)))
    return messages


# -- one sequence ---------------------------------------------------------------------------------------------------


@dataclass
class Coverage:
    """What the random sequences reached, so a generator that stops reaching it fails loudly."""

    reasons: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)


class Differential:
    """One seed: a random config and 30-60 random steps on both sides, compared after every step."""

    def __init__(
        self, seed: int, redis: redis.asyncio.Redis, lua: VirtualClockScripts, tap: EventTap, coverage: Coverage
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.redis = redis
        self.lua = lua
        self.tap = tap
        self.coverage = coverage
        self.name = f"differential-{seed}"
        self.start_ms = T0_MS + self.rng.randrange(1_000_000)
        self.now_ms = self.start_ms
        self.machine = BreakerMachine(name=self.name, config=random_config(self.rng))
        self.granted: list[tuple[str, int]] = []  # every permit handed out, with the generation it came with
        self.last_report: tuple[str, int] | None = None  # the last report_id sent, and when (virtual ms)
        self.history_seen = b"0-0"
        self.log: list[str] = []
        self.index = 0
        self.operation = ""

    async def run(self) -> None:
        self._begin(f"create config={self.machine.config}")
        assert await self.lua.create(self.name, self.machine.config, self.now_ms), f"seed {self.seed}: name taken"
        await self._compare_storage([], [])
        for index in range(1, self.rng.randint(*STEPS) + 1):
            self.index = index
            await self._step()

    # -- reporting ----------------------------------------------------------------------------------------------

    def _begin(self, operation: str) -> None:
        self.operation = operation
        self.log.append(f"  {self.index:>2} at t0+{self.now_ms - self.start_ms} ms: {operation}")

    def _expect(self, what: str, lua: object, python: object) -> None:
        if lua == python:
            return
        raise AssertionError(
            f"seed {self.seed}, step {self.index}, {self.operation} at t0+{self.now_ms - self.start_ms} ms: "
            f"{what} differs\n  lua:    {lua!r}\n  python: {python!r}\n"
            f"sequence (t0 = {self.start_ms} ms, breaker {self.name!r}):\n" + "\n".join(self.log)
        )

    # -- steps --------------------------------------------------------------------------------------------------

    async def _step(self) -> None:
        self.now_ms += self._advance()
        probing = self.machine.state is State.HALF_OPEN and self.machine.forced is None
        operation = self.rng.choices(_OPERATIONS, _PROBING_WEIGHTS if probing else _WEIGHTS)[0]
        self.coverage.kinds[operation] += 1
        if operation == "acquire":
            await self._acquire()
        elif operation in ("success", "failure"):
            await self._record(self._outcome(operation == "failure"))
        elif operation == "rejected":
            await self._record(
                Outcome(outcome="rejected", count=self.rng.choice([1, 2, 9]), report_id=self._report_id())
            )
        elif operation == "snapshot":
            self._begin("snapshot()")
            snapshot, events = self.machine.snapshot(self.now_ms)
            self._expect("snapshot", await self.lua.snapshot(self.name, self.now_ms), snapshot)
            await self._compare_storage(transitions(events), published(events, self.machine, self.now_ms))
        elif operation == "force":
            await self._force()
        elif operation == "reset":
            reason, actor = self.rng.choice(_REASONS), self.rng.choice(_ACTORS)
            self._begin(f"reset(reason={reason!r}, actor={actor!r})")
            events = self.machine.reset(reason, actor, self.now_ms)
            lua = await self.lua.reset(self.name, reason, actor, self.now_ms)
            self._expect("reset snapshot", lua, self.machine.view(self.now_ms))
            await self._compare_storage(transitions(events), published(events, self.machine, self.now_ms))
        else:
            await self._configure()

    async def _acquire(self) -> None:
        lease, permit = self.rng.random() < 0.7, new_permit()
        self._begin(f"acquire(lease={lease}, permit={permit!r})")
        decision, events = self.machine.acquire(self.now_ms, lease=lease, permit=permit)
        self._expect("decision", await self.lua.acquire(self.name, lease, permit, self.now_ms), decision)
        if decision.permit is not None:
            self.granted.append((decision.permit, decision.generation))
        self.coverage.kinds["allowed" if decision.allowed else "denied"] += 1
        await self._compare_storage(transitions(events), published(events, self.machine, self.now_ms))

    def _outcome(self, failed: bool) -> Outcome:
        rng, machine = self.rng, self.machine
        permit: str | None = None
        generation: int | None = rng.choice([machine.generation, machine.generation, None, machine.generation - 1])
        choice = rng.random()
        live = [(id_, at) for id_, at in self.granted if machine.permits.get(id_, self.now_ms) > self.now_ms]
        if live and choice < 0.5:
            # Half the time a permit the breaker still holds (a probe or a lease being reported)...
            permit, granted_at = rng.choice(live)
            generation = rng.choice([granted_at, granted_at, granted_at, None, machine.generation - 1])
        elif self.granted and choice < 0.75:
            # ...or any one handed out: expired, already reported, or from an older generation.
            permit, granted_at = rng.choice(self.granted)
            generation = rng.choice([granted_at, granted_at, machine.generation, None])
        elif choice < 0.8:
            permit = f"{machine.generation}-{machine.permit_seq + 1}"  # never handed out
        slow_ms = machine.config.slow_call_ms or 100.0
        duration_ms = rng.choice(
            [None, 0.0, slow_ms, slow_ms - 0.01, slow_ms + 0.01, slow_ms / 2, slow_ms * 3, rng.uniform(0, 2 * slow_ms)]
        )
        count = 1 if permit is not None else rng.choice([1, 1, 1, 2, 3, 7])
        seen = rng.choice([None, None, machine.failure, machine.failure, max(0, machine.failure - rng.randint(1, 3))])
        return Outcome(
            outcome="failure" if failed else "success",
            count=count,
            duration_ms=duration_ms,
            permit=permit,
            generation=max(0, generation) if generation is not None else None,
            failures_seen=seen,
            report_id=self._report_id(),
        )

    def _report_id(self) -> str | None:
        """None, a fresh id, or the last one again (a retry) while both sides still remember it: Redis forgets on its
        own clock, so only a repeat within the shortest memory (60 s) is compared."""
        roll = self.rng.random()
        last = self.last_report
        if last is not None and roll < 0.15 and self.now_ms - last[1] < REPORT_MIN_TTL_MS:
            self.coverage.kinds["report repeated"] += 1
            return last[0]
        if roll < 0.5:
            return None
        report_id = f"{self.name}.{self.index}"
        self.last_report = (report_id, self.now_ms)
        return report_id

    async def _record(self, outcome: Outcome) -> None:
        self._begin(f"record({outcome})")
        events = self.machine.record(outcome, self.now_ms)
        lua = await self.lua.record(self.name, outcome, self.now_ms)
        self._expect("record snapshot", lua, self.machine.view(self.now_ms))
        self.coverage.kinds["failure signal"] += sum(isinstance(event, FailureSignal) for event in events)
        await self._compare_storage(transitions(events), published(events, self.machine, self.now_ms))

    async def _force(self) -> None:
        rng = self.rng
        mode = rng.choice([State.OPEN, State.CLOSED])
        ttl_s = rng.choice([None, None, 0.0015, 0.02, 0.05, 0.2, 1.2345])
        reason, actor = rng.choice(_REASONS), rng.choice(_ACTORS)
        self._begin(f"force({mode.value}, reason={reason!r}, ttl_s={ttl_s}, actor={actor!r})")
        events = self.machine.force(mode, reason, ttl_s, actor, self.now_ms)
        lua = await self.lua.force(self.name, mode, reason, ttl_s, actor, self.now_ms)
        self._expect("force snapshot", lua, self.machine.view(self.now_ms))
        await self._compare_storage(transitions(events), published(events, self.machine, self.now_ms))

    async def _configure(self) -> None:
        config = random_config(self.rng)
        reason, actor = self.rng.choice(_REASONS), self.rng.choice(_ACTORS)
        self._begin(f"configure(reason={reason!r}, actor={actor!r}, config={config})")
        # As MemoryStore.configure: replace the config, lift an expired force, audit from = to = effective state.
        machine = self.machine
        machine.config = config
        snapshot, events = machine.snapshot(self.now_ms)
        state = snapshot.effective_state
        audit = Transition(
            name=self.name,
            from_state=state,
            to_state=state,
            at=self.now_ms / 1000,
            reason=reason,
            actor=actor,
            generation=machine.generation,
        )
        lua = await self.lua.update(self.name, config, actor, reason, self.now_ms)
        self._expect("configure snapshot", lua, snapshot)
        await self._compare_storage(
            [*transitions(events), audit], [*published(events, machine, self.now_ms), ("config", snapshot)]
        )

    def _advance(self) -> int:
        """How far the clock moves before a step: 0, a few ms, or to just around a deadline the breaker has."""
        rng, machine = self.rng, self.machine
        roll = rng.random()
        if roll < 0.25:
            return 0
        if roll < 0.4:
            return rng.randint(1, 3)
        config, now = machine.config, self.now_ms
        edges = [*machine.permits.values(), now + math.floor(config.permit_ttl_s * 1000)]
        if machine.state is State.OPEN:
            edges.append(machine.open_until_ms)
        if machine.forced_until_ms:
            edges.append(machine.forced_until_ms)
        if config.window_s is not None:
            bucket_ms = max(1, math.floor(config.window_s * 1000) // WINDOW_BUCKETS)
            edges.append((now // bucket_ms + 1) * bucket_ms)
            edges.extend((index + WINDOW_BUCKETS) * bucket_ms for index in machine.window)
        # A bucket index from an earlier config's bucket size can lie anywhere; keep to the next few minutes.
        edges = [edge for edge in edges if now <= edge <= now + HORIZON_MS]
        if edges and roll < 0.9:
            return max(0, rng.choice(edges) + rng.choice([-1, 0, 0, 1]) - now)
        return rng.randint(0, 2 * math.floor(config.max_open_timeout_s * 1000))

    # -- storage after a step -------------------------------------------------------------------------------------

    async def _compare_storage(self, expected_history: list[Transition], expected_events: list[Published]) -> None:
        marker = f"{self.seed}:{self.index}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(history_key(self.name), min=b"(" + self.history_seen)
        pipe.hgetall(state_key(self.name))
        pipe.zrange(permits_key(self.name), 0, -1, withscores=True)
        pipe.zcount(permits_key(self.name), f"({self.now_ms}", "+inf")
        pipe.hgetall(window_key(self.name))
        pipe.publish(self.tap.marker_channel, marker)
        history, state, permits, live, window, _ = await pipe.execute()
        if history:
            self.history_seen = history[-1][0]
        self._expect(
            "history entries", [_TRANSITION.decode(fields[b"transition"]) for _, fields in history], expected_history
        )
        self._expect("brk:events messages", await self.tap.until(marker, self.name), expected_events)
        self._expect("state hash fields", *_differing(lua_state(state), python_state(self.machine)))
        self._expect("permits", {permit.decode(): int(score) for permit, score in permits}, self.machine.permits)
        self._expect(
            "live permits", live, sum(expires_ms > self.now_ms for expires_ms in self.machine.permits.values())
        )
        self._expect("window", lua_window(window), python_window(self.machine))
        for transition in expected_history:
            self.coverage.reasons[transition.reason] += 1


# -- the tests ------------------------------------------------------------------------------------------------------

AUTOMATIC: Final = (
    "failure threshold reached",
    "failure rate exceeded",
    "slow call rate exceeded",
    "open timeout elapsed",
    "probe failed",
    "probes succeeded",
    "force expired",
)


@pytest.fixture
async def tap(redis_client: redis.asyncio.Redis) -> AsyncIterator[EventTap]:
    pubsub = redis_client.pubsub()
    try:
        events = EventTap(pubsub)
        await events.subscribe()
        yield events
    finally:
        await pubsub.aclose()


async def test_virtual_clock_reaches_the_scripts(redis_client: redis.asyncio.Redis) -> None:
    lua = VirtualClockScripts(redis_client)
    at_ms = 978_307_200_123  # 2001-01-01, far from the server's clock
    assert await lua.create("clock", BreakerConfig(), at_ms)
    forced = await lua.force("clock", State.OPEN, "check", 2.5, None, at_ms)
    assert forced.retry_after_s == 2.5
    assert (await lua.snapshot("clock", at_ms + 1000)).retry_after_s == 1.5
    entries = await redis_client.xrange(history_key("clock"))
    assert entries is not None
    assert [_TRANSITION.decode(fields[b"transition"]).at for _, fields in entries if fields] == [at_ms / 1000]


@pytest.mark.parametrize("first_seed", range(0, SEEDS, CHUNK), ids=lambda first: f"seeds{first}-{first + CHUNK - 1}")
async def test_lua_and_python_machines_agree_on_random_sequences(
    redis_client: redis.asyncio.Redis, tap: EventTap, first_seed: int
) -> None:
    lua = VirtualClockScripts(redis_client)
    coverage = Coverage()
    for seed in range(first_seed, first_seed + CHUNK):
        await Differential(seed, redis_client, lua, tap, coverage).run()
    missing = [reason for reason in AUTOMATIC if not coverage.reasons[reason]]
    assert not missing, f"seeds {first_seed}-{first_seed + CHUNK - 1} never reached {missing}: {coverage}"
    assert coverage.kinds["failure signal"], f"no failure signal reached: {coverage}"
    assert coverage.kinds["denied"], f"no denial reached: {coverage}"
    assert coverage.kinds["report repeated"], f"no report_id sent twice: {coverage}"
