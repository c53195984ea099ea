"""Fixtures of the client tests: a real service in this process, and clients that count their requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from breaker_client import BreakerClient
from tests.client._harness import CLIENT_TOKEN, FakeClock, RecordingTransport, ServiceHarness

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    ClientFactory = Callable[..., Awaitable[tuple[BreakerClient, RecordingTransport]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def service(clock: FakeClock) -> AsyncIterator[ServiceHarness]:
    harness = ServiceHarness(clock)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def make_client(service: ServiceHarness, clock: FakeClock) -> AsyncIterator[ClientFactory]:
    """`await make_client(**options)`: a started client of `service` and the transport recording its requests.

    Unless told otherwise the client waits until its event stream is live, and flushes successes only when asked.
    """
    clients: list[BreakerClient] = []

    async def make(*, live: bool = True, **options: Any) -> tuple[BreakerClient, RecordingTransport]:
        transport = RecordingTransport()
        settings: dict[str, Any] = {"token": CLIENT_TOKEN, "clock": clock.monotonic, "flush_interval_s": 3600.0}
        client = BreakerClient(options.pop("base_url", service.url), transport=transport, **(settings | options))
        clients.append(client)
        client.start()
        if live:
            await client.wait_for(lambda c: c.live)
        return client, transport

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()
