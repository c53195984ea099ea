"""What the client says on the wire (protocol v1.1): it opts into leases, reports every outcome with a report_id,
says which failures its successes saw, and reports the calls it refused itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from breaker_client import BreakerClient, CircuitOpenError, State
from tests.client._calls import NO_RETRY, DependencyDown, down, ok
from tests.client._fake import FakeService, allowed, error, snapshot

if TYPE_CHECKING:
    from tests.client._harness import ServiceHarness
    from tests.client.conftest import ClientFactory


async def test_acquire_opts_into_the_fleet_budget(make_client: ClientFactory) -> None:
    client, transport = await make_client()

    await client.breaker("payments").call(ok)

    [acquire] = transport.to("/acquire")
    assert acquire.body == {"lease": True}


async def test_every_report_has_its_own_report_id_and_successes_say_which_failures_they_saw(
    make_client: ClientFactory,
) -> None:
    client, transport = await make_client()
    with pytest.raises(DependencyDown):
        await client.breaker("payments", retry=NO_RETRY).call(down)
    await client.breaker("payments").call(ok)  # strict: the lease comes back with its permit
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.healthy)
    for _ in range(4):
        await client.breaker("payments").call(ok)  # fast path, batched
    await client.flush()

    failure, leased, batch = (exchange.body for exchange in transport.to("/record"))
    assert (failure["outcome"], failure["failures_seen"]) == ("failure", None)
    assert (leased["outcome"], leased["failures_seen"]) == ("success", None)
    assert leased["permit"] is not None
    assert (batch["outcome"], batch["count"], batch["failures_seen"]) == ("success", 4, 1)
    assert len({failure["report_id"], leased["report_id"], batch["report_id"]}) == 3


async def test_calls_refused_while_known_open_are_reported_as_rejected(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    for _ in range(3):
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.deadline is not None)
    transport.clear()

    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            await client.breaker("payments", retry=NO_RETRY).call(ok)
    await client.flush()

    [report] = transport.to("/record")
    assert (report.body["outcome"], report.body["count"]) == ("rejected", 4)
    snapshot_after = (await service.admin("GET", "/breakers/payments")).json()
    assert snapshot_after["counts"]["rejected"] == 4
    assert snapshot_after["state"] == "OPEN"


async def test_a_report_sent_again_to_another_replica_keeps_its_report_id() -> None:
    fake = FakeService()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/acquire"):
            return allowed()
        if request.url.host == "a.example":
            return error(503, "ORC_005")  # the outcome is unknown: the client sends it again, elsewhere
        return httpx.Response(200, content=msgspec.json.encode(snapshot("payments")))

    fake.handler = handler
    client = BreakerClient(["http://a.example", "http://b.example"], transport=fake.transport, events=False)
    try:
        with pytest.raises(DependencyDown):
            await client.breaker("payments", retry=NO_RETRY).call(down)
    finally:
        await client.aclose()

    sent = fake.to("/record")
    assert [request.url.host for request in sent] == ["a.example", "b.example"]
    first, second = (msgspec.json.decode(request.content) for request in sent)
    assert first == second
    assert first["report_id"]


async def test_a_view_knows_the_breakers_failure_count_from_its_snapshot(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    with pytest.raises(DependencyDown):
        await client.breaker("payments", retry=NO_RETRY).call(down)

    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.failures == 1)
    view = client.view("payments")
    assert view is not None
    assert (view.state, view.consecutive_failures) == (State.CLOSED, 1)


async def test_after_a_reset_trust_is_earned_again_through_the_service(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, transport = await make_client()
    await client.breaker("payments").call(ok)
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.healthy)
    generation = client.view("payments").generation  # type: ignore[union-attr]

    await service.admin("POST", "/breakers/payments/reset", {"reason": "fresh start"})
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.generation > generation)
    transport.clear()
    for _ in range(3):
        await client.breaker("payments").call(ok)

    assert len(transport.to("/acquire")) == 1, "a reset starts an unproven machine: one call asks, then fast again"
