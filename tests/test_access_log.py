"""The access-log policy: errors and admin actions always, other requests as a sample; denials once a second."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from structlog.testing import capture_logs

from breaker_client.protocol.models import State
from breaker_service.app import context_of
from breaker_service.logs import AccessLog, DenialLog
from tests.fixtures.app import ADMIN, CLIENT, make_settings, memory_store, running_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    import httpx
    from starlette.applications import Starlette

MERGE = [structlog.contextvars.merge_contextvars]


def request_lines(captured: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in captured if line["event"] == "request"]


async def test_by_default_a_successful_client_request_writes_no_access_line(client: httpx.AsyncClient) -> None:
    with capture_logs(processors=MERGE) as captured:
        assert (await client.post("/breakers/quiet/acquire", headers=CLIENT)).status_code == 200
        assert (await client.post("/breakers/quiet/record", json={"outcome": "success"}, headers=CLIENT)).is_success
        assert (await client.get("/breakers/quiet", headers=CLIENT)).status_code == 200
    assert request_lines(captured) == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/breakers/x/record", b'{"outcome": "maybe"}', 422),  # the short path's route, refused
        ("POST", "/breakers/x/acquire", b"{", 400),
        ("GET", "/nowhere", None, 404),
    ],
)
async def test_every_error_writes_its_access_line(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    headers = {**CLIENT, "Content-Type": "application/json", "X-Correlation-ID": "err-1"}
    with capture_logs(processors=MERGE) as captured:
        response = await client.request(method, path, content=body, headers=headers)
    assert response.status_code == status
    (line,) = request_lines(captured)
    assert (line["status"], line["log_level"], line["correlation_id"]) == (status, "warning", "err-1")


async def test_every_admin_action_writes_an_info_line_with_actor_and_reason(client: httpx.AsyncClient) -> None:
    with capture_logs(processors=MERGE) as captured:
        response = await client.post(
            "/breakers/drill/force-open?create=true", json={"reason": "game day"}, headers=ADMIN
        )
    assert response.status_code == 200
    (line,) = request_lines(captured)
    assert (line["log_level"], line["actor"], line["reason"], line["breaker"]) == (
        "info",
        "test-admin",
        "game day",
        "drill",
    )


async def test_an_admin_token_reading_is_not_an_admin_action(client: httpx.AsyncClient) -> None:
    with capture_logs(processors=MERGE) as captured:
        assert (await client.get("/breakers", headers=ADMIN)).status_code == 200
    assert request_lines(captured) == []


@pytest.fixture
async def sampled_app() -> AsyncIterator[Starlette]:
    settings = make_settings(access_log_sample=0.25)
    async with running_app(settings, memory_store(settings)) as (app, _):
        yield app


@pytest.mark.parametrize(("draw", "logged"), [(0.1, True), (0.3, False)])
async def test_a_sample_of_the_other_requests_is_logged(
    sampled_app: Starlette, monkeypatch: pytest.MonkeyPatch, draw: float, logged: bool
) -> None:
    import httpx

    monkeypatch.setattr(random, "random", lambda: draw)
    transport = httpx.ASGITransport(app=sampled_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://breaker.test") as client:
        with capture_logs(processors=MERGE) as captured:
            await client.post("/breakers/sampled/acquire", headers=CLIENT)
            await client.get("/breakers", headers=CLIENT)
    assert len(request_lines(captured)) == (2 if logged else 0)


def test_the_sample_bounds_mean_none_and_every_line() -> None:
    scope = {"method": "GET", "path": "/breakers", "type": "http"}
    with capture_logs() as captured:
        AccessLog(0.0).finish(scope, 200, 0.0)
        AccessLog(1.0).finish(scope, 200, 0.0)
    assert len(captured) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_denials_are_logged_once_a_second_per_breaker_with_their_count() -> None:
    clock = FakeClock()
    denials = DenialLog(clock=clock)
    with capture_logs() as captured:
        for _ in range(5):
            denials.denied("a", state=State.OPEN, retry_after_s=30.0)
        denials.denied("b", state=State.OPEN)
        clock.now += 1.0
        denials.denied("a", state=State.OPEN, retry_after_s=29.0)
    assert [(line["breaker"], line["denied"]) for line in captured] == [("a", 1), ("b", 1), ("a", 5)]
    assert captured[0]["event"] == "calls denied"
    assert (captured[0]["state"], captured[0]["retry_after_s"], captured[0]["log_level"]) == ("OPEN", 30.0, "info")


async def test_a_denied_acquire_is_logged_with_its_correlation_id(app: Starlette, client: httpx.AsyncClient) -> None:
    context_of(app).denials = DenialLog(clock=FakeClock())
    await client.post("/breakers/shut/force-open?create=true", json={"reason": "test"}, headers=ADMIN)
    with capture_logs(processors=MERGE) as captured:
        for n in range(3):
            response = await client.post("/breakers/shut/acquire", headers={**CLIENT, "X-Correlation-ID": f"d-{n}"})
            assert response.json()["allowed"] is False
    (line,) = [line for line in captured if line["event"] == "calls denied"]
    assert (line["breaker"], line["correlation_id"], line["denied"]) == ("shut", "d-0", 1)
