"""The short path for acquire and record answers exactly what the full Starlette stack answers.

Two apps, each on its own memory store, get the same requests in the same order: one as served (`ServiceApp`,
whose short path takes the plain acquire and record requests), one through `Starlette.__call__` only (the full
stack, as every other route). Status, headers that matter and bodies must match, errors included; and the short
path must really have taken the plain requests and left the others to the stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from structlog.testing import capture_logs

from breaker_client.protocol.models import BreakerConfig, Decision
from breaker_service.store.breaker_memory import MemoryStore
from tests.fixtures.app import ADMIN, CLIENT, MAX_BODY_BYTES, make_settings, memory_store, running_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import Receive, Scope, Send

JSON = {"Content-Type": "application/json"}
# (method, path, body, headers, taken by the short path)
REQUESTS: list[tuple[str, str, bytes | None, dict[str, str], bool]] = [
    ("POST", "/breakers/a/acquire", None, CLIENT, True),
    ("POST", "/breakers/a/acquire", b"{}", {**CLIENT, **JSON}, True),
    ("POST", "/breakers/a/record", b'{"outcome": "success"}', {**CLIENT, **JSON}, True),
    (
        "POST",
        "/breakers/a/record",
        b'{"outcome":"failure"}',
        {**CLIENT, "Content-Type": "application/json; charset=utf-8"},
        True,
    ),
    ("POST", "/breakers/a/record", b'{"outcome": "failure", "count": 9}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/a/acquire", b"", {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/record", b'{"outcome": "success", "count": 2}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/acquire", b'{"lease": true}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/acquire", b'{"lease": false}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/record", b'{"outcome": "success", "report_id": "r-1"}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/record", b'{"outcome": "success", "report_id": "r-1"}', {**CLIENT, **JSON}, True),
    ("POST", "/breakers/b/acquire", b'{"lease": "yes"}', {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/record", b'{"outcome": "maybe"}', {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/record", b'{"outcome": "success", "extra": 1}', {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/acquire", b'{"x": 1}', {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/acquire", b"{", {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/record", b'{"outcome": "success"}', {**CLIENT, "Content-Type": "text/plain"}, False),
    ("POST", "/breakers/a/record", b'{"outcome": "success"}', CLIENT, False),
    ("POST", "/breakers/bad%20name/acquire", None, CLIENT, False),
    ("POST", "/breakers/a%0A/acquire", None, CLIENT, False),
    ("POST", "/breakers/a/acquire", None, {"Authorization": "Bearer not-a-token"}, False),
    ("POST", "/breakers/a/acquire", None, {}, False),
    ("POST", "/breakers/a/record", b"x" * (MAX_BODY_BYTES + 1), {**CLIENT, **JSON}, False),
    ("POST", "/breakers/a/acquire/", None, CLIENT, False),
    ("POST", "/breakers/a/acquire?x=1", None, CLIENT, False),
    ("POST", "/breakers/c/acquire", None, CLIENT, True),  # one more than the cap: 409 from the store
]


def full_stack(app: Starlette) -> Any:
    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return serve


@pytest.fixture
async def apps() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    # The bundled config declares five breakers; "a" and "b" fit under the cap, "c" does not.
    settings = make_settings(max_breakers=7)
    async with (
        running_app(settings, memory_store(settings)) as (short, _),
        running_app(settings, memory_store(settings)) as (full, _),
    ):
        base = "http://breaker.test"
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=short), base_url=base) as served,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=full_stack(full)), base_url=base) as stack,
        ):
            yield served, stack


CLOCK_FIELDS = ("opened_at", "retry_after_s", "permit")
"""Read from each app's own clock (or a fresh permit id): present on both sides, but not equal."""


def comparable(response: httpx.Response) -> tuple[int, str | None, Any]:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, response.headers.get("content-type"), response.content
    body = response.json()
    if isinstance(body, dict) and "error" in body:
        assert body["error"]["correlation_id"] == response.headers["x-correlation-id"]
        body["error"]["correlation_id"] = "<id>"
    for field in CLOCK_FIELDS:
        if isinstance(body, dict) and body.get(field) is not None:
            body[field] = "<set>"
    return response.status_code, response.headers.get("content-type"), body


async def test_both_paths_answer_alike(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, stack = apps
    through_stack = 0
    original = Starlette.__call__

    async def counted(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal through_stack
        if scope["type"] == "http":
            through_stack += 1
        await original(self, scope, receive, send)

    monkeypatch.setattr(Starlette, "__call__", counted)
    for n, (method, path, body, headers, short) in enumerate(REQUESTS):
        sent = {**headers, "X-Correlation-ID": f"req-{n}"}
        before = through_stack
        mine = await served.request(method, path, content=body, headers=sent)
        taken = through_stack == before
        theirs = await stack.request(method, path, content=body, headers=sent)
        assert comparable(mine) == comparable(theirs), (method, path, body)
        assert mine.headers["x-correlation-id"] == theirs.headers["x-correlation-id"] == f"req-{n}"
        assert mine.headers["content-length"] == str(len(mine.content))
        assert taken is short, (method, path, body)


class BrokenStore(MemoryStore):
    """A store with a bug in acquire."""

    async def acquire(self, name: str, *, lease: bool = False) -> Decision:
        raise RuntimeError("secret internals")


async def test_an_unexpected_error_on_the_short_path_is_a_500_with_the_correlation_id() -> None:
    store = BrokenStore(resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store) as (_, client):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
            response = await client.post("/breakers/x/acquire", headers={**CLIENT, "X-Correlation-ID": "boom-2"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["code"], error["message"], error["correlation_id"]) == ("ORC_005", "internal error", "boom-2")
    assert "secret" not in response.text
    failure = next(line for line in captured if line["event"] == "unhandled exception")
    assert failure["correlation_id"] == "boom-2"
    request = next(line for line in captured if line["event"] == "request")
    assert (request["status"], request["route"], request["breaker"]) == (500, "/breakers/{name}/acquire", "x")


async def test_the_short_path_counts_its_requests_in_the_latency_histogram(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/breakers/timed/acquire", headers=CLIENT)
    await client.post("/breakers/timed/record", json={"outcome": "success"}, headers=CLIENT)
    text = (await client.get("/metrics", headers=ADMIN)).text
    counts = {
        line[line.index("{") + 1 : line.rindex("}")]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("breaker_http_request_duration_seconds_count")
    }
    assert counts['method="POST",route="/breakers/{name}/acquire"'] == 3
    assert counts['method="POST",route="/breakers/{name}/record"'] == 1
