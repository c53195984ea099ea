from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.client.conftest import ClientFactory


async def ok() -> str:
    return "ok"


async def test_smoke(make_client: ClientFactory) -> None:
    client, transport = await make_client()
    breaker = client.breaker("payments")
    assert await breaker.call(ok) == "ok"
    await client.wait_for(lambda c: c.view("payments") is not None)
    assert await breaker.call(ok) == "ok"
    assert await breaker.call(ok) == "ok"
    await client.flush()
    print([(e.method, e.path, e.body, e.status) for e in transport.exchanges])
