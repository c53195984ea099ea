"""`/health`, `/health/ready` and `/health/dependencies`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from breaker_client.protocol.models import BreakerConfig
from breaker_service.store.breaker_memory import MemoryStore
from tests.fixtures.app import ADMIN, CLIENT, SEED_BREAKERS, assert_error, make_settings, running_app

if TYPE_CHECKING:
    import httpx

    from tests.fixtures.redis_server import RedisServerFactory


class UnreachableStore(MemoryStore):
    """A memory store whose ping fails, as an unreachable shared store's would."""

    async def ping(self) -> bool:
        return False


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["protocol"] == "1.1"


async def test_ready_while_the_store_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["store"] == "memory"


async def test_not_ready_while_the_store_is_unreachable() -> None:
    settings = make_settings()
    async with running_app(settings, UnreachableStore(resolve_config=lambda _: BreakerConfig())) as (_, client):
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health/dependencies", headers=CLIENT)).json()["redis"] is False


async def test_not_ready_when_redis_goes_away(redis_server_factory: RedisServerFactory) -> None:
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.connection_redis import create_redis

    server = redis_server_factory()
    store = RedisStore(create_redis(server.url), resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store) as (_, client):
        assert (await client.get("/health/ready")).status_code == 200
        server.kill()
        assert (await client.get("/health/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 200


async def test_dependencies_in_the_seed_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/dependencies", headers=CLIENT)
    assert response.status_code == 200
    assert response.json() == {**dict.fromkeys(SEED_BREAKERS, True), "redis": True}


async def test_an_open_breaker_is_unhealthy_forced_or_not(client: httpx.AsyncClient) -> None:
    await client.post("/breakers/openai/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)
    await client.post("/breakers/supabase/force-open?create=true", json={"reason": "drill"}, headers=ADMIN)
    await client.post("/breakers/undeclared/force-open?create=true", json={"reason": "not listed"}, headers=ADMIN)
    body = (await client.get("/health/dependencies", headers=CLIENT)).json()
    assert body == {**dict.fromkeys(SEED_BREAKERS, True), "openai": False, "supabase": False, "redis": True}


async def test_a_forced_closed_breaker_is_healthy(client: httpx.AsyncClient) -> None:
    await client.post("/breakers/openai/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)
    await client.post("/breakers/openai/force-close?create=true", json={"reason": "override"}, headers=ADMIN)
    assert (await client.get("/health/dependencies", headers=CLIENT)).json()["openai"] is True


async def test_dependencies_need_the_reader_role(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/health/dependencies"), 401, "ORC_007")


async def test_dependencies_in_detail(any_client: httpx.AsyncClient) -> None:
    await any_client.post(
        "/breakers/openai/force-open?create=true", json={"reason": "provider incident"}, headers=ADMIN
    )
    history = (await any_client.get("/breakers/openai/history", headers=CLIENT)).json()["transitions"]
    response = await any_client.get("/health/dependencies", params={"detail": "true"}, headers=CLIENT)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"dependencies", "degradation", "degradation_change"}
    assert list(body["dependencies"]) == [*SEED_BREAKERS, "redis"]
    openai = body["dependencies"]["openai"]
    assert openai == {
        "healthy": False,
        "state": "OPEN",
        "forced": "OPEN",
        "last_change": history[0]["at"],
        "probe": None,
    }
    assert body["dependencies"]["supabase"] == {
        "healthy": True,
        "state": "CLOSED",
        "forced": None,
        "last_change": None,
        "probe": None,
    }
    store = body["dependencies"]["redis"]
    assert (store["healthy"], store["state"], store["probe"]["ok"], store["probe"]["error"]) == (True, None, True, None)
    assert body["degradation"]["mode"] == "PARTIAL"
    assert body["degradation_change"] is None
    plain = (await any_client.get("/health/dependencies", params={"detail": "false"}, headers=CLIENT)).json()
    assert plain == {**dict.fromkeys(SEED_BREAKERS, True), "openai": False, "redis": True}


async def test_a_tripped_breaker_changes_last_change_to_its_opening(any_client: httpx.AsyncClient) -> None:
    await any_client.post("/breakers/sms_agent/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)
    snapshot = (await any_client.get("/breakers/sms_agent", headers=CLIENT)).json()
    detail = (await any_client.get("/health/dependencies?detail=true", headers=CLIENT)).json()
    assert detail["dependencies"]["sms_agent"]["last_change"] == snapshot["opened_at"]


@pytest.mark.parametrize("value", ["maybe", "", "2"])
async def test_a_bad_detail_value_is_refused(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/health/dependencies", params={"detail": value}, headers=CLIENT)
    error = assert_error(response, 422, "ORC_001")
    assert error["details"] == {"location": "query", "path": "detail"}


async def test_an_unreachable_store_in_detail() -> None:
    async with running_app(make_settings(), UnreachableStore(resolve_config=lambda _: BreakerConfig())) as (_, client):
        body = (await client.get("/health/dependencies?detail=true", headers=CLIENT)).json()
        store = body["dependencies"]["redis"]
        assert (store["healthy"], store["probe"]["ok"]) == (False, False)
        assert store["probe"]["error"] == "the store does not answer PING"
        assert body["degradation"]["mode"] == "READ_ONLY"
