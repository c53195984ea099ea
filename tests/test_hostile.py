"""Hostile input and abuse (DESIGN.md v1.1): every attack answers its contract error and changes nothing stored.

The in-process cases run on both stores (memory, and Redis with Redis queues) and compare a fingerprint of all
stored state before and after: breaker names, every snapshot, the probe's history, the queues' counts and, on
Redis, every key's `DUMP`. The resource cases (request heads, slow clients) need a real server and are in
tests/test_hostile_server.py.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from breaker_service.app import build_queues, build_store, context_of
from breaker_service.config import load_config
from breaker_service.errors import InvalidRequestError
from breaker_service.logs import DenialLog
from breaker_service.routes.events import SNAPSHOT_CHUNK, event_stream
from breaker_service.store.queue_redis import RedisQueueStore
from tests.fixtures.app import ADMIN, CLIENT, assert_error, make_settings, memory_store, running_app, store_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    import redis.asyncio
    from starlette.applications import Starlette

    from breaker_service.store.breaker_base import BreakerStore
    from breaker_service.store.connection_redis import RedisClient

PROBE: Final = "probe"
Q: Final = "outbox"
MAX_JOBS: Final = 5
MAX_PAYLOAD_BYTES: Final = 1024
SHA: Final = re.compile(r"[0-9a-f]{40}")
VOLATILE_KEYS: Final = (b"brk:{_mode}",)
"""The degradation mode's keys, which the health monitor rewrites on its own schedule."""


def deep(depth: int, inner: bytes = b"") -> bytes:
    """`depth` nested arrays around `inner`."""
    return b"[" * depth + inner + b"]" * depth


@dataclass
class Rig:
    """An app on one store (breakers and queues), its client, and the Redis behind it (None on memory)."""

    app: Starlette
    client: httpx.AsyncClient
    redis: RedisClient | None

    async def fingerprint(self) -> tuple[object, ...]:
        """Everything stored that a refused request must leave alone."""
        store, queues = store_of(self.app), context_of(self.app).queues
        keys: dict[bytes, object] = {}
        if self.redis is not None:
            found: list[bytes] = await self.redis.keys("*")  # type: ignore[assignment]
            for key in sorted(found):
                if not key.startswith(VOLATILE_KEYS):
                    keys[key] = await self.redis.dump(key)
        stats = [await queues.stats(name) for name in (Q, "full", "big")]
        return (await store.names(), await store.snapshots(), await store.history(PROBE), stats, keys)


@pytest.fixture
async def rig(store_url: str | None) -> AsyncIterator[Rig]:
    """The app on memory stores, then on Redis stores (flushed); `probe` forced open with history, `outbox` with
    one job claimed and one ready."""
    settings = make_settings(queue_max_jobs=MAX_JOBS, queue_max_payload_bytes=MAX_PAYLOAD_BYTES, max_breakers=2000)
    store: BreakerStore = memory_store(settings)
    client: RedisClient | None = None
    if store_url is not None:
        from breaker_service.store.connection_redis import create_redis

        client = create_redis(store_url)
        await client.flushdb()
        settings = msgspec.structs.replace(settings, redis_url=store_url)
        store = build_store(settings, load_config(), client)
    queues = build_queues(settings, load_config(), client)
    async with running_app(settings, store, queues=queues) as (app, http):
        await http.post(f"/breakers/{PROBE}/record", json={"outcome": "failure"}, headers=CLIENT)
        await http.post(f"/breakers/{PROBE}/force-open", json={"reason": "setup"}, headers=ADMIN)
        for payload in ("first", "second"):
            await http.post(f"/queues/{Q}/jobs", json={"payload": payload}, headers=CLIENT)
        await http.post(f"/queues/{Q}/claim", json={"consumer": "w"}, headers=CLIENT)
        yield Rig(app=app, client=http, redis=client)
    if client is not None:
        await client.aclose()


@pytest.fixture
async def untouched(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    """`rig`'s client; asserts after the test that nothing stored changed."""
    before = await rig.fingerprint()
    yield rig.client
    assert await rig.fingerprint() == before


# -- nesting ----------------------------------------------------------------------------------------------------

NESTED_BODIES: Final = [
    ("PUT", f"/breakers/{PROBE}", b'{"open_timeout_s": %s}'),
    ("POST", f"/breakers/{PROBE}/record", b'{"outcome": "failure", "count": %s}'),
    ("POST", f"/breakers/{PROBE}/force-close", b'{"reason": %s}'),
    ("POST", f"/queues/{Q}/jobs", b'{"payload": %s}'),
    ("POST", f"/queues/{Q}/ack", b'{"ids": %s}'),
    ("PUT", "/degradation", b'{"mode": %s}'),
]


@pytest.mark.parametrize("depth", [65, 2000])
@pytest.mark.parametrize(("method", "path", "template"), NESTED_BODIES)
async def test_json_nested_deeper_than_64_is_400(
    untouched: httpx.AsyncClient, method: str, path: str, template: bytes, depth: int
) -> None:
    body = template % deep(depth - 1)  # the object around it is one level

    response = await untouched.request(method, path, content=body, headers=ADMIN)

    error = assert_error(response, 400, "ORC_001")
    assert error["details"] == {"location": "body", "max_depth": 64}


async def test_an_unbalanced_deep_body_is_400_not_a_recursion_error(untouched: httpx.AsyncClient) -> None:
    response = await untouched.post(f"/queues/{Q}/jobs", content=b'{"payload": ' + b"[" * 3500, headers=CLIENT)

    assert_error(response, 400, "ORC_001")


async def test_json_nested_64_deep_is_accepted(rig: Rig) -> None:
    body = b'{"payload": %s}' % deep(63, b'"x"')

    response = await rig.client.post("/queues/nested/jobs", content=body, headers=CLIENT)

    assert response.status_code == 202, response.text
    [job] = (await rig.client.post("/queues/nested/claim", json={"consumer": "w"}, headers=CLIENT)).json()["jobs"]
    assert msgspec.json.encode(job["payload"]) == deep(63, b'"x"')


# -- whole-match names and ids ------------------------------------------------------------------------------------

NEWLINE_CASES: Final = [
    ("GET", f"/breakers/{PROBE}%0A", None),
    ("PUT", f"/breakers/{PROBE}%0A", b"{}"),
    ("DELETE", f"/breakers/{PROBE}%0A", None),
    ("POST", f"/breakers/{PROBE}%0A/acquire", b"{}"),
    ("POST", f"/breakers/{PROBE}%0A/record", b'{"outcome": "success"}'),
    ("POST", f"/breakers/{PROBE}%0A/force-close", b'{"reason": "r"}'),
    ("POST", f"/breakers/{PROBE}%0A/reset", b'{"reason": "r"}'),
    ("GET", f"/breakers/{PROBE}%0A/history", None),
    ("GET", f"/breakers?limit=2&cursor={PROBE}%0A", None),
    ("GET", f"/events?names={PROBE}%0A", None),
    ("GET", f"/queues/{Q}%0A", None),
    ("POST", f"/queues/{Q}%0A/jobs", b'{"payload": 1}'),
    ("DELETE", f"/queues/{Q}%0A/dead", None),
    ("POST", f"/queues/{Q}/ack", b'{"ids": ["1-1\\n"]}'),
    ("POST", f"/queues/{Q}/nack", b'{"ids": ["1-1\\n"]}'),
]


@pytest.mark.parametrize(("method", "path", "body"), NEWLINE_CASES)
async def test_a_trailing_newline_is_a_bad_name_or_id(
    untouched: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    response = await untouched.request(method, path, content=body, headers=ADMIN)

    assert_error(response, 422, "ORC_001")
    assert not SHA.search(response.text)
    assert "script" not in response.text


# -- content type -----------------------------------------------------------------------------------------------

NOT_JSON: Final = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonp",
    None,
]
BODY_ROUTES: Final = [
    ("POST", f"/breakers/{PROBE}/record", b'{"outcome": "success"}'),
    ("POST", f"/breakers/{PROBE}/force-close", b'{"reason": "r"}'),
    ("PUT", f"/breakers/{PROBE}", b"{}"),
    ("PATCH", f"/breakers/{PROBE}", b"{}"),
    ("POST", f"/queues/{Q}/jobs", b'{"payload": 1}'),
    ("PUT", "/degradation", b'{"mode": "EMERGENCY", "reason": "r"}'),
]


@pytest.mark.parametrize("content_type", NOT_JSON)
@pytest.mark.parametrize(("method", "path", "body"), BODY_ROUTES)
async def test_a_body_not_declared_json_is_415(
    rig: Rig, untouched: httpx.AsyncClient, method: str, path: str, body: bytes, content_type: str | None
) -> None:
    request = rig.client.build_request(method, path, content=body, headers=ADMIN)
    del request.headers["content-type"]  # the client's default
    if content_type is not None:
        request.headers["Content-Type"] = content_type

    response = await untouched.send(request)

    error = assert_error(response, 415, "ORC_001")
    assert error["details"] == {"content_type": content_type, "expected": "application/json"}


async def test_json_with_a_charset_and_a_bodiless_post_need_nothing_more(rig: Rig) -> None:
    typed = await rig.client.post(
        "/breakers/fresh/record",
        content=b'{"outcome": "success"}',
        headers={**CLIENT, "Content-Type": "Application/JSON; charset=utf-8"},
    )
    request = rig.client.build_request("POST", "/breakers/fresh/acquire", headers=CLIENT)
    del request.headers["content-type"]
    bodiless = await rig.client.send(request)

    assert (typed.status_code, bodiless.status_code) == (200, 200)


# -- trailing slash ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/breakers/"),
        ("GET", f"/breakers/{PROBE}/"),
        ("POST", f"/breakers/{PROBE}/acquire/"),
        ("GET", "/health/"),
        ("GET", f"/queues/{Q}/"),
    ],
)
async def test_a_trailing_slash_is_404_without_a_redirect(untouched: httpx.AsyncClient, method: str, path: str) -> None:
    response = await untouched.request(method, path, headers={**CLIENT, "Host": "evil.example"})

    assert_error(response, 404, "ORC_009")
    assert "location" not in response.headers


# -- queues -----------------------------------------------------------------------------------------------------


async def test_a_full_queue_answers_409_and_keeps_its_jobs(rig: Rig) -> None:
    for n in range(MAX_JOBS):
        assert (await rig.client.post("/queues/full/jobs", json={"payload": n}, headers=CLIENT)).status_code == 202
    before = await rig.fingerprint()

    response = await rig.client.post("/queues/full/jobs", json={"payload": "one too many"}, headers=CLIENT)

    error = assert_error(response, 409, "ORC_002")
    assert error["details"] == {"max_jobs": MAX_JOBS, "jobs": MAX_JOBS}
    assert await rig.fingerprint() == before


async def test_a_payload_over_the_limit_is_413(untouched: httpx.AsyncClient) -> None:
    payload = "x" * (MAX_PAYLOAD_BYTES - 1)  # with its quotes, one byte over

    response = await untouched.post(f"/queues/{Q}/jobs", json={"payload": payload}, headers=CLIENT)

    error = assert_error(response, 413, "ORC_010")
    assert error["details"] == {"max_payload_bytes": MAX_PAYLOAD_BYTES, "payload_bytes": MAX_PAYLOAD_BYTES + 1}


async def test_a_claim_answers_at_most_the_body_limit_of_payloads(rig: Rig) -> None:
    max_body_bytes = context_of(rig.app).settings.max_body_bytes
    for n in range(MAX_JOBS):
        await rig.client.post("/queues/big/jobs", json={"payload": f"{n}" * 1000}, headers=CLIENT)

    first = (await rig.client.post("/queues/big/claim", json={"consumer": "w", "max": 100}, headers=CLIENT)).json()
    rest = (await rig.client.post("/queues/big/claim", json={"consumer": "w2", "max": 100}, headers=CLIENT)).json()

    sizes = [len(msgspec.json.encode(job["payload"])) for job in first["jobs"]]
    assert sum(sizes) <= max_body_bytes < sum(sizes) + 1002
    assert len(first["jobs"]) + len(rest["jobs"]) == MAX_JOBS


async def test_admins_purge_dead_letters(rig: Rig) -> None:
    declared = await rig.client.post("/queues/dying/jobs", json={"payload": 1}, headers=CLIENT)
    [job] = (await rig.client.post("/queues/dying/claim", json={"consumer": "w"}, headers=CLIENT)).json()["jobs"]
    for _ in range(4):  # five attempts by default: four nacks give the job back, the fifth buries it
        await rig.client.post("/queues/dying/nack", json={"ids": [job["id"]]}, headers=CLIENT)
        await rig.client.post("/queues/dying/claim", json={"consumer": "w"}, headers=CLIENT)
    await rig.client.post("/queues/dying/nack", json={"ids": [job["id"]]}, headers=CLIENT)
    assert declared.status_code == 202
    assert (await rig.client.get("/queues/dying", headers=CLIENT)).json()["dead"] == 1

    refused = await rig.client.delete("/queues/dying/dead", headers=CLIENT)
    purged = await rig.client.delete("/queues/dying/dead?reason=cleanup", headers=ADMIN)

    assert_error(refused, 403, "ORC_008")
    assert purged.json() == {"purged": 1}
    assert (await rig.client.get("/queues/dying", headers=CLIENT)).json()["dead"] == 0
    assert_error(await rig.client.delete("/queues/never-used/dead", headers=ADMIN), 404, "ORC_009")


# -- paging -----------------------------------------------------------------------------------------------------


async def test_breakers_page_exactly_with_no_breaker_twice(rig: Rig) -> None:
    for n in range(7):
        await rig.client.post(f"/breakers/paged-{n}/acquire", headers=CLIENT)
    every = [b["name"] for b in (await rig.client.get("/breakers", headers=CLIENT)).json()["breakers"]]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor is not None else "")
        page = (await rig.client.get(f"/breakers?{query}", headers=CLIENT)).json()
        pages.append([b["name"] for b in page["breakers"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [name for page in pages for name in page] == every
    assert [len(page) for page in pages[:-1]] == [3] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= 3


async def test_a_page_ending_on_the_last_breaker_has_no_next_cursor(rig: Rig) -> None:
    every = [b["name"] for b in (await rig.client.get("/breakers", headers=CLIENT)).json()["breakers"]]

    whole = (await rig.client.get(f"/breakers?limit={len(every)}", headers=CLIENT)).json()
    after_last = (await rig.client.get(f"/breakers?limit=5&cursor={every[-1]}", headers=CLIENT)).json()

    assert ([b["name"] for b in whole["breakers"]], whole["next_cursor"]) == (every, None)
    assert after_last == {"breakers": [], "next_cursor": None}


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "limit=2&cursor=-bad", "cursor=a%20b"])
async def test_bad_paging_is_422(untouched: httpx.AsyncClient, query: str) -> None:
    assert_error(await untouched.get(f"/breakers?{query}", headers=CLIENT), 422, "ORC_001")


# -- events -----------------------------------------------------------------------------------------------------


async def frames(app: Starlette, names: list[str] | None, count: int) -> list[tuple[str, Any]]:
    """The first `count` SSE events of a stream as (kind, data)."""
    ctx = context_of(app)
    stream = event_stream(ctx.store, ctx.hub, stopping=ctx.stopping, keepalive_s=60.0, names=names)
    got: list[tuple[str, Any]] = []
    try:
        async for frame in stream:
            if frame.startswith(b":"):
                continue
            lines = dict(line.split(b": ", 1) for line in frame.strip().split(b"\n"))
            got.append((lines[b"event"].decode(), msgspec.json.decode(lines[b"data"])))
            if len(got) == count:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return got


async def test_events_for_named_breakers_only(rig: Rig) -> None:
    async def open_on(name: str) -> None:
        await rig.client.post(f"/breakers/{name}/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)

    ctx = context_of(rig.app)
    stream = event_stream(ctx.store, ctx.hub, stopping=ctx.stopping, keepalive_s=60.0, names=["openai", "nope"])
    snapshot = await anext(stream)
    await open_on("supabase")  # not named: never on this stream
    await open_on("openai")
    seen: list[bytes] = []
    while not seen or b"event: breaker" not in seen[-1]:  # the snapshot that follows openai's transition
        seen.append(await asyncio.wait_for(anext(stream), timeout=30))
    await stream.aclose()  # type: ignore[attr-defined]

    assert b"event: snapshot" in snapshot
    data = msgspec.json.decode(snapshot.split(b"data: ", 1)[1])
    assert ([b["name"] for b in data["breakers"]], data["more"]) == (["openai"], False)
    about_breakers = [frame for frame in seen if b"event: mode" not in frame and not frame.startswith(b":")]
    assert about_breakers
    assert all(b'"name":"openai"' in frame for frame in about_breakers), about_breakers


async def test_the_opening_snapshot_comes_in_chunks_of_at_most_1000(rig: Rig) -> None:
    store = store_of(rig.app)
    total = SNAPSHOT_CHUNK + 2
    for n in range(total - len(await store.names())):
        await store.acquire(f"many-{n:04d}")

    got = await frames(rig.app, None, 2)

    assert [kind for kind, _ in got] == ["snapshot", "snapshot"]
    assert [(len(data["breakers"]), data["more"]) for _, data in got] == [(SNAPSHOT_CHUNK, True), (2, False)]
    names = [b["name"] for _, data in got for b in data["breakers"]]
    assert names == sorted(set(names)) == await store.names()


@pytest.mark.parametrize("names", ["", "a,,b", "-x", ",".join(["n"] * 1001)])
async def test_a_bad_names_filter_is_422(untouched: httpx.AsyncClient, names: str) -> None:
    assert_error(await untouched.get(f"/events?names={names}", headers=CLIENT), 422, "ORC_001")


# -- scripts, disconnects, logs ---------------------------------------------------------------------------------


async def test_input_that_fails_a_script_is_a_4xx_without_its_sha(redis_client: redis.asyncio.Redis) -> None:
    queues = RedisQueueStore(redis_client)  # redis_client does not decode replies, as the store needs
    await queues.enqueue(Q, b"1")
    before = await redis_client.dump(f"q:{{{Q}}}:jobs")

    with pytest.raises(InvalidRequestError) as refused:
        await queues.ack(Q, ["not-a-stream-id"])  # the route's pattern never lets this through; a script must cope

    assert refused.value.status == 422
    assert not SHA.search(refused.value.message)
    assert "user_script" not in refused.value.message
    assert await redis_client.dump(f"q:{{{Q}}}:jobs") == before


async def test_a_client_gone_mid_body_is_an_info_line(rig: Rig) -> None:
    sent: list[dict[str, Any]] = []
    parts = iter([{"type": "http.request", "body": b'{"outcome": ', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> Any:
        return next(parts)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/breakers/{PROBE}/record",
        "raw_path": f"/breakers/{PROBE}/record".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"authorization", CLIENT["Authorization"].encode())],
        "server": ("breaker.test", 80),
        "client": ("127.0.0.1", 50000),
    }
    before = await rig.fingerprint()

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await rig.app(scope, receive, send)

    assert sent == []
    assert {line["log_level"] for line in logs} == {"info"}
    assert [line.get("status") for line in logs if line["event"] == "request"] == [499]
    assert await rig.fingerprint() == before


async def test_dev_mode_warns_at_start() -> None:
    settings = make_settings(client_tokens=None)
    with capture_logs() as logs:
        async with running_app(settings, memory_store(settings)):
            pass

    warnings = [line["event"] for line in logs if line["log_level"] == "warning"]
    assert any("BREAKER_CLIENT_TOKENS is unset" in event for event in warnings)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_denials_are_one_line_per_breaker_per_second_with_the_count(rig: Rig) -> None:
    clock = FakeClock()
    context_of(rig.app).denials = DenialLog(clock=clock)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        for _ in range(5):
            await rig.client.post(f"/breakers/{PROBE}/acquire", headers=CLIENT)
        clock.now += 0.999
        await rig.client.post(f"/breakers/{PROBE}/acquire", headers=CLIENT)
        clock.now += 0.001
        await rig.client.post(f"/breakers/{PROBE}/acquire", headers=CLIENT)

    denied = [(line["breaker"], line["denied"]) for line in logs if line["event"] == "calls denied"]
    assert denied == [(PROBE, 1), (PROBE, 6)]
    assert not [line for line in logs if line["event"] == "request"]


ADMIN_ACTIONS: Final = [
    ("PUT", f"/breakers/{PROBE}?reason=tune", b'{"failure_threshold": 7}', "put-breaker"),
    ("POST", f"/breakers/{PROBE}/force-close", b'{"reason": "drill"}', "force-close"),
    ("POST", f"/breakers/{PROBE}/reset", b'{"reason": "clean"}', "reset"),
    ("PUT", "/degradation", b'{"mode": "PARTIAL", "reason": "drill"}', "put-degradation"),
    ("DELETE", f"/queues/{Q}/dead?reason=cleanup", None, "purge-dead"),
    ("DELETE", f"/breakers/{PROBE}?reason=retired", None, "delete-breaker"),
]


@pytest.mark.parametrize(("method", "path", "body", "action"), ADMIN_ACTIONS)
async def test_every_admin_action_is_one_info_line(
    rig: Rig, method: str, path: str, body: bytes | None, action: str
) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await rig.client.request(method, path, content=body, headers={**ADMIN, "X-Correlation-ID": "adm"})

    assert response.status_code in {200, 204}, response.text
    mine = [line for line in logs if line.get("correlation_id") == "adm"]
    [line] = [line for line in mine if line["event"] == "request"]  # a change it causes may have a line of its own
    assert (line["log_level"], line["action"], line["actor"]) == ("info", action, "test-admin")
    assert {other["log_level"] for other in mine} == {"info"}


@pytest.mark.parametrize(
    "path", ["/breakers?limt=5", f"/breakers/{PROBE}?x=1", f"/breakers/{PROBE}/history?limit=1&cursor=a", "/health?a="]
)
async def test_an_unknown_query_parameter_is_422(untouched: httpx.AsyncClient, path: str) -> None:
    error = assert_error(await untouched.get(path, headers=CLIENT), 422, "ORC_001")

    assert error["details"]["location"] == "query"


async def test_the_document_publishes_patterns_in_json_schema_dialect(rig: Rig) -> None:
    document = (await rig.client.get("/openapi.json")).text

    assert "\\\\Z" not in document
    assert '"pattern":"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"' in document
