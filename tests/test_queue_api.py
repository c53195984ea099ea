"""The `/queues` routes over HTTP, on the memory store and on Redis: answers, auth, and bad input refused with the
contract's error and the queue untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import pytest

from breaker_client.protocol.models import BreakerConfig
from breaker_service.config import QueueConfig, ServiceConfig
from breaker_service.store.queue_base import QueueLimits
from breaker_service.store.queue_memory import MemoryQueueStore
from tests.fixtures.app import ADMIN, CLIENT, MAX_BODY_BYTES, assert_error, make_settings, memory_store, running_app
from tests.fixtures.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from breaker_service.store.queue_base import QueueStore

Q: Final = "sms_outbox"
DECLARED: Final = "declared_outbox"
UNKNOWN: Final = "never-used"
BAD_NAMES: Final = ("a" * 129, "bad%20name", "-leading-dash", ".dot", "semi;colon")
ROUTES: Final = [
    ("POST", "/jobs", b'{"payload": 1}'),
    ("POST", "/claim", b'{"consumer": "w"}'),
    ("POST", "/ack", b'{"ids": ["1-0"]}'),
    ("POST", "/nack", b'{"ids": ["1-0"]}'),
    ("GET", "", None),
]


async def queue_store(url: str | None) -> QueueStore:
    """Memory queues, or Redis queues on a flushed database; `DECLARED` allows two attempts."""
    limits = QueueLimits({DECLARED: 2})
    if url is None:
        return MemoryQueueStore(max_attempts=limits)
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.queue_redis import RedisQueueStore

    redis = create_redis(url)
    await redis.flushdb()
    return RedisQueueStore(redis, max_attempts=limits, owns_client=True)


@pytest.fixture
async def client(store_url: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """An app on memory queues, then on Redis queues (flushed); the config file declares `DECLARED`."""
    settings = make_settings()
    queues = await queue_store(store_url)
    config = ServiceConfig(
        source="queue tests", defaults=BreakerConfig(), queues={DECLARED: QueueConfig(max_attempts=2)}
    )
    async with running_app(settings, memory_store(settings), queues=queues, config=config) as (_, http):
        yield http


async def post(client: httpx.AsyncClient, path: str, body: Any) -> Any:
    response = await client.post(f"/queues/{Q}{path}", json=body, headers=CLIENT)
    assert response.status_code in (200, 202), response.text
    return response.json()


async def stats(client: httpx.AsyncClient, name: str = Q) -> Any:
    response = await client.get(f"/queues/{name}", headers=CLIENT)
    assert response.status_code == 200, response.text
    return response.json()


# -- the happy paths ----------------------------------------------------------------------------------------------


async def test_enqueue_claim_ack_round_trip(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/queues/{Q}/jobs", content=b'{"payload": {"to": "+1",  "n": 1.50}}', headers=CLIENT)
    assert response.status_code == 202
    queued = response.json()
    assert set(queued) == {"id", "duplicate"}
    assert queued["duplicate"] is False
    assert await stats(client) == {"ready": 1, "pending": 0, "dead": 0, "delayed": 0}

    claim = await client.post(f"/queues/{Q}/claim", json={"consumer": "w1", "max": 5, "lease_s": 30}, headers=CLIENT)

    assert claim.status_code == 200
    # The payload comes back byte for byte as it was sent.
    assert b'"payload":{"to": "+1",  "n": 1.50}' in claim.content
    assert claim.json() == {"jobs": [{"id": queued["id"], "payload": {"to": "+1", "n": 1.5}, "attempts": 1}]}
    assert await stats(client) == {"ready": 0, "pending": 1, "dead": 0, "delayed": 0}
    assert await post(client, "/ack", {"ids": [queued["id"]]}) == {"acked": 1}
    assert await stats(client) == {"ready": 0, "pending": 0, "dead": 0, "delayed": 0}


async def test_an_idempotency_key_makes_a_repeat_a_duplicate(client: httpx.AsyncClient) -> None:
    first = await post(client, "/jobs", {"payload": "hi", "idempotency_key": "msg-1"})
    again = await post(client, "/jobs", {"payload": "hi", "idempotency_key": "msg-1"})

    assert again == {"id": first["id"], "duplicate": True}
    assert (await stats(client))["ready"] == 1


async def test_nack_requeues_and_the_last_attempt_goes_to_the_dead_letters(client: httpx.AsyncClient) -> None:
    base = f"/queues/{DECLARED}"
    await client.post(f"{base}/jobs", json={"payload": None}, headers=CLIENT)
    answers = []
    for _ in range(2):
        [job] = (await client.post(f"{base}/claim", json={"consumer": "w"}, headers=CLIENT)).json()["jobs"]
        body = {"ids": [job["id"]], "delay_s": 0, "error": "provider down"}
        answers.append((await client.post(f"{base}/nack", json=body, headers=CLIENT)).json())

    assert answers == [{"requeued": 1, "dead": 0}, {"requeued": 0, "dead": 1}]
    assert await stats(client, DECLARED) == {"ready": 0, "pending": 0, "dead": 1, "delayed": 0}


async def test_a_queue_never_used_is_404_unless_declared(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/queues/{UNKNOWN}", headers=CLIENT), 404, "ORC_009")
    assert await stats(client, DECLARED) == {"ready": 0, "pending": 0, "dead": 0, "delayed": 0}
    claimed = await client.post(f"/queues/{UNKNOWN}/claim", json={"consumer": "w"}, headers=CLIENT)
    assert claimed.json() == {"jobs": []}
    acked = await client.post(f"/queues/{UNKNOWN}/ack", json={"ids": ["1-0"]}, headers=CLIENT)
    assert acked.json() == {"acked": 0}
    # Claiming, acking or nacking does not create a queue: only an enqueue does.
    assert_error(await client.get(f"/queues/{UNKNOWN}", headers=CLIENT), 404, "ORC_009")


# -- auth -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "unknown", "malformed"],
)
async def test_queue_routes_need_a_known_token(
    client: httpx.AsyncClient, method: str, suffix: str, body: bytes | None, headers: dict[str, str]
) -> None:
    response = await client.request(method, f"/queues/{Q}{suffix}", content=body, headers=headers)
    assert_error(response, 401, "ORC_007")
    assert_error(await client.get(f"/queues/{Q}", headers=CLIENT), 404, "ORC_009")


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
async def test_an_admin_token_may_use_the_queues(
    client: httpx.AsyncClient, method: str, suffix: str, body: bytes | None
) -> None:
    await post(client, "/jobs", {"payload": 0})
    response = await client.request(method, f"/queues/{Q}{suffix}", content=body, headers=ADMIN)
    assert response.status_code in (200, 202), response.text


# -- bad input: the contract's error, never a 500, nothing changed --------------------------------------------------

LEASED: Final = "{leased}"
BAD_BODIES: Final[list[tuple[str, bytes, int]]] = [
    # (route suffix, body, status); all ORC_001. `{leased}` stands for the id of a job claimed in setup.
    ("/jobs", b"{", 400),
    ("/jobs", b"", 400),
    ("/jobs", b'{"payload": }', 400),
    ("/jobs", b'{"payload": 1, "idempotency_key": "k"', 400),
    ("/jobs", b'{"payload": "\xff"}', 400),
    ("/jobs", b'{"payload": {"caf\xc3": 1}}', 400),
    ("/jobs", b"{}", 422),
    ("/jobs", b"[]", 422),
    ("/jobs", b'{"payload": 1, "extra": 2}', 422),
    ("/jobs", b'{"payload": 1, "idempotency_key": ""}', 422),
    ("/jobs", b'{"payload": 1, "idempotency_key": "' + b"k" * 201 + b'"}', 422),
    ("/jobs", b'{"payload": 1, "idempotency_key": 7}', 422),
    ("/claim", b"consumer=w", 400),
    ("/claim", b"{}", 422),
    ("/claim", b'{"consumer": ""}', 422),
    ("/claim", b'{"consumer": "w", "max": 0}', 422),
    ("/claim", b'{"consumer": "w", "max": 101}', 422),
    ("/claim", b'{"consumer": "w", "max": "2"}', 422),
    ("/claim", b'{"consumer": "w", "max": 1.5}', 422),
    ("/claim", b'{"consumer": "w", "lease_s": 0}', 422),
    ("/claim", b'{"consumer": "w", "lease_s": -1}', 422),
    ("/claim", b'{"consumer": "w", "lease_s": 86401}', 422),
    ("/claim", b'{"consumer": "w", "wait_s": 1}', 422),
    ("/ack", b"", 400),
    ("/ack", b"{}", 422),
    ("/ack", b'{"ids": []}', 422),
    ("/ack", b'{"ids": "{leased}"}', 422),
    ("/ack", b'{"ids": ["{leased}", "abc"]}', 422),
    ("/ack", b'{"ids": ["{leased}", 5]}', 422),
    ("/ack", b'{"ids": ["99999999999999999999-0"]}', 422),
    ("/ack", b'{"ids": ["{leased}"], "all": true}', 422),
    ("/nack", b'{"ids": ["{leased}"]', 400),
    ("/nack", b'{"ids": []}', 422),
    ("/nack", b'{"ids": ["{leased}"], "delay_s": -1}', 422),
    ("/nack", b'{"ids": ["{leased}"], "delay_s": 86401}', 422),
    ("/nack", b'{"ids": ["{leased}"], "delay_s": "soon"}', 422),
    ("/nack", b'{"ids": ["{leased}"], "error": "' + b"e" * 2001 + b'"}', 422),
    ("/nack", b'{"ids": ["{leased}"], "count_attempt": "no"}', 422),
    ("/nack", b'{"ids": ["{leased}"], "reason": "x"}', 422),
    ("/nack", b'{"ids": ["{leased}", "-1"]}', 422),
]


async def queue_state(client: httpx.AsyncClient) -> tuple[Any, ...]:
    unknown = await client.get(f"/queues/{UNKNOWN}", headers=CLIENT)
    return await stats(client), unknown.status_code


@pytest.fixture
async def probed(client: httpx.AsyncClient) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """`client`, with two jobs in `Q`, one of them claimed (its id yielded); asserts nothing changed afterwards."""
    await post(client, "/jobs", {"payload": 1})
    await post(client, "/jobs", {"payload": 2})
    [job] = (await post(client, "/claim", {"consumer": "setup", "max": 1, "lease_s": 600}))["jobs"]
    before = await queue_state(client)
    yield client, job["id"]
    assert await queue_state(client) == before
    # The claimed job is still leased, and the other still ready: acking both finishes exactly one of them.
    assert await post(client, "/ack", {"ids": [job["id"]]}) == {"acked": 1}
    assert [j["payload"] for j in (await post(client, "/claim", {"consumer": "after", "max": 5}))["jobs"]] == [2]


@pytest.mark.parametrize(("suffix", "body", "status"), BAD_BODIES, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("name", [Q, UNKNOWN])
async def test_bad_body_is_refused(
    probed: tuple[httpx.AsyncClient, str], name: str, suffix: str, body: bytes, status: int
) -> None:
    client, leased = probed
    content = body.replace(LEASED.encode(), leased.encode())
    response = await client.post(f"/queues/{name}{suffix}", content=content, headers=CLIENT)
    error = assert_error(response, status, "ORC_001")
    assert error["details"]["location"] == "body"
    if status == 422:
        assert error["details"]["path"].startswith("$")


async def test_validation_error_names_the_field(probed: tuple[httpx.AsyncClient, str]) -> None:
    client, leased = probed
    body = {"ids": [leased, "nope"], "delay_s": 1}
    error = assert_error(await client.post(f"/queues/{Q}/nack", json=body, headers=CLIENT), 422, "ORC_001")
    assert error["details"] == {"location": "body", "path": "$.ids[1]"}


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
async def test_bad_name_is_refused(
    probed: tuple[httpx.AsyncClient, str], method: str, suffix: str, body: bytes | None, name: str
) -> None:
    client, _ = probed
    response = await client.request(method, f"/queues/{name}{suffix}", content=body, headers=CLIENT)
    error = assert_error(response, 422, "ORC_001")
    assert error["details"] == {"location": "path", "path": "name"}


@pytest.mark.parametrize(("method", "suffix", "body"), [r for r in ROUTES if r[0] == "POST"])
async def test_oversized_body_is_413(
    probed: tuple[httpx.AsyncClient, str], method: str, suffix: str, body: bytes | None
) -> None:
    client, _ = probed
    big = b'{"payload": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = await client.request(method, f"/queues/{Q}{suffix}", content=big, headers=CLIENT)
    assert_error(response, 413, "ORC_010")


@pytest.mark.parametrize(("method", "suffix"), [("GET", "/jobs"), ("PUT", ""), ("DELETE", "/claim")])
async def test_wrong_method_is_405(probed: tuple[httpx.AsyncClient, str], method: str, suffix: str) -> None:
    client, _ = probed
    assert_error(await client.request(method, f"/queues/{Q}{suffix}", headers=CLIENT), 405, "ORC_001")


# -- Redis unreachable ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
async def test_every_queue_route_is_503_while_redis_is_unreachable(
    method: str, suffix: str, body: bytes | None
) -> None:
    from breaker_service.store.connection_redis import create_redis
    from breaker_service.store.queue_redis import RedisQueueStore

    settings = make_settings()
    queues = RedisQueueStore(create_redis(f"redis://127.0.0.1:{free_port()}/0"), owns_client=True)
    async with running_app(settings, memory_store(settings), queues=queues) as (_, client):
        response = await client.request(method, f"/queues/{Q}{suffix}", content=body, headers=CLIENT)
    assert_error(response, 503, "ORC_005")
