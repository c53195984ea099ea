"""Correlation ids and log lines: echoed on every answer, in every error body, bound into every line."""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from breaker_client.protocol.models import BreakerConfig, Snapshot
from breaker_service.logs import configure_logging, pick_correlation_id
from breaker_service.store.breaker_memory import MemoryStore
from tests.fixtures.app import ADMIN, CLIENT, assert_error, make_settings, memory_store, running_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    import httpx
    from structlog.typing import EventDict


class BrokenStore(MemoryStore):
    """A store with a bug: listing breakers raises."""

    async def snapshots(self, names: Sequence[str] | None = None) -> list[Snapshot]:
        raise RuntimeError("secret internals")


@pytest.fixture
async def every_line_client() -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app that writes an access line for every request (BREAKER_ACCESS_LOG_SAMPLE=1)."""
    settings = make_settings(access_log_sample=1.0)
    async with running_app(settings, memory_store(settings)) as (_, client):
        yield client


@pytest.fixture
def json_logs() -> Iterator[io.BytesIO]:
    """The production log config, writing to a buffer instead of stdout."""
    buffer = io.BytesIO()
    configure_logging("INFO", cache=False, stream=buffer)
    yield buffer
    structlog.reset_defaults()


def lines(buffer: io.BytesIO) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize("presented", ["abc-123", "3f2c9a8e-1b2c-4d5e-8f90-123456789abc", "trace:span.1_x"])
def test_a_sane_correlation_id_is_kept(presented: str) -> None:
    assert pick_correlation_id(presented) == presented


@pytest.mark.parametrize("presented", [None, "", "a" * 129, "has space", "new\nline", "<script>", "-leading", "é"])
def test_a_missing_or_bad_correlation_id_is_replaced(presented: str | None) -> None:
    replaced = pick_correlation_id(presented)
    assert replaced != presented
    assert len(replaced) == 32


async def test_the_correlation_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/breakers", headers={**CLIENT, "X-Correlation-ID": "req-42"})
    assert response.headers["x-correlation-id"] == "req-42"


async def test_a_bad_correlation_id_is_replaced_on_the_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/breakers", headers={**CLIENT, "X-Correlation-ID": "x" * 500})
    assert response.headers["x-correlation-id"] != "x" * 500
    assert len(response.headers["x-correlation-id"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("GET", "/nowhere", None, CLIENT, 404, "ORC_009"),
        ("DELETE", "/health", None, CLIENT, 405, "ORC_001"),
        ("POST", "/breakers/x/record", b"{", CLIENT, 400, "ORC_001"),
        ("POST", "/breakers/x/record", b"{}", CLIENT, 422, "ORC_001"),
        ("POST", "/breakers/x/reset", b'{"reason": "r"}', CLIENT, 403, "ORC_008"),
        ("GET", "/breakers", None, {}, 401, "ORC_007"),
        ("POST", "/breakers/x/acquire", b"x" * 10_000, CLIENT, 413, "ORC_010"),
    ],
)
async def test_every_error_carries_the_correlation_id(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = await client.request(method, path, content=body, headers={**headers, "X-Correlation-ID": "err-7"})
    error = assert_error(response, status, code)
    assert error["correlation_id"] == "err-7"


async def test_one_canonical_line_per_request_with_the_breaker(every_line_client: httpx.AsyncClient) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await every_line_client.post("/breakers/openai/acquire", headers={**CLIENT, "X-Correlation-ID": "c-1"})
    requests = [line for line in logs if line["event"] == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["correlation_id"] == "c-1"
    assert line["breaker"] == "openai"
    assert line["actor"] == "test-client"
    assert (line["method"], line["route"], line["status"], line["log_level"]) == (
        "POST",
        "/breakers/{name}/acquire",
        200,
        "info",
    )


async def test_admin_actions_log_actor_reason_and_the_transition(client: httpx.AsyncClient) -> None:
    transition_logged = asyncio.Event()

    def notice(_: object, __: str, event: EventDict) -> EventDict:
        if event["event"] == "transition":
            transition_logged.set()
        return event

    with capture_logs(processors=[structlog.contextvars.merge_contextvars, notice]) as logs:
        await client.post("/breakers/openai/force-open?create=true", json={"reason": "drill"}, headers=ADMIN)
        # The transition line comes from the app's watch task, which runs on its own schedule.
        await asyncio.wait_for(transition_logged.wait(), timeout=10)
    request = next(line for line in logs if line["event"] == "request")
    assert (request["actor"], request["reason"], request["breaker"]) == ("test-admin", "drill", "openai")
    transition = next(line for line in logs if line["event"] == "transition")
    assert (transition["breaker"], transition["to_state"], transition["actor"]) == ("openai", "OPEN", "test-admin")
    assert transition["reason"] == "drill"


async def test_client_errors_log_a_warning(client: httpx.AsyncClient) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await client.get("/nowhere", headers={"X-Correlation-ID": "w-1"})
    (line,) = logs
    assert (line["log_level"], line["status"], line["route"], line["correlation_id"]) == (
        "warning",
        404,
        "<unmatched>",
        "w-1",
    )


async def test_an_unexpected_error_is_a_500_without_a_traceback() -> None:
    store = BrokenStore(resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store) as (_, client):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await client.get("/breakers", headers={**CLIENT, "X-Correlation-ID": "boom-1"})
    error = assert_error(response, 500, "ORC_005")
    assert error["message"] == "internal error"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    failure = next(line for line in logs if line["event"] == "unhandled exception")
    assert failure["correlation_id"] == "boom-1"
    assert isinstance(failure["exc_info"], RuntimeError)
    request = next(line for line in logs if line["event"] == "request")
    assert (request["status"], request["log_level"]) == (500, "error")


async def test_production_lines_are_json_with_the_contract_fields(
    every_line_client: httpx.AsyncClient, json_logs: io.BytesIO
) -> None:
    await every_line_client.post("/breakers/openai/acquire", headers={**CLIENT, "X-Correlation-ID": "j-1"})
    (line,) = lines(json_logs)
    assert {"timestamp", "level", "event", "correlation_id", "breaker"} <= set(line)
    assert (line["level"], line["event"], line["breaker"]) == ("info", "request", "openai")
    assert line["correlation_id"] == "j-1"


async def test_production_lines_render_exceptions_as_text(json_logs: io.BytesIO) -> None:
    store = BrokenStore(resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store) as (_, client):
        await client.get("/breakers", headers=CLIENT)
    failure = next(line for line in lines(json_logs) if line["event"] == "unhandled exception")
    assert "RuntimeError: secret internals" in str(failure["exception"])
    assert failure["level"] == "error"
    assert failure["correlation_id"] is not None


async def test_lines_outside_a_request_carry_a_null_correlation_id(json_logs: io.BytesIO) -> None:
    store = MemoryStore(resolve_config=lambda _: BreakerConfig())
    async with running_app(make_settings(), store):
        pass
    startup = lines(json_logs)
    assert startup
    assert all(line["correlation_id"] is None for line in startup)
