"""An SRE's action over HTTP: a typo is not a new breaker, a write not replicated says so, an evicting Redis is
refused (DESIGN.md v1.1, "An SRE's action is never lost or ignored").

The app in-process on the store its settings name (a real redis-server where they name one), lifespan entered.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from breaker_service.app import EvictionError, create_app
from tests.fixtures.app import ADMIN, CLIENT, assert_error, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis_server import RedisServerFactory

FORCE = {"reason": "incident 42"}


@contextlib.asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the stores `settings` name, started, and a client on it."""
    app = create_app(make_settings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://breaker.test") as client:
            yield client


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    factory: RedisServerFactory = request.getfixturevalue("redis_server_factory")
    return {"redis_url": factory().url}


async def test_forcing_an_unknown_name_is_404_unless_asked_to_create(store_settings: dict[str, Any]) -> None:
    async with serving(**store_settings) as client:
        typo = await client.post("/breakers/open-ai/force-open", json=FORCE, headers=ADMIN)
        assert_error(typo, 404, "ORC_009")
        assert (await client.get("/breakers/open-ai", headers=CLIENT)).status_code == 404, "nothing was created"

        created = await client.post("/breakers/open-ai/force-open?create=true", json=FORCE, headers=ADMIN)
        assert created.status_code == 200, created.text
        assert created.json()["forced"] == "OPEN"
        known = await client.post("/breakers/openai/force-close", json=FORCE, headers=ADMIN)
        assert known.status_code == 200, "a config-file breaker exists already"


async def test_without_auto_create_clients_get_404_and_admins_still_create(store_settings: dict[str, Any]) -> None:
    async with serving(auto_create=False, **store_settings) as client:
        for path, body in (("acquire", {}), ("record", {"outcome": "failure"})):
            refused = await client.post(f"/breakers/brand-new/{path}", json=body, headers=CLIENT)
            assert_error(refused, 404, "ORC_009")
        assert (await client.post("/breakers/openai/acquire", json={}, headers=CLIENT)).json()["allowed"]

        put = await client.put("/breakers/brand-new", json={"failure_threshold": 2}, headers=ADMIN)
        assert put.status_code == 200, put.text
        assert (await client.post("/breakers/brand-new/acquire", json={}, headers=CLIENT)).json()["allowed"]


async def test_an_admin_write_not_confirmed_by_replicas_is_503_applied(
    redis_server_factory: RedisServerFactory,
) -> None:
    # A Redis without replicas: WAIT 1 confirms none.
    url = redis_server_factory().url
    async with serving(redis_url=url, admin_min_replicas=1, store_timeout_s=0.5) as client:
        answer = await client.post("/breakers/openai/force-open", json=FORCE, headers=ADMIN)

        error = assert_error(answer, 503, "ORC_005")
        assert error["details"]["applied"] is True
        assert (await client.get("/breakers/openai", headers=CLIENT)).json()["forced"] == "OPEN", "applied"
        decision = await client.post("/breakers/openai/acquire", json={}, headers=CLIENT)
        assert not decision.json()["allowed"], "client routes do not wait for replicas"


async def test_a_retry_of_a_write_applied_but_not_replicated_is_answered_not_applied_again(
    redis_server_factory: RedisServerFactory,
) -> None:
    url = redis_server_factory().url
    headers = {**ADMIN, "Idempotency-Key": "drill-42"}
    async with serving(redis_url=url, admin_min_replicas=1, store_timeout_s=0.5) as client:
        first = await client.post("/breakers/openai/force-open", json=FORCE, headers=headers)
        assert assert_error(first, 503, "ORC_005")["details"]["applied"] is True
        history = (await client.get("/breakers/openai/history", headers=CLIENT)).json()

        retry = await client.post("/breakers/openai/force-open", json=FORCE, headers=headers)

        assert (retry.status_code, retry.content) == (503, first.content), "the first answer, kept"
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert (await client.get("/breakers/openai/history", headers=CLIENT)).json() == history, "not applied again"


async def test_a_redis_that_may_evict_keys_is_refused_unless_allowed(redis_server_factory: RedisServerFactory) -> None:
    url = redis_server_factory("--maxmemory-policy", "allkeys-lru").url
    with pytest.raises(EvictionError, match="allkeys-lru"):
        async with serving(redis_url=url):
            pass
    async with serving(redis_url=url, allow_eviction=True) as client:
        assert (await client.get("/health/ready")).status_code == 200


async def test_a_replica_that_never_reached_redis_is_not_ready_and_refuses(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    server.stop()
    async with serving(redis_url=server.url) as client:
        assert (await client.get("/health/ready")).status_code == 503
        for method, path, body, headers in (
            ("POST", "/breakers/openai/acquire", {}, CLIENT),
            ("POST", "/breakers/openai/record", {"outcome": "success"}, CLIENT),
            ("POST", "/breakers/openai/force-open", FORCE, ADMIN),
        ):
            answer = await client.request(method, path, json=body, headers=headers)
            assert_error(answer, 503, "ORC_005")
        server.start()
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.post("/breakers/openai/acquire", json={}, headers=CLIENT)).json()["allowed"]
