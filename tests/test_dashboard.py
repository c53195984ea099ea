"""The dashboard in a real browser: Playwright drives Debian's chromium against two real replicas on one Redis, with
client tokens set (as deployed).

The page asks for a token once, follows `/events` live (a breaker tripped through the API on the other replica
turns OPEN without a reload), and force-opens a breaker through its dialog (reason, TTL, confirm) with the admin
token: both replicas answer OPEN. The time from the click to OPEN on each replica is printed (a figure, not an
assertion). Screenshots go to test-artifacts/ (gitignored).

Needs /usr/bin/chromium (`apt-get install chromium`); without it the test fails and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from tests._waiting import wait_until
from tests.fixtures.service import ADMIN_HEADERS, ADMIN_TOKEN, CLIENT_HEADERS, CLIENT_TOKEN, REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio
    from playwright.async_api import Browser, Page, Route

    from tests.fixtures.service import ServiceFactory, ServiceProcess

pytestmark = pytest.mark.browser

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS: Final = REPO_ROOT / "test-artifacts"
UI_TIMEOUT_MS: Final = 20_000


def effective_state(snapshot: dict[str, Any]) -> str:
    """v1.1's effective `state`; v1 kept the force beside the machine's state."""
    force = snapshot.get("force")
    if isinstance(force, dict):
        return str(force["mode"])
    return str(snapshot.get("forced") or snapshot["state"])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test drives Debian's chromium (`apt-get install chromium`)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def replicas(
    service_factory: ServiceFactory, redis_url: str, redis_client: redis.asyncio.Redis
) -> list[ServiceProcess]:
    return [service_factory(redis_url), service_factory(redis_url)]


@contextlib.asynccontextmanager
async def clients(replicas: list[ServiceProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=r.url, headers=CLIENT_HEADERS, timeout=10.0))
            for r in replicas
        ]


async def sign_in(page: Page, token: str) -> None:
    await expect(page.locator("#token-dialog")).to_be_visible()
    await page.fill("#token-input", token)
    await page.click("#token-submit")
    await expect(page.locator("#token-dialog")).to_be_hidden()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


async def test_the_dashboard_follows_live_and_force_opens_on_every_replica(
    browser: Browser, replicas: list[ServiceProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    first = replicas[0]
    async with clients(replicas) as (one, two):
        for name in ("payments", "ledger"):
            created = await two.put(f"/breakers/{name}", json={"failure_threshold": 2}, headers=ADMIN_HEADERS)
            assert created.status_code == 200, created.text

        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        await page.goto(first.url + "/")
        await sign_in(page, CLIENT_TOKEN)  # client tokens are set: nothing shows without one
        payments = page.locator('tr[data-breaker="payments"] [data-role="state"]')
        await expect(payments).to_have_text("CLOSED")
        await expect(page.locator("#live-text")).to_have_text("live")
        await expect(page.locator("#store-text")).to_have_text("redis ok")
        await expect(page.locator("#mode-text")).to_have_text("NORMAL")
        await expect(page.locator("#audit tr").first).to_contain_text("configure")  # the PUTs above
        await shot(page, "1-signed-in")

        # Tripped through the API on the other replica: the page turns it OPEN without a reload.
        for _ in range(2):
            answer = await two.post("/breakers/payments/record", json={"outcome": "failure"})
            assert answer.status_code == 200, answer.text
        await expect(payments).to_have_text("OPEN")
        row = page.locator('tr[data-breaker="payments"]')
        await expect(row).to_contain_text("CLOSED → OPEN")
        await expect(row).to_contain_text("automatic · failure threshold reached")
        await shot(page, "2-tripped-live")

        # Force-open through the dialog, with the admin token (a client token may not).
        await page.click("#sign-out")
        await sign_in(page, ADMIN_TOKEN)
        await expect(page.locator("#live-text")).to_have_text("live")
        await page.locator('tr[data-breaker="ledger"]').get_by_role("button", name="Force open…").click()
        await page.fill("#action-reason", "INC-42 provider outage")
        await page.fill("#action-ttl", "600")
        await page.click("#action-review")
        summary = page.locator("#action-summary")
        await expect(summary).to_contain_text('Force OPEN "ledger" for 600 s')
        await shot(page, "3-confirm")
        clicked = time.perf_counter()
        await page.click("#action-confirm-button")
        opened_after_s = await open_on_each(one, two, "ledger", clicked)

        ledger = page.locator('tr[data-breaker="ledger"] [data-role="state"]')
        await expect(ledger).to_have_text("OPEN · forced")
        audit = page.locator("#audit tr").first
        await expect(audit).to_contain_text("ledger")
        await expect(audit).to_contain_text("force-open")
        await expect(audit).to_contain_text("test-admin")
        await expect(audit).to_contain_text("INC-42 provider outage")
        await page.locator('tr[data-breaker="ledger"]').get_by_role("button", name="History").click()
        await expect(page.locator("#history tr").first).to_contain_text("INC-42 provider outage")
        await shot(page, "4-forced-open")
        await page.close()

    figure = (
        f"dashboard force-open: click -> OPEN on replica 1 in {opened_after_s[0] * 1000:.0f} ms, "
        f"on replica 2 in {opened_after_s[1] * 1000:.0f} ms"
    )
    (ARTIFACTS / "dashboard-force-open-timing.txt").write_text(figure + "\n")
    with capsys.disabled():
        print("\n" + figure)


async def open_on_each(one: httpx.AsyncClient, two: httpx.AsyncClient, name: str, since: float) -> list[float]:
    """Seconds from `since` until each replica answers `name` as OPEN."""
    seen: dict[int, float] = {}

    async def both_open() -> bool:
        for index, client in enumerate((one, two)):
            if index not in seen and effective_state((await client.get(f"/breakers/{name}")).json()) == "OPEN":
                seen[index] = time.perf_counter() - since
        return len(seen) == 2

    await wait_until(both_open, f"{name} to be OPEN on both replicas", interval_s=0.005)
    return [seen[0], seen[1]]


def sse(kind: str, data: object) -> str:
    return f"event: {kind}\nid: 1-0\ndata: {json.dumps(data)}\n\n"


async def test_the_dashboard_reads_paged_snapshots_and_ignores_unknown_event_kinds(
    browser: Browser, service_factory: ServiceFactory
) -> None:
    """A stream from a newer service: the opening snapshot in pages, kinds this page does not know, a keepalive."""
    service = service_factory(None)
    async with httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS) as client:
        listing = (await client.get("/breakers")).json()["breakers"]
    first, second = listing[0], listing[1]
    tripped = {**second, "state": "OPEN", "generation": second["generation"] + 1, "opened_at": time.time()}
    stream = (
        sse("snapshot", {"breakers": [first], "more": True})
        + sse("telemetry", {"anything": ["a", "new", "kind"]})
        + ": keepalive\n\n"
        + sse("snapshot", {"breakers": [second], "more": False})
        + sse("breaker", tripped)
    )
    page = await browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    async def canned(route: Route) -> None:
        await route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=stream)

    await page.route("**/events", canned)
    await page.goto(service.url + "/")
    await sign_in(page, CLIENT_TOKEN)

    rows = page.locator("#rows tr")
    await expect(page.locator(f'tr[data-breaker="{second["name"]}"] [data-role="state"]')).to_have_text("OPEN")
    await expect(rows).to_have_count(2)  # the snapshot's pages are the whole list: the others are not shown
    await expect(page.locator(f'tr[data-breaker="{first["name"]}"] [data-role="state"]')).to_have_text("CLOSED")
    await shot(page, "5-paged-snapshot")
    await page.close()
    assert errors == []


async def test_a_force_whose_answer_is_lost_is_sent_again_under_its_key_and_applied_once(
    browser: Browser, replicas: list[ServiceProcess]
) -> None:
    async with clients(replicas) as (one, _):
        created = await one.put("/breakers/billing", json={"failure_threshold": 2}, headers=ADMIN_HEADERS)
        assert created.status_code == 200, created.text
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        keys: list[str | None] = []

        async def first_answer_lost(route: Route) -> None:
            keys.append(route.request.headers.get("idempotency-key"))
            if len(keys) == 1:
                await route.fetch()  # the service applies it...
                await route.abort("connectionreset")  # ...and the page never hears back
            else:
                await route.continue_()

        await page.route("**/breakers/billing/force-open", first_answer_lost)
        await page.goto(replicas[0].url + "/")
        await sign_in(page, ADMIN_TOKEN)
        await page.locator('tr[data-breaker="billing"]').get_by_role("button", name="Force open…").click()
        await page.fill("#action-reason", "INC-7 card processor down")
        await page.click("#action-review")
        await page.click("#action-confirm-button")

        await expect(page.locator("#notice")).to_have_text("Force OPEN billing: done.")  # after the second answer
        await expect(page.locator('tr[data-breaker="billing"] [data-role="state"]')).to_have_text("OPEN · forced")
        assert keys[0] is not None
        assert keys == [keys[0], keys[0]], "sent twice, under one key"
        history = (await one.get("/breakers/billing/history")).json()["transitions"]
        assert [t["reason"] for t in history].count("INC-7 card processor down") == 1, history
        audit = (await one.get("/audit")).json()["entries"]
        assert [e["action"] for e in audit if e["name"] == "billing"] == ["force-open", "configure"]
        await page.close()
