"""The service behind Redis Sentinel: `REDIS_URL=redis+sentinel://host:port/master_name`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx
import pytest
import redis.asyncio

from breaker_service.store.keys import state_key
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.service import CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.fixtures.redis_server import RedisServerFactory
    from tests.fixtures.service import ServiceFactory

MASTER_NAME: Final = "breakers"


class SentinelServer(RedisServer):
    """redis-server in sentinel mode, watching one master; sentinel needs a config file it can rewrite."""

    what = "redis-sentinel"

    def __init__(self, directory: Path, master: RedisServer) -> None:
        super().__init__(directory)
        self._master = master

    def _command(self) -> list[str]:
        self._directory.mkdir(parents=True, exist_ok=True)
        config = self._directory / "sentinel.conf"
        config.write_text(f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self._master.port} 1\n")
        return [self._binary, str(config), "--sentinel", *super()._command()[1:]]


@pytest.fixture
def master(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
def sentinel_url(master: RedisServer, tmp_path: Path) -> Iterator[str]:
    sentinel = SentinelServer(tmp_path / "sentinel", master)
    sentinel.start()
    try:
        yield f"redis+sentinel://127.0.0.1:{sentinel.port}/{MASTER_NAME}"
    finally:
        sentinel.stop()


async def test_the_service_finds_its_master_through_sentinel(
    sentinel_url: str, master: RedisServer, service_factory: ServiceFactory
) -> None:
    service = service_factory(sentinel_url)

    async with httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS) as http:
        await http.post("/breakers/openai/record", json={"outcome": "failure"})
        snapshot = (await http.get("/breakers/openai")).json()
        ready = await http.get("/health/ready")

    assert snapshot["consecutive_failures"] == 1
    assert snapshot["counts"]["failure"] == 1
    assert ready.status_code == 200
    direct = redis.asyncio.Redis.from_url(master.url)
    try:
        assert await direct.exists(state_key("openai")) == 1, "the state lives on the master sentinel named"
    finally:
        await direct.aclose()
