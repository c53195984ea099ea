"""Degradation modes: derived from dependency health, forced by an admin (with ttl), shared and published fleet-wide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from breaker_client.protocol.models import BreakerConfig
from breaker_service.config import ConfigResolver, load_config
from breaker_service.degradation import Mode, derive_mode
from breaker_service.store.breaker_memory import MemoryStore
from breaker_service.store.keys import MODE_FORCED_KEY
from tests._clock import T0_MS, ManualClock
from tests._waiting import wait_until
from tests.fixtures.app import ADMIN, CLIENT, SEED_BREAKERS, assert_error, make_settings, running_app
from tests.test_events import EventStreamCall, parse
from tests.test_health import UnreachableStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    import redis.asyncio
    from starlette.applications import Starlette

T0_S: Final = T0_MS / 1000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def timed(clock: ManualClock) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app on a memory store whose clock moves only when the test moves it."""
    store = MemoryStore(resolve_config=ConfigResolver(load_config()), clock=clock)
    async with running_app(make_settings(), store) as started:
        yield started


async def mode_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/degradation", headers=CLIENT)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert set(answer) == {"mode", "reason", "since", "forced"}
    return answer


async def force(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.put("/degradation", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def trip(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post(f"/breakers/{name}/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)
    assert response.json()["state"] == "OPEN"


async def next_mode_event(call: EventStreamCall) -> dict[str, Any]:
    """The data of the stream's next `mode` event (other events are skipped)."""
    while True:
        frame = await call.next_frame()
        assert frame, "the stream ended"
        fields = parse(frame)
        if fields.get("event") == "mode":
            data: dict[str, Any] = msgspec.json.decode(fields["data"])
            return data


# -- the rules ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unhealthy", "declared", "reachable", "mode"),
    [
        ([], 5, True, Mode.NORMAL),
        ([], 0, True, Mode.NORMAL),
        (["openai"], 5, True, Mode.PARTIAL),
        (["a", "b", "c", "d"], 5, True, Mode.PARTIAL),
        (["a", "b", "c", "d", "e"], 5, True, Mode.OFFLINE),
        ([], 5, False, Mode.READ_ONLY),
        (["a", "b", "c", "d", "e"], 5, False, Mode.READ_ONLY),
    ],
)
def test_derived_modes(unhealthy: list[str], declared: int, reachable: bool, mode: Mode) -> None:
    assert derive_mode(unhealthy, declared, store_reachable=reachable)[0] is mode


def test_emergency_is_never_derived() -> None:
    cases = [(u, d, r) for u in ([], ["a"], ["a", "b"]) for d in (0, 1, 2, 5) for r in (True, False) if len(u) <= d]
    assert all(derive_mode(u, d, store_reachable=r)[0] is not Mode.EMERGENCY for u, d, r in cases)


# -- derived --------------------------------------------------------------------------------------------------------


async def test_the_mode_follows_dependency_health(
    timed: tuple[Starlette, httpx.AsyncClient], clock: ManualClock
) -> None:
    _, client = timed
    assert await mode_of(client) == {
        "mode": "NORMAL",
        "reason": "every dependency is healthy",
        "since": T0_S,
        "forced": False,
    }
    clock.advance(1)
    await trip(client, "openai")
    assert await mode_of(client) == {
        "mode": "PARTIAL",
        "reason": "unhealthy: openai",
        "since": T0_S + 1,
        "forced": False,
    }
    clock.advance(1)
    for name in SEED_BREAKERS:
        await client.post(f"/breakers/{name}/force-open?create=true", json={"reason": "drill"}, headers=ADMIN)
    offline = await mode_of(client)
    assert (offline["mode"], offline["since"]) == ("OFFLINE", T0_S + 2)
    assert offline["reason"] == f"every dependency is unhealthy: {', '.join(SEED_BREAKERS)}"
    for name in SEED_BREAKERS:
        await client.post(f"/breakers/{name}/reset", json={"reason": "over"}, headers=ADMIN)
    assert (await mode_of(client))["mode"] == "NORMAL"


async def test_a_replica_that_cannot_reach_the_store_is_read_only() -> None:
    async with running_app(make_settings(), UnreachableStore(resolve_config=lambda _: BreakerConfig())) as (_, client):
        state = await mode_of(client)
        assert (state["mode"], state["forced"]) == ("READ_ONLY", False)
        response = await client.put("/degradation", json={"mode": "EMERGENCY", "reason": "r"}, headers=ADMIN)
        assert_error(response, 503, "ORC_005")
        assert (await mode_of(client))["mode"] == "READ_ONLY"


# -- forced ---------------------------------------------------------------------------------------------------------


async def test_a_forced_mode_wins_until_its_ttl_runs_out(
    timed: tuple[Starlette, httpx.AsyncClient], clock: ManualClock
) -> None:
    _, client = timed
    forced = await force(client, {"mode": "EMERGENCY", "reason": "data-centre drill", "ttl_s": 60})
    assert forced == {"mode": "EMERGENCY", "reason": "data-centre drill", "since": T0_S, "forced": True}
    await trip(client, "openai")
    assert await mode_of(client) == forced
    clock.advance(59.9)
    assert await mode_of(client) == forced
    clock.advance(0.1)
    assert await mode_of(client) == {
        "mode": "PARTIAL",
        "reason": "unhealthy: openai",
        "since": T0_S + 60,
        "forced": False,
    }


async def test_mode_null_lifts_the_override_and_the_change_is_kept(
    timed: tuple[Starlette, httpx.AsyncClient], clock: ManualClock
) -> None:
    _, client = timed
    await force(client, {"mode": "NORMAL", "reason": "ignore the flapping probe"})
    assert (await mode_of(client))["forced"] is True
    clock.advance(5)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        lifted = await force(client, {"mode": None})
    assert lifted == {"mode": "NORMAL", "reason": "every dependency is healthy", "since": T0_S + 5, "forced": False}
    audit = [entry for entry in logs if entry["event"] == "request"]  # an admin action's one line
    assert [(e["forced"], e["reason"], e["actor"]) for e in audit] == [("none", "override lifted", "test-admin")]
    detail = (await client.get("/health/dependencies?detail=true", headers=CLIENT)).json()
    change = {"mode": None, "reason": "override lifted", "actor": "test-admin", "at": T0_S + 5, "ttl_s": None}
    assert detail["degradation_change"] == change


async def test_every_mode_may_be_forced(any_client: httpx.AsyncClient) -> None:
    for mode in Mode:
        answer = await force(any_client, {"mode": mode.value, "reason": f"test {mode.value}", "ttl_s": 600})
        assert (answer["mode"], answer["reason"], answer["forced"]) == (mode.value, f"test {mode.value}", True)
        assert await mode_of(any_client) == answer


async def test_a_forced_ttl_runs_out_in_redis_time(any_app: Starlette, any_client: httpx.AsyncClient) -> None:
    await force(any_client, {"mode": "OFFLINE", "reason": "short drill", "ttl_s": 0.2})

    async def lifted() -> bool:
        return (await mode_of(any_client))["forced"] is False

    await wait_until(lifted, "the override's ttl to run out")
    assert (await mode_of(any_client))["mode"] == "NORMAL"


async def test_the_override_key_expires_in_redis(redis_client: redis.asyncio.Redis, redis_url: str) -> None:
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.connection_redis import create_redis

    store = RedisStore(create_redis(redis_url), resolve_config=ConfigResolver(load_config()))
    async with running_app(make_settings(), store) as (_, client):
        await force(client, {"mode": "EMERGENCY", "reason": "r", "ttl_s": 30})
        assert 0 < await redis_client.pttl(MODE_FORCED_KEY) <= 30_000
        await force(client, {"mode": "EMERGENCY", "reason": "r"})
        assert await redis_client.pttl(MODE_FORCED_KEY) == -1, "no ttl: forced until lifted"
        await force(client, {"mode": None, "reason": "done"})
        assert not await redis_client.exists(MODE_FORCED_KEY)


# -- bad input and auth: the contract's error, nothing changed --------------------------------------------------------

BAD_BODIES: Final[list[tuple[bytes, int]]] = [
    (b"{", 400),
    (b"{}", 422),
    (b"[]", 422),
    (b'{"mode": "PANIC", "reason": "r"}', 422),
    (b'{"mode": "emergency", "reason": "r"}', 422),
    (b'{"mode": "EMERGENCY"}', 422),
    (b'{"mode": "EMERGENCY", "reason": ""}', 422),
    (b'{"mode": "EMERGENCY", "reason": "' + b"x" * 501 + b'"}', 422),
    (b'{"mode": "EMERGENCY", "reason": "r", "ttl_s": 0}', 422),
    (b'{"mode": "EMERGENCY", "reason": "r", "ttl_s": -5}', 422),
    (b'{"mode": "EMERGENCY", "reason": "r", "ttl_s": "soon"}', 422),
    (b'{"mode": null, "ttl_s": 5}', 422),
    (b'{"mode": "EMERGENCY", "reason": "r", "until": 5}', 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
async def test_a_bad_put_is_refused_and_changes_nothing(
    any_client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    before = await mode_of(any_client)
    assert_error(await any_client.put("/degradation", content=body, headers=ADMIN), status, "ORC_001")
    assert await mode_of(any_client) == before


async def test_put_needs_the_admin_role_and_get_the_reader_role(any_client: httpx.AsyncClient) -> None:
    before = await mode_of(any_client)
    body = {"mode": "EMERGENCY", "reason": "r"}
    assert_error(await any_client.put("/degradation", json=body), 401, "ORC_007")
    assert_error(await any_client.put("/degradation", json=body, headers=CLIENT), 403, "ORC_008")
    assert_error(await any_client.get("/degradation"), 401, "ORC_007")
    assert await mode_of(any_client) == before


# -- mode events ------------------------------------------------------------------------------------------------------


async def test_mode_changes_are_mode_events(any_app: Starlette, any_client: httpx.AsyncClient) -> None:
    call = EventStreamCall(any_app, CLIENT)
    call.start()
    assert parse(await call.next_frame())["event"] == "snapshot"
    await trip(any_client, "openai")
    derived = await next_mode_event(call)
    assert (derived["mode"], derived["reason"], derived["forced"]) == ("PARTIAL", "unhealthy: openai", False)
    forced = await force(any_client, {"mode": "EMERGENCY", "reason": "all hands"})
    assert await next_mode_event(call) == forced
    call.disconnect()
    assert call.task is not None
    await call.task


async def test_a_change_on_one_replica_is_one_event_on_every_replica(
    redis_client: redis.asyncio.Redis, redis_url: str
) -> None:
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.connection_redis import create_redis

    def store() -> RedisStore:
        return RedisStore(create_redis(redis_url), resolve_config=ConfigResolver(load_config()))

    settings = make_settings()
    async with running_app(settings, store()) as (_, first), running_app(settings, store()) as (second_app, second):
        call = EventStreamCall(second_app, CLIENT)
        call.start()
        assert parse(await call.next_frame())["event"] == "snapshot"
        forced = await force(first, {"mode": "EMERGENCY", "reason": "from the first replica"})
        assert await next_mode_event(call) == forced
        assert await mode_of(second) == forced
        lifted = await force(first, {"mode": None})
        assert await next_mode_event(call) == lifted, "the second replica's own settles add no event"
        call.disconnect()
        assert call.task is not None
        await call.task
