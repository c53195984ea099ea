"""Bearer tokens and roles: admin routes never open, reader routes open only without client tokens."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Final

import pytest

from breaker_service.auth import Authenticator, Role
from breaker_service.errors import ForbiddenError, UnauthenticatedError
from tests.fixtures.app import (
    ADMIN,
    ADMIN_TOKEN,
    CLIENT,
    CLIENT_TOKEN,
    assert_error,
    make_settings,
    memory_store,
    running_app,
)

if TYPE_CHECKING:
    import httpx

ADMIN_CALLS: Final = [
    ("PUT", "/breakers/openai", b"{}"),
    ("DELETE", "/breakers/openai", None),
    ("POST", "/breakers/openai/force-open?create=true", b'{"reason": "r"}'),
    ("POST", "/breakers/openai/force-close?create=true", b'{"reason": "r"}'),
    ("POST", "/breakers/openai/reset", b'{"reason": "r"}'),
    ("PUT", "/degradation", b'{"mode": "EMERGENCY", "reason": "r"}'),
]
CLIENT_CALLS: Final = [
    ("GET", "/breakers", None),
    ("GET", "/breakers/openai", None),
    ("GET", "/breakers/openai/history", None),
    ("POST", "/breakers/openai/acquire", b"{}"),
    ("POST", "/breakers/openai/record", b'{"outcome": "success"}'),
    ("GET", "/health/dependencies", None),
    ("GET", "/metrics", None),
    ("GET", "/degradation", None),
]
OPEN_CALLS: Final = [("GET", "/health", None), ("GET", "/health/ready", None), ("GET", "/openapi.json", None)]
BAD_HEADERS: Final = [
    {"Authorization": "Bearer not-a-known-token"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": "Bearer"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
]


def authenticator(*, open_reads: bool = False) -> Authenticator:
    return Authenticator(
        admin_tokens={"ops": "admin-secret"}, client_tokens=None if open_reads else {"svc": "client-secret"}
    )


def test_the_token_name_is_the_actor() -> None:
    assert authenticator().authorize("Bearer admin-secret", Role.ADMIN) == "ops"
    assert authenticator().authorize("bearer client-secret", Role.CLIENT) == "svc"


def test_admin_token_may_do_what_a_client_may() -> None:
    assert authenticator().authorize("Bearer admin-secret", Role.CLIENT) == "ops"


def test_client_token_is_forbidden_on_admin_routes() -> None:
    with pytest.raises(ForbiddenError):
        authenticator().authorize("Bearer client-secret", Role.ADMIN)


def test_reads_are_open_without_client_tokens_but_admin_is_not() -> None:
    open_auth = authenticator(open_reads=True)
    assert open_auth.authorize(None, Role.CLIENT) is None
    with pytest.raises(UnauthenticatedError):
        open_auth.authorize(None, Role.ADMIN)
    with pytest.raises(UnauthenticatedError):
        open_auth.authorize("Bearer guess", Role.CLIENT)


def test_no_admin_tokens_means_no_admin() -> None:
    with pytest.raises(UnauthenticatedError):
        Authenticator(admin_tokens={}, client_tokens=None).authorize("Bearer anything", Role.ADMIN)


def test_every_token_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(a)
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    many = Authenticator(admin_tokens={"a": "t1", "b": "t2"}, client_tokens={"c": "t3", "d": "t4"})
    assert many.authorize("Bearer t1", Role.CLIENT) == "a"
    assert calls == [b"t1", b"t2", b"t3", b"t4"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS + CLIENT_CALLS)
async def test_no_token_is_401(client: httpx.AsyncClient, method: str, path: str, body: bytes | None) -> None:
    response = await client.request(method, path, content=body)
    assert_error(response, 401, "ORC_007")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", BAD_HEADERS)
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS + CLIENT_CALLS)
async def test_bad_or_unknown_token_is_401(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    assert_error(await client.request(method, path, content=body, headers=headers), 401, "ORC_007")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_client_token_on_admin_route_is_403(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    before = (await client.get("/breakers/openai", headers=CLIENT)).json()
    assert_error(await client.request(method, path, content=body, headers=CLIENT), 403, "ORC_008")
    assert (await client.get("/breakers/openai", headers=CLIENT)).json() == before


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS + CLIENT_CALLS)
async def test_admin_token_may_call_every_route(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    response = await client.request(method, path, content=body, headers=ADMIN)
    assert response.status_code in (200, 204)


@pytest.mark.parametrize(("method", "path", "body"), OPEN_CALLS)
async def test_open_routes_need_no_token(client: httpx.AsyncClient, method: str, path: str, body: bytes | None) -> None:
    assert (await client.request(method, path, content=body)).status_code == 200


async def test_without_client_tokens_reads_are_open_and_unknown_tokens_still_refused() -> None:
    settings = make_settings(client_tokens=None)
    async with running_app(settings, memory_store(settings)) as (_, client):
        for method, path, body in CLIENT_CALLS:
            assert (await client.request(method, path, content=body)).status_code == 200
            response = await client.request(method, path, content=body, headers={"Authorization": "Bearer nope"})
            assert_error(response, 401, "ORC_007")
            response = await client.request(method, path, content=body, headers={"Authorization": CLIENT_TOKEN})
            assert_error(response, 401, "ORC_007")
        for method, path, body in ADMIN_CALLS:
            assert_error(await client.request(method, path, content=body), 401, "ORC_007")


async def test_admin_actions_are_audited_with_the_token_name(client: httpx.AsyncClient) -> None:
    await client.post("/breakers/openai/force-open?create=true", json={"reason": "incident 42"}, headers=ADMIN)
    history = (await client.get("/breakers/openai/history", headers=CLIENT)).json()["transitions"]
    assert (history[0]["actor"], history[0]["reason"]) == ("test-admin", "incident 42")
