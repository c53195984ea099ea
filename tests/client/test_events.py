"""The event stream (parsed by httpx-sse): malformed events, and the views it keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from breaker_client import BreakerClient, CircuitOpenError, RetryPolicy, State, Transition
from breaker_client.protocol.models import BreakerList, Decision, FailureSignal
from tests.client._fake import FakeService, snapshot, sse
from tests.client._logs import capture_client_logs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def fake_client() -> AsyncIterator[tuple[BreakerClient, FakeService]]:
    fake = FakeService()
    client = BreakerClient("http://fake.example", transport=fake.transport, flush_interval_s=3600)
    yield client, fake
    await client.aclose()


async def test_malformed_events_are_skipped_and_the_stream_goes_on(
    fake_client: tuple[BreakerClient, FakeService],
) -> None:
    client, fake = fake_client
    fake.stream = [
        sse("snapshot", BreakerList(breakers=[snapshot("payments")])),
        sse("state", "{not json"),
        sse("failures", '{"name": 5}'),
        b": keepalive\n\n",
        sse("mystery", "{}"),
        sse("failures", FailureSignal(name="payments", consecutive_failures=2, generation=1)),
    ]

    with capture_client_logs() as logs:
        client.start()
        await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.consecutive_failures == 2)

    assert client.malformed_events == 2
    assert client.live
    assert [e["sse_event"] for e in logs if e["event"] == "breaker.events.malformed"] == ["state", "failures"]


async def test_events_split_over_lines_and_chunks_are_read_whole(
    fake_client: tuple[BreakerClient, FakeService],
) -> None:
    client, fake = fake_client
    signal = msgspec.json.encode(FailureSignal(name="payments", consecutive_failures=4, generation=1)).decode()
    cut = signal.index(",") + 1  # between two members: the newline that joins data lines is whitespace there
    head, tail = signal[:cut], signal[cut:]
    fake.stream = [
        sse("snapshot", BreakerList(breakers=[snapshot("payments")])),
        f"id: 2\r\nevent: failures\r\ndata: {head}\r\n".encode(),  # CRLF line ends, data over two lines
        f"data: {tail}\r\n".encode()[:5],
        f"data: {tail}\r\n\r\n".encode()[5:],  # an event cut across two chunks
    ]

    client.start()
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.consecutive_failures == 4)

    assert client.malformed_events == 0


async def test_malformed_snapshot_keeps_the_client_strict(fake_client: tuple[BreakerClient, FakeService]) -> None:
    client, fake = fake_client
    fake.stream = [sse("snapshot", '{"breakers": "nope"}')]

    client.start()
    await client.wait_for(lambda c: c.malformed_events == 1)

    assert not client.live


async def test_snapshot_replaces_what_was_known(fake_client: tuple[BreakerClient, FakeService]) -> None:
    client, fake = fake_client
    fake.stream = [
        sse("snapshot", BreakerList(breakers=[snapshot("payments"), snapshot("sms")])),
        sse("deleted", '{"name": "sms"}'),
        sse("config", snapshot("email", generation=4)),
    ]

    client.start()
    await client.wait_for(lambda c: c.view("email") is not None)

    assert client.view("sms") is None
    view = client.view("email")
    assert view is not None
    assert view.generation == 4


async def test_a_resync_reconnects_and_the_fresh_snapshot_wins_over_a_higher_generation(
    fake_client: tuple[BreakerClient, FakeService],
) -> None:
    """A degraded replica's local state made generation 5; shared state is still generation 1, CLOSED."""
    client, fake = fake_client
    made_up = snapshot("payments", generation=5, state=State.OPEN)
    fake.stream = [sse("snapshot", BreakerList(breakers=[made_up])), sse("resync", '{"name": null, "reason": "x"}')]
    fake.later = [sse("snapshot", BreakerList(breakers=[snapshot("payments", generation=1)]))]

    client.start()
    await client.wait_for(lambda c: (v := c.view("payments")) is not None and v.generation == 1 and c.live)

    assert fake.connections == 2
    view = client.view("payments")
    assert view is not None
    assert view.healthy


async def test_a_degraded_replicas_decision_does_not_replace_shared_state(
    fake_client: tuple[BreakerClient, FakeService],
) -> None:
    client, fake = fake_client
    made_up = Decision(allowed=False, state=State.OPEN, generation=5, retry_after_s=30.0, degraded=True)
    fake.handler = lambda request: httpx.Response(200, content=msgspec.json.encode(made_up))
    fake.stream = [sse("snapshot", BreakerList(breakers=[snapshot("payments", consecutive_failures=1)]))]
    client.start()
    await client.wait_for(lambda c: c.live)

    async def call() -> str:
        return "ok"

    with pytest.raises(CircuitOpenError):
        await client.breaker("payments", retry=RetryPolicy(attempts=1)).call(call)

    view = client.view("payments")
    assert view is not None
    assert view.generation == 1, "the shared generation stays"
    assert view.state is State.CLOSED


async def test_a_transition_and_the_writers_snapshot_need_no_request(
    fake_client: tuple[BreakerClient, FakeService],
) -> None:
    client, fake = fake_client
    opened = snapshot("payments", generation=2, state=State.OPEN)
    opened = msgspec.structs.replace(opened, retry_after_s=30.0, opened_at=1.0)
    transition = Transition(
        name="payments",
        from_state=State.CLOSED,
        to_state=State.OPEN,
        at=1.0,
        reason="failure threshold reached",
        actor=None,
        generation=2,
    )
    fake.stream = [
        sse("snapshot", BreakerList(breakers=[snapshot("payments")])),
        sse("state", transition),
        sse("breaker", opened),
    ]

    client.start()
    await client.wait_for(
        lambda c: (v := c.view("payments")) is not None and v.state is State.OPEN and v.deadline is not None
    )

    assert fake.requests == [], "nothing asked: the stream said it all"
    view = client.view("payments")
    assert view is not None
    assert view.deadline is not None
