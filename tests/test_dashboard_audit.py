"""`GET /audit`, the audit trail the dashboard shows: every admin action on a breaker, on both stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.fixtures.app import ADMIN, CLIENT, assert_error

if TYPE_CHECKING:
    import httpx


async def test_audit_lists_admin_actions_newest_first_with_actor_and_reason(any_client: httpx.AsyncClient) -> None:
    steps = [
        ("PUT", "/breakers/ledger?reason=onboard", None),
        ("POST", "/breakers/ledger/force-open?create=true", {"reason": "provider outage", "ttl_s": 600}),
        ("POST", "/breakers/ledger/force-close", {"reason": "drill over"}),
        ("POST", "/breakers/ledger/reset", {"reason": "provider back"}),
        ("DELETE", "/breakers/ledger?reason=decommissioned", None),
    ]
    for method, path, body in steps:
        content = {"json": body if body is not None else {}} if method != "DELETE" else {}
        response = await any_client.request(method, path, headers=ADMIN, **content)  # type: ignore[arg-type]
        assert response.status_code in (200, 204), response.text
    await any_client.post("/breakers/ledger/record", json={"outcome": "failure"}, headers=CLIENT)  # not an admin action

    answer = await any_client.get("/audit", headers=CLIENT)

    assert answer.status_code == 200, answer.text
    entries = answer.json()["entries"]
    assert [(e["name"], e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("ledger", "delete", "test-admin", "decommissioned"),
        ("ledger", "reset", "test-admin", "provider back"),
        ("ledger", "force-close", "test-admin", "drill over"),  # the route's name, as the request's log line has it
        ("ledger", "force-open", "test-admin", "provider outage"),
        ("ledger", "configure", "test-admin", "onboard"),
    ]
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True)
    limited = await any_client.get("/audit?limit=2", headers=CLIENT)
    assert limited.json()["entries"] == entries[:2]


async def test_audit_needs_a_reader_token_and_a_sane_limit(any_client: httpx.AsyncClient) -> None:
    assert_error(await any_client.get("/audit"), 401, "ORC_007")
    assert_error(await any_client.get("/audit?limit=0", headers=CLIENT), 422, "ORC_001")
    assert_error(await any_client.get("/audit?limit=1001", headers=ADMIN), 422, "ORC_001")
    assert (await any_client.get("/audit", headers=CLIENT)).json() == {"entries": []}
