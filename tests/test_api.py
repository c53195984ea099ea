"""The v1 HTTP API: every route's answers, and every kind of bad input refused with state untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from breaker_client.protocol.models import BreakerConfig, State
from breaker_service.store.breaker_memory import MemoryStore
from tests.fixtures.app import (
    ADMIN,
    CLIENT,
    MAX_BODY_BYTES,
    SEED_BREAKERS,
    assert_error,
    make_settings,
    running_app,
    store_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from starlette.applications import Starlette

PROBE: Final = "probe"
UNKNOWN: Final = "never-created"
LONG_NAME: Final = "a" * 129
BAD_NAMES: Final = (LONG_NAME, "bad%20name", "-leading-dash", ".dot", "semi;colon", "%C3%A9t%C3%A9")


async def state_of(app: Starlette) -> tuple[object, ...]:
    """Everything a bad request must leave alone: the names, the probe's snapshot and history."""
    store = store_of(app)
    return (await store.names(), await store.snapshot(PROBE), await store.history(PROBE))


@pytest.fixture
async def probed(any_app: Starlette, any_client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """`any_client`, with a breaker `probe` that has counts and history; asserts nothing changed afterwards."""
    await any_client.post(f"/breakers/{PROBE}/record", json={"outcome": "failure"}, headers=CLIENT)
    await any_client.post(f"/breakers/{PROBE}/force-open?create=true", json={"reason": "setup"}, headers=ADMIN)
    before = await state_of(any_app)
    yield any_client
    assert await state_of(any_app) == before


# -- the happy paths ----------------------------------------------------------------------------------------------


async def test_list_has_the_seed_breakers(client: httpx.AsyncClient) -> None:
    response = await client.get("/breakers", headers=CLIENT)
    assert response.status_code == 200
    assert [b["name"] for b in response.json()["breakers"]] == list(SEED_BREAKERS)


async def test_get_answers_a_snapshot(client: httpx.AsyncClient) -> None:
    body = (await client.get("/breakers/openai", headers=CLIENT)).json()
    assert body["state"] == "CLOSED"
    assert body["forced"] is None
    assert body["counts"] == {"success": 0, "failure": 0, "rejected": 0}
    assert body["config"]["failure_threshold"] == 5


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/history"), ("DELETE", "")])
async def test_unknown_breaker_is_404(client: httpx.AsyncClient, method: str, suffix: str) -> None:
    response = await client.request(method, f"/breakers/{UNKNOWN}{suffix}", headers=ADMIN)
    assert_error(response, 404, "ORC_009")


async def test_reset_of_unknown_breaker_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/breakers/{UNKNOWN}/reset", json={"reason": "r"}, headers=ADMIN)
    assert_error(response, 404, "ORC_009")


async def test_acquire_accepts_an_empty_body_and_creates_the_breaker(client: httpx.AsyncClient) -> None:
    empty = await client.post("/breakers/fresh/acquire", headers=CLIENT)
    braces = await client.post("/breakers/fresh/acquire", json={}, headers=CLIENT)
    assert empty.json()["allowed"] is braces.json()["allowed"] is True
    assert (await client.get("/breakers/fresh", headers=CLIENT)).status_code == 200


async def test_failures_open_the_breaker_and_acquire_is_then_denied(client: httpx.AsyncClient) -> None:
    snapshot = (
        await client.post("/breakers/dep/record", json={"outcome": "failure", "count": 5}, headers=CLIENT)
    ).json()
    assert snapshot["state"] == "OPEN"
    decision = await client.post("/breakers/dep/acquire", json={}, headers=CLIENT)
    assert decision.status_code == 200
    assert decision.json()["allowed"] is False
    assert decision.json()["retry_after_s"] > 0


async def test_put_merges_the_body_over_the_defaults_and_audits(client: httpx.AsyncClient) -> None:
    response = await client.put("/breakers/tuned?reason=tuning", json={"open_timeout_s": 5}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["config"]["open_timeout_s"] == 5.0
    assert response.json()["config"]["failure_threshold"] == 5
    history = (await client.get("/breakers/tuned/history", headers=CLIENT)).json()["transitions"]
    assert history[0]["actor"] == "test-admin"
    assert history[0]["reason"] == "tuning"


async def test_patch_changes_only_the_given_fields_and_audits(client: httpx.AsyncClient) -> None:
    await client.put("/breakers/tuned", json={"open_timeout_s": 5, "failure_threshold": 7}, headers=ADMIN)

    response = await client.patch("/breakers/tuned?reason=tighter", json={"failure_threshold": 2}, headers=ADMIN)

    assert response.status_code == 200
    assert (response.json()["config"]["failure_threshold"], response.json()["config"]["open_timeout_s"]) == (2, 5.0)
    history = (await client.get("/breakers/tuned/history", headers=CLIENT)).json()["transitions"]
    assert (history[0]["actor"], history[0]["reason"]) == ("test-admin", "tighter")


async def test_patch_naming_both_probe_fields_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.put("/breakers/tuned", json={}, headers=ADMIN)

    response = await client.patch("/breakers/tuned", json={"success_threshold": 5}, headers=ADMIN)
    unknown = await client.patch("/breakers/nobody", json={"failure_threshold": 2}, headers=ADMIN)
    as_client = await client.patch("/breakers/tuned", json={"failure_threshold": 2}, headers=CLIENT)

    error = assert_error(response, 422, "ORC_001")
    assert "success_threshold" in error["message"]
    assert "half_open_max_calls" in error["message"]
    assert (await client.get("/breakers/tuned", headers=CLIENT)).json()["config"]["success_threshold"] == 3
    assert_error(unknown, 404, "ORC_009")
    assert_error(as_client, 403, "ORC_008")


async def test_force_close_reset_and_history(client: httpx.AsyncClient) -> None:
    await client.post(
        "/breakers/openai/force-open?create=true", json={"reason": "maintenance", "ttl_s": 60}, headers=ADMIN
    )
    closed = await client.post("/breakers/openai/force-close?create=true", json={"reason": "back"}, headers=ADMIN)
    assert closed.json()["forced"] == State.CLOSED
    reset = (await client.post("/breakers/openai/reset", json={"reason": "clean"}, headers=ADMIN)).json()
    assert reset["forced"] is None
    assert reset["state"] == "CLOSED"
    transitions = (await client.get("/breakers/openai/history", headers=CLIENT)).json()["transitions"]
    assert [t["reason"] for t in transitions] == ["clean", "back", "maintenance"]
    assert {t["actor"] for t in transitions} == {"test-admin"}
    assert set(transitions[0]) == {"name", "from", "to", "at", "reason", "actor", "generation"}
    limited = (await client.get("/breakers/openai/history?limit=1", headers=CLIENT)).json()["transitions"]
    assert limited == transitions[:1]


async def test_delete_answers_204_then_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/breakers/openai?reason=retired", headers=ADMIN)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get("/breakers/openai", headers=CLIENT), 404, "ORC_009")


async def test_breaker_cap_is_409() -> None:
    settings = make_settings(max_breakers=5)
    store = MemoryStore(resolve_config=lambda _: BreakerConfig(), max_breakers=5)
    async with running_app(settings, store) as (_, client):
        assert_error(await client.post("/breakers/sixth/acquire", headers=CLIENT), 409, "ORC_002")
        assert len((await client.get("/breakers", headers=CLIENT)).json()["breakers"]) == 5


async def test_metrics_count_decisions_and_outcomes(client: httpx.AsyncClient) -> None:
    await client.post("/breakers/openai/acquire", headers=CLIENT)
    await client.post("/breakers/openai/record", json={"outcome": "success", "count": 3}, headers=CLIENT)
    response = await client.get("/metrics", headers=CLIENT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'breaker_decisions_total{allowed="true",breaker="openai"} 1.0' in text
    assert 'breaker_calls_total{breaker="openai",kind="success"} 3.0' in text
    assert 'route="/breakers/{name}/acquire"' in text


async def test_openapi_documents_every_route(app: Starlette, client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    routed = {(r.path, m) for r in app.routes for m in getattr(r, "methods", ()) if m != "HEAD"}  # type: ignore[attr-defined]
    assert documented == routed
    schemas = document["components"]["schemas"]
    assert {"Snapshot", "Decision", "Outcome", "BreakerConfig", "ForceRequest", "ErrorBody"} <= set(schemas)
    record = document["paths"]["/breakers/{name}/record"]["post"]
    assert record["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Outcome"}


async def test_openapi_says_what_is_served(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    acquire = paths["/breakers/{name}/acquire"]["post"]
    assert acquire["requestBody"]["required"] is False, "an empty body is `{}`"
    assert "lease" in schemas["AcquireRequest"]["properties"]
    record = paths["/breakers/{name}/record"]["post"]
    assert set(record["responses"]) == {"200", "400", "401", "404", "409", "413", "415", "422", "500", "503"}
    assert record["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "ORC_010" in record["responses"]["413"]["description"]
    assert "403" in paths["/breakers/{name}"]["patch"]["responses"]
    assert paths["/breakers/{name}"]["patch"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConfigPatch"
    }
    dependencies = paths["/health/dependencies"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/DependenciesDetail"} in dependencies["oneOf"]
    ready = paths["/health/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready == {"$ref": "#/components/schemas/Health"}
    assert {"state", "machine_state", "force"} <= set(schemas["Snapshot"]["properties"])


async def test_dashboard_is_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "force-open" in response.text


# -- bad input: the contract's error, never a 500, nothing changed ------------------------------------------------

_P = f"/breakers/{PROBE}"
BAD_BODIES: Final[list[tuple[str, str, str, bytes, int]]] = [
    # (method, path, label, body, status); all ORC_001
    ("POST", f"{_P}/acquire", "malformed", b"{", 400),
    ("POST", f"{_P}/acquire", "unknown field", b'{"x": 1}', 422),
    ("POST", f"{_P}/acquire", "not an object", b"[]", 422),
    ("POST", f"{UNKNOWN}/acquire", "malformed, unknown breaker", b"nope", 400),
    ("POST", f"{_P}/record", "empty", b"", 400),
    ("POST", f"{_P}/record", "malformed", b'{"outcome": ', 400),
    ("POST", f"{_P}/record", "not utf-8", b'{"outcome": "\xff"}', 400),
    ("POST", f"{_P}/record", "missing outcome", b"{}", 422),
    ("POST", f"{_P}/record", "unknown outcome", b'{"outcome": "maybe"}', 422),
    ("POST", f"{_P}/record", "unknown field", b'{"outcome": "success", "extra": 1}', 422),
    ("POST", f"{_P}/record", "count as string", b'{"outcome": "success", "count": "2"}', 422),
    ("POST", f"{_P}/record", "count zero", b'{"outcome": "success", "count": 0}', 422),
    ("POST", f"{_P}/record", "count negative", b'{"outcome": "failure", "count": -1}', 422),
    ("POST", f"{_P}/record", "count too big", b'{"outcome": "failure", "count": 1000001}', 422),
    ("POST", f"{_P}/record", "count float", b'{"outcome": "failure", "count": 1.5}', 422),
    ("POST", f"{_P}/record", "negative duration", b'{"outcome": "success", "duration_ms": -1}', 422),
    ("POST", f"{_P}/record", "negative generation", b'{"outcome": "success", "generation": -1}', 422),
    ("POST", f"{_P}/record", "permit with count", b'{"outcome": "success", "permit": "p", "count": 2}', 422),
    ("POST", f"{UNKNOWN}/record", "bad, unknown breaker", b'{"outcome": "success", "count": 0}', 422),
    ("PUT", _P, "malformed", b"{,}", 400),
    ("PUT", _P, "unknown field", b'{"failure_treshold": 3}', 422),
    ("PUT", _P, "threshold zero", b'{"failure_threshold": 0}', 422),
    ("PUT", _P, "negative timeout", b'{"open_timeout_s": -1}', 422),
    ("PUT", _P, "timeout too long", b'{"open_timeout_s": 86401}', 422),
    ("PUT", _P, "rate above one", b'{"window_s": 10, "min_calls": 5, "failure_rate": 1.5}', 422),
    ("PUT", _P, "window without rate", b'{"window_s": 10}', 422),
    ("PUT", _P, "max below open timeout", b'{"open_timeout_s": 100, "max_open_timeout_s": 50}', 422),
    ("PUT", _P, "wrong type", b'{"success_threshold": "three"}', 422),
    ("PUT", f"{UNKNOWN}", "bad, unknown breaker", b'{"failure_threshold": -3}', 422),
    ("PUT", _P, "more probe successes than probes", b'{"success_threshold": 4}', 422),
    ("PATCH", _P, "malformed", b"{,}", 400),
    ("PATCH", _P, "unknown field", b'{"failure_treshold": 3}', 422),
    ("PATCH", _P, "threshold zero", b'{"failure_threshold": 0}', 422),
    ("PATCH", _P, "merged: more probe successes than probes", b'{"success_threshold": 4}', 422),
    ("PATCH", _P, "merged: window without rate", b'{"window_s": 10}', 422),
    ("POST", f"{_P}/force-open?create=true", "missing reason", b"{}", 422),
    ("POST", f"{_P}/force-open?create=true", "empty reason", b'{"reason": ""}', 422),
    ("POST", f"{_P}/force-open?create=true", "reason too long", b'{"reason": "' + b"r" * 501 + b'"}', 422),
    ("POST", f"{_P}/force-open?create=true", "ttl zero", b'{"reason": "r", "ttl_s": 0}', 422),
    ("POST", f"{_P}/force-open?create=true", "ttl negative", b'{"reason": "r", "ttl_s": -5}', 422),
    ("POST", f"{_P}/force-open?create=true", "ttl too long", b'{"reason": "r", "ttl_s": 1e9}', 422),
    ("POST", f"{_P}/force-open?create=true", "unknown field", b'{"reason": "r", "mode": "OPEN"}', 422),
    ("POST", f"{_P}/force-close?create=true", "malformed", b"reason=r", 400),
    ("POST", f"{_P}/force-close?create=true", "reason not a string", b'{"reason": 5}', 422),
    ("POST", f"{UNKNOWN}/force-close?create=true", "bad, unknown breaker", b'{"reason": 5}', 422),
    ("POST", f"{_P}/reset", "missing reason", b"{}", 422),
    ("POST", f"{_P}/reset", "ttl not allowed", b'{"reason": "r", "ttl_s": 5}', 422),
    ("POST", f"{_P}/reset", "empty", b"", 400),
]


@pytest.mark.parametrize(("method", "path", "label", "body", "status"), BAD_BODIES, ids=lambda v: str(v)[:40])
async def test_bad_body_is_refused(
    probed: httpx.AsyncClient, method: str, path: str, label: str, body: bytes, status: int
) -> None:
    path = path if path.startswith("/") else f"/breakers/{path}"
    response = await probed.request(method, path, content=body, headers=ADMIN)
    error = assert_error(response, status, "ORC_001")
    assert error["details"]["location"] == "body"
    if status == 422:
        assert error["details"]["path"].startswith("$")


async def test_validation_error_names_the_field(probed: httpx.AsyncClient) -> None:
    response = await probed.post(f"{_P}/record", json={"outcome": "success", "count": 0}, headers=CLIENT)
    error = assert_error(response, 422, "ORC_001")
    assert error["details"] == {"location": "body", "path": "$.count"}
    assert "count" in error["message"]


ROUTES_WITH_NAME: Final = [
    ("GET", ""),
    ("PUT", ""),
    ("DELETE", ""),
    ("POST", "/acquire"),
    ("POST", "/record"),
    ("POST", "/force-open?create=true"),
    ("POST", "/force-close?create=true"),
    ("POST", "/reset"),
    ("GET", "/history"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(("method", "suffix"), ROUTES_WITH_NAME)
async def test_bad_name_is_refused(probed: httpx.AsyncClient, method: str, suffix: str, name: str) -> None:
    body = b'{"outcome": "success", "reason": "r"}' if method != "GET" else None
    response = await probed.request(method, f"/breakers/{name}{suffix}", content=body, headers=ADMIN)
    error = assert_error(response, 422, "ORC_001")
    assert error["details"] == {"location": "path", "path": "name"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{_P}/history?limit=0"),
        ("GET", f"{_P}/history?limit=1001"),
        ("GET", f"{_P}/history?limit=ten"),
        ("GET", f"{_P}/history?limit=-1"),
        ("PUT", f"{_P}?reason="),
        ("PUT", f"{_P}?reason={'r' * 501}"),
        ("DELETE", f"{_P}?reason="),
        ("DELETE", f"{_P}?reason={'r' * 501}"),
    ],
)
async def test_bad_query_is_refused(probed: httpx.AsyncClient, method: str, path: str) -> None:
    body = b"{}" if method == "PUT" else None
    error = assert_error(await probed.request(method, path, content=body, headers=ADMIN), 422, "ORC_001")
    assert error["details"]["location"] == "query"


WRITES: Final = [
    ("PUT", _P),
    ("POST", f"{_P}/acquire"),
    ("POST", f"{_P}/record"),
    ("POST", f"{_P}/force-open?create=true"),
    ("POST", f"{_P}/force-close?create=true"),
    ("POST", f"{_P}/reset"),
    ("POST", f"/breakers/{UNKNOWN}/acquire"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_oversized_body_with_content_length_is_413(probed: httpx.AsyncClient, method: str, path: str) -> None:
    body = b'{"reason": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = await probed.request(method, path, content=body, headers=ADMIN)
    error = assert_error(response, 413, "ORC_010")
    assert error["details"] == {"max_body_bytes": MAX_BODY_BYTES}


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_oversized_chunked_body_is_413_before_it_is_read_whole(
    probed: httpx.AsyncClient, method: str, path: str
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(100):
            sent.append(index)
            yield b"x" * 1024

    response = await probed.request(method, path, content=chunks(), headers=ADMIN)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "ORC_010")
    assert len(sent) < 100


async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    reason = "r" * 400
    body = b'{"reason": "' + reason.encode() + b'"}'
    padded = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_BODY_BYTES
    response = await client.post("/breakers/openai/reset", content=padded, headers=ADMIN)
    assert response.status_code == 200


async def test_unknown_route_is_404_with_the_error_body(probed: httpx.AsyncClient) -> None:
    error = assert_error(await probed.get("/no/such/route", headers=ADMIN), 404, "ORC_009")
    assert "/no/such/route" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/breakers", ["GET", "HEAD"]),
        ("POST", _P, ["DELETE", "GET", "HEAD", "PATCH", "PUT"]),
        ("GET", f"{_P}/acquire", ["POST"]),
        ("DELETE", f"{_P}/history", ["GET", "HEAD"]),
        ("POST", "/health", ["GET", "HEAD"]),
    ],
)
async def test_wrong_method_is_405_with_the_error_body(
    probed: httpx.AsyncClient, method: str, path: str, allowed: list[str]
) -> None:
    response = await probed.request(method, path, content=b"{}", headers=ADMIN)
    error = assert_error(response, 405, "ORC_001")
    assert error["details"] == {"allowed": allowed}
    assert response.headers["allow"] == ", ".join(allowed)
