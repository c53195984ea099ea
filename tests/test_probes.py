"""Active probes: pass, fail and time out against loopback servers; one probe per interval for a whole fleet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from breaker_service.config import ConfigError, ConfigResolver, load_config, parse_config
from breaker_service.probes import Prober, probe
from breaker_service.store.breaker_memory import MemoryStore
from breaker_service.store.keys import probe_key, probe_lease_key
from breaker_service.store.status_memory import MemoryStatusStore
from tests._clock import ManualClock
from tests._waiting import wait_until
from tests.fixtures.app import CLIENT, make_settings, running_app
from tests.fixtures.dependency import Mode, running_dependency
from tests.fixtures.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import redis.asyncio

    from breaker_service.store.status_base import StatusStore
    from tests.fixtures.dependency import Dependency
    from tests.fixtures.redis_server import RedisServerFactory


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def prober(url: str, status: StatusStore, http: httpx.AsyncClient, *, interval_s: float = 60.0) -> Prober:
    return Prober({"svc": url}, status, http=http, interval_s=interval_s, timeout_s=1.0)


def write_config(tmp_path: Path, probe_urls: dict[str, str], *, interval_s: float = 60.0) -> Path:
    """A config file declaring `search` (no probe) and a breaker per probe URL."""
    lines = ["[defaults]", f"probe_interval_s = {interval_s}", "probe_timeout_s = 1.0", "", "[breakers.search]"]
    for name, url in probe_urls.items():
        lines += ["", f"[breakers.{name}]", f'probe_url = "{url}"']
    path = tmp_path / "breakers.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def dependencies(client: httpx.AsyncClient, *, detail: bool = False) -> dict[str, Any]:
    response = await client.get("/health/dependencies", params={"detail": "true"} if detail else {}, headers=CLIENT)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- one probe ------------------------------------------------------------------------------------------------------


async def test_a_2xx_answer_passes(dependency: Dependency, http: httpx.AsyncClient) -> None:
    result = await probe(http, f"{dependency.url}/health", timeout_s=1.0)
    assert (result.ok, result.error) == (True, None)
    assert result.latency_ms >= 0
    assert dependency.hits == 1


async def test_an_error_status_fails(dependency: Dependency, http: httpx.AsyncClient) -> None:
    dependency.set_mode(Mode.DEAD)
    result = await probe(http, f"{dependency.url}/health", timeout_s=1.0)
    assert (result.ok, result.error) == (False, "HTTP 503")


async def test_a_slow_answer_times_out(http: httpx.AsyncClient) -> None:
    with running_dependency(mode=Mode.SLOW, slow_s=10.0) as slow:
        result = await probe(http, f"{slow.url}/health", timeout_s=0.05)
        slow.release()
    assert (result.ok, result.error) == (False, "timed out after 0.05s")


async def test_a_refused_connection_fails(http: httpx.AsyncClient) -> None:
    result = await probe(http, f"http://127.0.0.1:{free_port()}/health", timeout_s=1.0)
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("ConnectError")


# -- claims and the cache -------------------------------------------------------------------------------------------


async def test_the_memory_store_grants_one_probe_per_interval(dependency: Dependency, http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    svc = prober(dependency.url, MemoryStatusStore(clock=clock, publish=lambda _: None), http, interval_s=10.0)
    await svc.round()
    await svc.round()
    assert dependency.hits == 1
    assert (await svc.results())["svc"].ok
    clock.advance(10.0)
    await svc.round()
    assert dependency.hits == 2
    clock.advance(30.0)
    assert await svc.results() == {}, "a result expires after three intervals"


async def test_replicas_on_one_redis_probe_once_per_interval(
    redis_url: str, redis_client: redis.asyncio.Redis, dependency: Dependency, http: httpx.AsyncClient
) -> None:
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.status_redis import RedisStatusStore

    first_redis, second_redis = create_redis(redis_url), create_redis(redis_url)
    # An interval far longer than the rounds take on a busy machine; the test ends the lease itself.
    first = prober(dependency.url, RedisStatusStore(first_redis), http, interval_s=60.0)
    second = prober(dependency.url, RedisStatusStore(second_redis), http, interval_s=60.0)
    try:
        for replica in (first, second, first, second):
            await replica.round()
        assert dependency.hits == 1
        assert (await first.results())["svc"] == (await second.results())["svc"]
        assert 0 < await redis_client.pttl(probe_key("svc")) <= 180_000, "a result lives three intervals"
        assert 0 < await redis_client.pttl(probe_lease_key("svc")) <= 60_000, "the lease lives one interval"

        await redis_client.delete(probe_lease_key("svc"))  # the interval has passed
        for replica in (second, first, second):
            await replica.round()
        assert dependency.hits == 2
    finally:
        await first_redis.aclose()
        await second_redis.aclose()


async def test_without_the_store_a_replica_probes_on_its_own(
    redis_server_factory: RedisServerFactory, dependency: Dependency, http: httpx.AsyncClient
) -> None:
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.status_redis import RedisStatusStore

    server = redis_server_factory()
    client = create_redis(server.url)
    server.kill()
    try:
        alone = prober(dependency.url, RedisStatusStore(client), http)
        await alone.round()
        await alone.round()
        assert dependency.hits == 1, "at most one probe per interval, by this replica's clock"
        assert (await alone.results())["svc"].ok
    finally:
        await client.aclose()


# -- in the app -----------------------------------------------------------------------------------------------------


async def test_two_apps_on_one_redis_probe_once(
    tmp_path: Path, redis_url: str, redis_client: redis.asyncio.Redis, dependency: Dependency
) -> None:
    from breaker_service.store.breaker_redis import RedisStore
    from breaker_service.store.connection_redis import create_redis

    path = write_config(tmp_path, {"payments": f"{dependency.url}/health"})
    settings = make_settings(config_path=str(path))
    resolve = ConfigResolver(load_config(path))
    first_store = RedisStore(create_redis(redis_url), resolve_config=resolve)
    second_store = RedisStore(create_redis(redis_url), resolve_config=resolve)
    async with running_app(settings, first_store) as (_, first), running_app(settings, second_store) as (_, second):
        for client in (first, second):

            async def probed(client: httpx.AsyncClient = client) -> bool:
                return (await dependencies(client, detail=True))["dependencies"]["payments"]["probe"] is not None

            await wait_until(probed, "the probe result on both replicas")
        assert (
            await dependencies(first) == await dependencies(second) == {"payments": True, "search": True, "redis": True}
        )
    assert dependency.hits == 1


async def test_a_failing_probe_makes_its_dependency_unhealthy(tmp_path: Path, dependency: Dependency) -> None:
    dependency.set_mode(Mode.DEAD)
    path = write_config(tmp_path, {"payments": f"{dependency.url}/health"})
    store = MemoryStore(resolve_config=ConfigResolver(load_config(path)))
    async with running_app(make_settings(config_path=str(path)), store) as (_, client):

        async def payments_unhealthy() -> bool:
            return (await dependencies(client))["payments"] is False

        await wait_until(payments_unhealthy, "the failed probe to count")
        assert await dependencies(client) == {"payments": False, "search": True, "redis": True}
        detail = await dependencies(client, detail=True)
        payments = detail["dependencies"]["payments"]
        assert (payments["healthy"], payments["state"], payments["forced"]) == (False, "CLOSED", None)
        assert (payments["probe"]["ok"], payments["probe"]["error"]) == (False, "HTTP 503")
        assert detail["dependencies"]["search"]["probe"] is None
        assert (detail["degradation"]["mode"], detail["degradation"]["reason"]) == ("PARTIAL", "unhealthy: payments")


# -- config ---------------------------------------------------------------------------------------------------------


def test_probe_timing_comes_from_the_defaults_table() -> None:
    config = parse_config("[defaults]\nprobe_interval_s = 5\nprobe_timeout_s = 0.5\n", source="p.toml")
    assert (config.probes.probe_interval_s, config.probes.probe_timeout_s) == (5.0, 0.5)
    bundled = load_config().probes
    assert (bundled.probe_interval_s, bundled.probe_timeout_s) == (10.0, 2.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[defaults]\nprobe_interval_s = 1\nprobe_timeout_s = 2", "probe_timeout_s must not exceed probe_interval_s"),
        ("[defaults]\nprobe_interval_s = 0", "Expected `float` > 0.0"),
        ("[breakers.a]\nprobe_interval_s = 5", "[breakers.a]: Object contains unknown field `probe_interval_s`"),
        ("[breakers.a]\nprobe_url = 'ftp://a.example/health'", "[breakers.a]: Expected `str` matching regex"),
    ],
)
def test_bad_probe_settings_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, source="p.toml")
    assert fragment in str(raised.value)
