"""Concurrent script calls sent together, on a real Redis: on the scripts' own pipelined connection
(store/pipeline_redis.py: plain TCP and Unix sockets) and on redis-py's pool (store/batch_redis.py: TLS, Sentinel).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis.asyncio
import trustme

from breaker_client.protocol.models import BreakerConfig, Outcome, State
from breaker_service.errors import StoreUnavailableError
from breaker_service.store import pipeline_redis
from breaker_service.store.batch_redis import ScriptBatcher
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.connection_redis import create_redis
from tests.fixtures.process import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from breaker_service.store.connection_redis import RedisClient
    from tests.fixtures.redis_server import RedisServerFactory


class OpaqueConnection(redis.asyncio.Connection):
    """A connection class the pipeline does not know, as TLS's and Sentinel's: the store keeps redis-py's pool."""


RUNNERS = ("pipelined", "batched")


def client_for(url: str, runner: str, **options: Any) -> redis.asyncio.Redis:
    if runner == "batched":
        options["connection_class"] = OpaqueConnection
    client = create_redis(url, **options)
    assert isinstance(client, redis.asyncio.Redis)
    return client


def store_on(client: RedisClient) -> RedisStore:
    return RedisStore(client, resolve_config=lambda _: BreakerConfig(failure_threshold=1000), max_breakers=100)


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(redis_url: str, redis_client: redis.asyncio.Redis, runner: str) -> AsyncIterator[RedisStore]:
    opened = store_on(client_for(redis_url, runner))
    try:
        await opened.start()
        yield opened
    finally:
        await opened.close()


class CountingSends:
    """Counts the calls each write to Redis carried, to tell that calls really went together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, runner: str) -> None:
        self.sizes: list[int] = []
        if runner == "batched":
            send = ScriptBatcher._send

            async def counted(batcher: ScriptBatcher, batch: list[Any]) -> None:
                self.sizes.append(len(batch))
                await send(batcher, batch)

            monkeypatch.setattr(ScriptBatcher, "_send", counted)
        else:
            flush = pipeline_redis._Connection._flush

            def counted_flush(connection: pipeline_redis._Connection) -> None:
                self.sizes.append(len(connection._outgoing))
                flush(connection)

            monkeypatch.setattr(pipeline_redis._Connection, "_flush", counted_flush)


async def test_concurrent_calls_go_in_one_write_and_each_gets_its_own_answer(
    store: RedisStore, runner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.record("batched", Outcome(outcome="success"))
    sends = CountingSends(monkeypatch, runner)
    outcomes = [Outcome(outcome="success", count=n) for n in range(1, 31)]
    snapshots = await asyncio.gather(*(store.record("batched", outcome) for outcome in outcomes))
    assert sends.sizes == [30]
    # Each script ran once, in call order: the success counts rise by each call's count.
    successes = [snapshot.counts.success for snapshot in snapshots]
    assert successes == [1 + n * (n + 1) // 2 for n in range(1, 31)]
    decisions = await asyncio.gather(*(store.acquire(f"fresh-{n}") for n in range(5)))
    assert all(decision.allowed and decision.state is State.CLOSED for decision in decisions)


async def test_a_batch_after_redis_lost_its_scripts_loads_them_again(
    store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.acquire("flushed")
    await redis_client.script_flush()
    decisions = await asyncio.gather(*(store.acquire("flushed") for _ in range(10)))
    assert all(decision.allowed for decision in decisions)
    assert (await store.snapshot("flushed")).counts.success == 0


async def test_a_caller_that_gives_up_does_not_disturb_the_others(store: RedisStore) -> None:
    await store.acquire("patient")  # exists: each record below is one script call
    calls = [asyncio.ensure_future(store.record("patient", Outcome(outcome="failure"))) for _ in range(6)]
    await asyncio.sleep(0)  # one loop turn: every call is queued in the batch, which is sent on the next turn
    calls[0].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(not isinstance(result, BaseException) for result in results[1:])
    # The cancelled call was already in the batch: its script ran, only its answer was dropped.
    assert (await store.snapshot("patient")).counts.failure == 6


async def test_every_call_of_a_batch_fails_when_redis_is_gone_and_the_next_after_a_restart_succeeds(
    redis_server_factory: RedisServerFactory, runner: str
) -> None:
    server = redis_server_factory()
    store = store_on(client_for(server.url, runner))
    try:
        await store.start()
        await store.acquire("gone")
        server.stop()
        results = await asyncio.gather(*(store.acquire("gone") for _ in range(8)), return_exceptions=True)
        assert all(isinstance(result, StoreUnavailableError) for result in results), results
        server.restart()
        assert (await store.acquire("back")).allowed, "a new connection, the scripts loaded again"
    finally:
        await store.close()


async def test_a_hung_redis_fails_the_waiting_calls_and_answers_the_next_once_it_resumes(
    redis_server_factory: RedisServerFactory, runner: str
) -> None:
    server = redis_server_factory()
    store = store_on(client_for(server.url, runner, timeout_s=0.5))
    try:
        await store.start()
        await store.acquire("hung")
        server.pause()
        try:
            results = await asyncio.gather(
                *(store.record("hung", Outcome(outcome="failure")) for _ in range(4)), return_exceptions=True
            )
        finally:
            server.resume()
        assert all(isinstance(result, StoreUnavailableError) for result in results), results
        # Each write was sent once: whatever Redis ran of what it had received when it resumed, no write twice.
        assert (await store.snapshot("hung")).counts.failure <= 4
    finally:
        await store.close()


async def test_a_caller_that_gives_up_while_the_pipeline_connects_leaves_it_to_the_others(redis_url: str) -> None:
    store = store_on(create_redis(redis_url))
    try:
        await store.start()  # the scripts are loaded through redis-py; the pipeline connects on the first call
        early = asyncio.ensure_future(store.acquire("early"))
        others = [asyncio.ensure_future(store.acquire("early")) for _ in range(3)]
        await asyncio.sleep(0)  # every call is waiting for the one connection attempt
        early.cancel()
        assert all(decision.allowed for decision in await asyncio.gather(*others))
        assert (await store.acquire("early")).allowed
    finally:
        await store.close()


async def test_a_closed_store_makes_no_new_connection(redis_url: str) -> None:
    store = store_on(create_redis(redis_url))
    await store.start()
    await store.acquire("closing")
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.acquire("closing")


async def require_password(url: str, password: str) -> None:
    """Set after start: the server fixture's readiness check does not authenticate."""
    async with redis.asyncio.Redis.from_url(url) as admin:
        await admin.config_set("requirepass", password)


@pytest.mark.parametrize("where", ["tcp", "unix"])
async def test_the_pipeline_authenticates_and_selects_its_database(
    redis_server_factory: RedisServerFactory, tmp_path: Path, where: str
) -> None:
    socket_path = tmp_path / "redis.sock"
    server = redis_server_factory("--unixsocket", str(socket_path))
    await require_password(server.url, "s3cret")
    if where == "unix":
        url = f"unix://{socket_path}?db=3&password=s3cret"
    else:
        url = server.url.replace("redis://", "redis://default:s3cret@").rsplit("/", 1)[0] + "/3"
    client = create_redis(url)
    assert pipeline_redis.pipelined_address(client) is not None, "plain TCP and Unix sockets are taken over"
    store = store_on(client)
    try:
        await store.start()
        await store.acquire("in-db-3")
        assert await store.names() == ["in-db-3"]
        async with redis.asyncio.Redis.from_url(server.url, password="s3cret") as database_0:
            assert await database_0.dbsize() == 0, "every key went to database 3"
    finally:
        await store.close()


async def test_a_wrong_password_is_unavailable_not_a_hang(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    await require_password(server.url, "right")
    loaded = store_on(create_redis(server.url.replace("redis://", "redis://:right@")))
    wrong = store_on(create_redis(server.url.replace("redis://", "redis://:wrong@")))
    try:
        await loaded.start()  # the scripts are in the server's cache: only the pipeline's AUTH can fail
        with pytest.raises(StoreUnavailableError) as caught:
            await wrong.acquire("locked")
        assert "WRONGPASS" in str(caught.value)
    finally:
        await loaded.close()
        await wrong.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:7000/2", pipeline_redis.Address(host="127.0.0.1", port=7000, db=2)),
        ("unix:///run/redis.sock?db=1", pipeline_redis.Address(path="/run/redis.sock", db=1)),
        ("redis+sentinel://127.0.0.1:26379/main", None),
        ("redis://127.0.0.1:7000/0?protocol=3", None),
    ],
)
def test_which_clients_the_pipeline_takes_over(url: str, expected: pipeline_redis.Address | None) -> None:
    client = create_redis(url, timeout_s=2.0)
    found = pipeline_redis.pipelined_address(client)
    if expected is not None:
        expected = msgspec.structs.replace(expected, connect_timeout_s=1.0, reply_timeout_s=2.0)
    assert found == expected


@pytest.fixture
def tls_redis(redis_server_factory: RedisServerFactory, tmp_path: Path) -> tuple[int, Path]:
    """A redis-server that also listens with TLS: its TLS port, and the file of the CA that signed its certificate."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    certificate.cert_chain_pems[0].write_to_path(str(files["cert"]))
    certificate.private_key_pem.write_to_path(str(files["key"]))
    authority.cert_pem.write_to_path(str(files["ca"]))
    tls_port = free_port()
    redis_server_factory(
        *("--tls-port", str(tls_port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(files["cert"]), "--tls-key-file", str(files["key"])),
        *("--tls-ca-cert-file", str(files["ca"])),
    )
    return tls_port, files["ca"]


async def test_the_pipeline_speaks_tls_and_verifies_as_the_client_does(tls_redis: tuple[int, Path]) -> None:
    port, authority = tls_redis
    trusting = create_redis(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={authority}")
    address = pipeline_redis.pipelined_address(trusting)
    assert address is not None
    assert address.tls is not None, "TLS is taken over, with the client's own TLS settings"
    store = store_on(trusting)
    doubting = store_on(create_redis(f"rediss://127.0.0.1:{port}/0"))  # the system's CAs: ours is not among them
    try:
        await store.start()
        assert (await store.acquire("over-tls")).allowed
        assert (await store.record("over-tls", Outcome(outcome="failure"))).counts.failure == 1
        with pytest.raises(StoreUnavailableError) as caught:
            await doubting.acquire("over-tls")  # the scripts are loaded: only the pipeline's handshake can fail
        assert "certificate" in str(caught.value).lower()
    finally:
        await store.close()
        await doubting.close()


def test_error_replies_read_as_redis_py_raises_them() -> None:
    convert: Callable[[str], Exception] = pipeline_redis.reply_error
    assert type(convert("NOSCRIPT No matching script")).__name__ == "NoScriptError"
    assert str(convert("ERR user_script:1: bad input")) == "user_script:1: bad input"
    assert str(convert("WRONGTYPE Operation against a key")) == "WRONGTYPE Operation against a key"
