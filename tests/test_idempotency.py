"""`Idempotency-Key` on admin writes (breaker_service/idempotency.py), on the memory store and on a real Redis.

A retry with the same key and request is answered with the first answer and applies nothing (the store's write
methods are counted, the audit trail and history read back); another request under the key is 422, a request while
the first is in flight 409 (the first is held on an event), a bad key 400; a failed write frees the key; keys are
scoped by actor; two replicas on one Redis answer a retry the same. The stores' own rules are checked below them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pytest
from starlette.requests import Request
from starlette.responses import Response

from breaker_service.app import build_store, context_of
from breaker_service.config import load_config
from breaker_service.errors import StoreUnavailableError
from breaker_service.idempotency import answer_once
from breaker_service.store.connection_redis import create_redis
from breaker_service.store.idempotency_base import ANSWER_TTL_S, PENDING_TTL_S, Answered, Pending
from breaker_service.store.idempotency_memory import MemoryIdempotencyStore
from breaker_service.store.idempotency_redis import RedisIdempotencyStore
from breaker_service.store.keys import admin_idempotency_key
from tests.fixtures.app import ADMIN, ADMIN_TOKEN, assert_error, make_settings, running_app, store_of, store_on
from tests.fixtures.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import httpx
    import redis.asyncio
    from starlette.applications import Starlette

    from breaker_service.store.idempotency_base import IdempotencyStore

NAME: Final = "idem"
QUEUE: Final = "outbox"
KEY: Final = "2f1c-retry-me"
OTHER_TOKEN: Final = "other-admin-token-for-tests-0123456789"
OTHER: Final = {"Authorization": f"Bearer {OTHER_TOKEN}"}


@dataclass(frozen=True)
class Write:
    """One admin write, as a test sends it."""

    method: str
    path: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)

    async def send(self, client: httpx.AsyncClient, key: str | None = KEY, **headers: str) -> httpx.Response:
        sent = {**ADMIN, **headers, **({"Idempotency-Key": key} if key is not None else {})}
        return await client.request(self.method, self.path, json=self.body, params=self.params, headers=sent)


FORCE_OPEN: Final = Write("POST", f"/breakers/{NAME}/force-open", {"reason": "incident", "ttl_s": 600.0})
WRITES: Final = {
    "force-open": FORCE_OPEN,
    "force-close": Write("POST", f"/breakers/{NAME}/force-close", {"reason": "calm", "ttl_s": None}),
    "reset": Write("POST", f"/breakers/{NAME}/reset", {"reason": "fresh start"}),
    "put": Write("PUT", f"/breakers/{NAME}", {"failure_threshold": 4}, {"reason": "tune"}),
    "patch": Write("PATCH", f"/breakers/{NAME}", {"open_timeout_s": 90.0}, {"reason": "tune"}),
    "delete": Write("DELETE", f"/breakers/{NAME}", params={"reason": "retired"}),
    "degradation": Write("PUT", "/degradation", {"mode": "PARTIAL", "reason": "drill", "ttl_s": None}),
    "purge-dead": Write("DELETE", f"/queues/{QUEUE}/dead"),
}


class Spy:
    """Counts the calls of the write methods of the app's store, queues and monitor (what a write applies)."""

    def __init__(self, app: Starlette, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        ctx = context_of(app)
        targets: list[tuple[object, str]] = [(ctx.store, m) for m in ("configure", "patch", "delete", "force", "reset")]
        targets += [(ctx.queues, "purge_dead"), (ctx.monitor, "force")]
        for owner, method in targets:
            monkeypatch.setattr(owner, method, self._counted(getattr(owner, method)))

    def _counted(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await method(*args, **kwargs)

        return counted


async def prepare(client: httpx.AsyncClient) -> None:
    """The breaker and the queue the writes act on, made without a key."""
    assert (await client.put(f"/breakers/{NAME}", json={}, headers=ADMIN)).status_code == 200
    assert (await client.post(f"/queues/{QUEUE}/jobs", json={"payload": 1}, headers=ADMIN)).status_code == 202


async def audit_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/audit", headers=ADMIN)).json()["entries"])


async def history_count(client: httpx.AsyncClient) -> int:
    response = await client.get(f"/breakers/{NAME}/history", headers=ADMIN)
    return len(response.json()["transitions"]) if response.status_code == 200 else 0


# -- the HTTP contract, on both stores ----------------------------------------------------------------------------


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_a_retry_gets_the_first_answer_and_applies_nothing(
    any_app: Starlette, any_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, write: Write
) -> None:
    await prepare(any_client)
    spy = Spy(any_app, monkeypatch)

    first = await write.send(any_client)
    assert 200 <= first.status_code < 300, first.text
    assert "idempotent-replayed" not in first.headers
    applied = (spy.calls, await audit_count(any_client), await history_count(any_client))

    retry = await write.send(any_client)

    assert (retry.status_code, retry.content) == (first.status_code, first.content)
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers.get("content-type") == first.headers.get("content-type")
    assert (spy.calls, await audit_count(any_client), await history_count(any_client)) == applied
    assert spy.calls == 1


async def test_a_replayed_force_keeps_its_ttl_running(any_client: httpx.AsyncClient) -> None:
    await prepare(any_client)
    forced = (await FORCE_OPEN.send(any_client)).json()

    await FORCE_OPEN.send(any_client)

    snapshot = (await any_client.get(f"/breakers/{NAME}", headers=ADMIN)).json()
    assert snapshot["force"]["until"] == forced["force"]["until"]
    assert snapshot["generation"] == forced["generation"]


async def test_the_same_body_encoded_otherwise_is_the_same_request(any_client: httpx.AsyncClient) -> None:
    await prepare(any_client)
    first = await FORCE_OPEN.send(any_client)
    reordered = b'{ "ttl_s": 600.0,\n  "reason": "incident" }'

    retry = await any_client.post(
        FORCE_OPEN.path,
        content=reordered,
        headers={**ADMIN, "Idempotency-Key": KEY, "Content-Type": "application/json"},
    )

    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content


@pytest.mark.parametrize(
    "other",
    [
        Write("POST", f"/breakers/{NAME}/force-open", {"reason": "another incident", "ttl_s": 600.0}),
        Write("POST", f"/breakers/{NAME}/force-close", {"reason": "incident", "ttl_s": 600.0}),
        Write("POST", f"/breakers/{NAME}/force-open", {"reason": "incident", "ttl_s": 600.0}, {"create": "true"}),
        Write("PUT", "/degradation", {"mode": "PARTIAL", "reason": "drill", "ttl_s": None}),
    ],
    ids=["body", "path", "query", "route"],
)
async def test_the_same_key_on_another_request_is_orc_001_and_applies_nothing(
    any_app: Starlette, any_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, other: Write
) -> None:
    await prepare(any_client)
    await FORCE_OPEN.send(any_client)
    spy = Spy(any_app, monkeypatch)

    error = assert_error(await other.send(any_client), 422, "ORC_001")

    assert error["details"] == {"header": "Idempotency-Key"}
    assert spy.calls == 0


@pytest.mark.parametrize(
    "key",
    ["", " ", "a b", "x" * 256, "tab\there", "caf\xe9"],
    ids=["empty", "space", "inner-space", "too-long", "control", "not-ascii"],
)
async def test_a_key_that_is_not_1_to_255_visible_ascii_is_orc_001_400(
    any_app: Starlette, any_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    await prepare(any_client)
    spy = Spy(any_app, monkeypatch)
    headers = [(name.encode(), value.encode()) for name, value in ADMIN.items()]
    headers.append((b"Idempotency-Key", key.encode("latin-1")))

    error = assert_error(
        await any_client.post(FORCE_OPEN.path, json=FORCE_OPEN.body, headers=headers),
        400,
        "ORC_001",
    )

    assert error["details"] == {"header": "Idempotency-Key"}
    assert spy.calls == 0


async def test_two_keys_on_one_request_are_orc_001_400(any_client: httpx.AsyncClient) -> None:
    headers = [*ADMIN.items(), ("Idempotency-Key", "one"), ("Idempotency-Key", "two")]

    response = await any_client.post(FORCE_OPEN.path, json=FORCE_OPEN.body, headers=headers)

    assert assert_error(response, 400, "ORC_001")["details"] == {"header": "Idempotency-Key"}


async def test_the_longest_key_is_accepted(any_client: httpx.AsyncClient) -> None:
    await prepare(any_client)
    key = "".join(chr(0x21 + i % 94) for i in range(255))

    assert (await FORCE_OPEN.send(any_client, key)).status_code == 200
    assert (await FORCE_OPEN.send(any_client, key)).headers["idempotent-replayed"] == "true"


async def test_a_request_while_the_first_is_in_flight_is_orc_003(
    any_app: Starlette, any_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await prepare(any_client)
    store = store_of(any_app)
    entered, release = asyncio.Event(), asyncio.Event()
    force = store.force

    async def held_force(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await force(*args, **kwargs)

    monkeypatch.setattr(store, "force", held_force)
    before = await history_count(any_client)
    first = asyncio.create_task(FORCE_OPEN.send(any_client))
    await entered.wait()

    error = assert_error(await FORCE_OPEN.send(any_client), 409, "ORC_003")
    other = await Write("POST", f"/breakers/{NAME}/reset", {"reason": "r"}).send(any_client)
    release.set()
    answered = await first

    assert error["details"] == {"header": "Idempotency-Key"}
    assert_error(other, 422, "ORC_001")  # another request is refused for its fingerprint, in flight or not
    assert answered.status_code == 200
    replayed = await FORCE_OPEN.send(any_client)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == answered.content
    assert await history_count(any_client) == before + 1


async def test_a_failed_write_leaves_the_key_free(any_client: httpx.AsyncClient) -> None:
    reset = Write("POST", f"/breakers/{NAME}/reset", {"reason": "fresh start"})
    assert_error(await reset.send(any_client), 404, "ORC_009")
    assert_error(await reset.send(any_client), 404, "ORC_009")  # not replayed: run again, and failed again
    await prepare(any_client)

    answered = await reset.send(any_client)

    assert answered.status_code == 200
    assert "idempotent-replayed" not in answered.headers
    assert (await reset.send(any_client)).headers["idempotent-replayed"] == "true"


async def test_a_body_that_is_not_json_fails_and_leaves_the_key_free(any_client: httpx.AsyncClient) -> None:
    await prepare(any_client)
    headers = {**ADMIN, "Idempotency-Key": KEY, "Content-Type": "application/json"}

    refused = await any_client.post(FORCE_OPEN.path, content=b'{"reason": ', headers=headers)

    assert_error(refused, 400, "ORC_001")
    assert (await FORCE_OPEN.send(any_client)).status_code == 200


async def test_a_request_without_a_key_is_applied_every_time(any_client: httpx.AsyncClient) -> None:
    await prepare(any_client)

    before = await history_count(any_client)

    for _ in range(2):
        assert "idempotent-replayed" not in (await FORCE_OPEN.send(any_client, key=None)).headers

    assert await history_count(any_client) == before + 2


@pytest.fixture
async def two_admins(store_url: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """The app on either store with two admin tokens, `test-admin` (ADMIN) and `other-admin` (OTHER)."""
    settings = make_settings(admin_tokens={"test-admin": ADMIN_TOKEN, "other-admin": OTHER_TOKEN})
    async with running_app(settings, await store_on(store_url, settings)) as (_, client):
        yield client


async def test_keys_are_scoped_by_actor(two_admins: httpx.AsyncClient) -> None:
    await prepare(two_admins)
    other_reason = Write("POST", FORCE_OPEN.path, {"reason": "the other admin's", "ttl_s": None})

    mine = await FORCE_OPEN.send(two_admins)
    theirs = await other_reason.send(two_admins, **OTHER)  # the same key, another actor: no collision
    their_retry = await other_reason.send(two_admins, **OTHER)

    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert their_retry.headers["idempotent-replayed"] == "true"
    assert their_retry.content == theirs.content
    actors = [entry["actor"] for entry in (await two_admins.get("/audit", headers=ADMIN)).json()["entries"]]
    assert actors.count("test-admin") == 2
    assert actors.count("other-admin") == 1


# -- two replicas on one Redis ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def replica(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One replica as `python -m breaker_service` builds it on Redis (ResilientStore over RedisStore)."""
    settings = make_settings(redis_url=redis_url)
    async with running_app(settings, build_store(settings, load_config())) as (_, client):
        yield client


async def test_a_retry_on_another_replica_gets_the_same_answer(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url) as first, replica(redis_url) as second:
        await prepare(first)
        before = await history_count(first)
        answered = await FORCE_OPEN.send(first)
        retry = await FORCE_OPEN.send(second)
        other = await Write("POST", f"/breakers/{NAME}/reset", {"reason": "r"}).send(second)

        assert retry.headers["idempotent-replayed"] == "true"
        assert (retry.status_code, retry.content) == (answered.status_code, answered.content)
        assert_error(other, 422, "ORC_001")
        assert await history_count(second) == before + 1


async def test_an_unreachable_store_answers_orc_005_and_applies_nothing(redis_client: redis.asyncio.Redis) -> None:
    async with replica(f"redis://127.0.0.1:{free_port()}/0") as client:
        assert_error(await FORCE_OPEN.send(client), 503, "ORC_005")


# -- when keeping or freeing a key fails --------------------------------------------------------------------------


class FailingEntries:
    """An IdempotencyStore whose claims work and whose complete/release raise, as a Redis gone mid-request."""

    def __init__(self, inner: IdempotencyStore) -> None:
        self.inner = inner

    async def claim(self, scope: str, pending: Pending) -> Pending | Answered | None:
        return await self.inner.claim(scope, pending)

    async def complete(self, scope: str, pending: Pending, answer: Answered) -> None:
        raise StoreUnavailableError("gone")

    async def release(self, scope: str, pending: Pending) -> None:
        raise StoreUnavailableError("gone")


async def test_a_write_whose_answer_cannot_be_kept_still_answers_and_holds_the_key(
    app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await prepare(client)
    store = store_of(app)
    entries = FailingEntries(store.idempotency_store())
    monkeypatch.setattr(store, "idempotency_store", lambda: entries)

    answered = await FORCE_OPEN.send(client)
    failed = await Write("POST", f"/breakers/{NAME}/reset", {"reason": "r"}).send(client, "another")

    assert answered.status_code == 200  # applied, so answered; the claim holds the key until it runs out
    assert_error(await FORCE_OPEN.send(client), 409, "ORC_003")
    assert failed.status_code == 200
    monkeypatch.setattr(store, "delete", _refuse)
    assert_error(await Write("DELETE", f"/breakers/{NAME}").send(client, "third"), 503, "ORC_005")


async def _refuse(*args: Any, **kwargs: Any) -> None:
    raise StoreUnavailableError("refused")


async def test_an_answer_that_is_not_2xx_is_not_kept(app: Starlette) -> None:
    statuses = iter([500, 200])

    async def write(request: Request) -> Response:
        return Response(b"{}", status_code=next(statuses), media_type="application/json")

    async def send() -> Response:
        scope = {"type": "http", "method": "POST", "path": "/x", "query_string": b"", "app": app}
        request = Request({**scope, "headers": [(b"idempotency-key", KEY.encode())]}, _empty_body)
        return await answer_once(request, "test-admin", write)

    assert (await send()).status_code == 500
    assert (await send()).status_code == 200
    assert (await send()).headers[REPLAYED] == "true"


REPLAYED: Final = "idempotent-replayed"


async def _empty_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


# -- the stores' rules, on both ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
async def entries(store_url: str | None) -> AsyncIterator[IdempotencyStore]:
    if store_url is None:
        yield MemoryIdempotencyStore(clock=Clock())
        return
    redis = create_redis(store_url)
    await redis.flushdb()
    try:
        yield RedisIdempotencyStore(redis)
    finally:
        await redis.aclose()


PENDING: Final = Pending(fingerprint="f1", claim="c1")
STRANGER: Final = Pending(fingerprint="f1", claim="c2")
ANSWER: Final = Answered(fingerprint="f1", status=200, body=b'{"ok":true}', media_type="application/json")


async def test_a_claim_holds_the_key_until_its_owner_settles_it(entries: IdempotencyStore) -> None:
    assert await entries.claim("s", PENDING) is None
    assert await entries.claim("s", STRANGER) == PENDING

    await entries.complete("s", STRANGER, ANSWER)  # not its claim: nothing changes
    await entries.release("s", STRANGER)
    assert await entries.claim("s", STRANGER) == PENDING

    await entries.complete("s", PENDING, ANSWER)
    assert await entries.claim("s", STRANGER) == ANSWER
    await entries.release("s", PENDING)  # an answer is no claim: it stays
    assert await entries.claim("s", STRANGER) == ANSWER


async def test_a_released_claim_frees_the_key(entries: IdempotencyStore) -> None:
    assert await entries.claim("s", PENDING) is None
    await entries.release("s", PENDING)

    assert await entries.claim("s", STRANGER) is None
    assert await entries.claim("t", PENDING) is None  # scopes are apart


async def test_memory_entries_run_out() -> None:
    clock = Clock()
    entries = MemoryIdempotencyStore(clock=clock)
    await entries.claim("s", PENDING)
    clock.now_ms += int(PENDING_TTL_S * 1000)
    await entries.complete("s", PENDING, ANSWER)  # the claim ran out: nothing is kept

    assert await entries.claim("s", STRANGER) is None
    await entries.complete("s", STRANGER, ANSWER)
    clock.now_ms += int(ANSWER_TTL_S * 1000) - 1
    assert await entries.claim("s", PENDING) == ANSWER
    clock.now_ms += 1
    assert await entries.claim("s", PENDING) is None


async def test_redis_entries_expire_after_their_ttl(redis_client: redis.asyncio.Redis, redis_url: str) -> None:
    entries = RedisIdempotencyStore(redis_client)
    key = admin_idempotency_key("s")

    await entries.claim("s", PENDING)
    pending_ttl_ms = await redis_client.pttl(key)
    await entries.complete("s", PENDING, ANSWER)
    answer_ttl_ms = await redis_client.pttl(key)

    assert 0 < pending_ttl_ms <= PENDING_TTL_S * 1000
    assert PENDING_TTL_S * 1000 < answer_ttl_ms <= ANSWER_TTL_S * 1000


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    redis = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailableError):
            await RedisIdempotencyStore(redis).claim("s", PENDING)
    finally:
        await redis.aclose()
