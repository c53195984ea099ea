"""The Redis store and the service on a real three-node Redis Cluster (`REDIS_CLUSTER=true`).

Every script touches the one slot of its breaker's hash tag; what spans breakers (the registry, reading them all,
events) must work across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
from collections import Counter
from typing import TYPE_CHECKING, Final

import httpx
import pytest
from redis.crc import key_slot

from breaker_client.protocol.models import BreakerConfig, ConfigPatch, Outcome, State, Transition
from breaker_service.store.breaker_redis import RedisStore
from breaker_service.store.connection_redis import create_redis
from breaker_service.store.keys import state_key
from tests._waiting import wait_until
from tests.fixtures.process import HOST
from tests.fixtures.service import CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from breaker_service.events import StoreEvent
    from tests.fixtures.redis_server import RedisServerFactory
    from tests.fixtures.service import ServiceFactory

NODES: Final = 3
CLUSTER_BUS_OFFSET: Final = 10_000
CONFIG: Final = BreakerConfig(failure_threshold=5)
NAMES: Final = [f"dependency-{i}" for i in range(24)]


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, so at most 55535) is free as well."""
    for _ in range(100):
        port = random.randrange(20_000, 45_000)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + CLUSTER_BUS_OFFSET):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((HOST, candidate))
            except OSError:
                continue
        return port
    pytest.fail("no free port pair for a cluster node")


@pytest.fixture
async def cluster_url(redis_server_factory: RedisServerFactory) -> str:
    """A fresh cluster of three primaries; the URL names one of them."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.fail("the cluster tests need redis-cli, which comes with redis-server")
    nodes = [
        redis_server_factory("--cluster-enabled", "yes", "--cluster-node-timeout", "5000", port=cluster_port())
        for _ in range(NODES)
    ]
    addresses = [f"{HOST}:{node.port}" for node in nodes]
    create = await asyncio.create_subprocess_exec(
        redis_cli,
        "--cluster",
        "create",
        *addresses,
        "--cluster-replicas",
        "0",
        "--cluster-yes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(create.communicate(), timeout=60)
    if create.returncode != 0:
        pytest.fail(f"redis-cli --cluster create failed: {output.decode(errors='replace')}")

    async def every_node_says_ok() -> bool:
        infos = []
        for node in nodes:
            client = create_redis(node.url)
            try:
                infos.append(await client.execute_command("CLUSTER", "INFO"))
            finally:
                await client.aclose()
        return all(b"cluster_state:ok" in info for info in infos)

    await wait_until(every_node_says_ok, "the cluster to agree on its slots")
    return nodes[0].url


@pytest.fixture
async def cluster_store(cluster_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(create_redis(cluster_url, cluster=True), resolve_config=lambda _: CONFIG)
    await store.start()
    yield store
    await store.close()


def test_the_names_spread_over_every_node() -> None:
    slots = {key_slot(state_key(name).encode()) * NODES // 16384 for name in NAMES}
    assert slots == set(range(NODES)), "the test would not cross nodes"


async def test_breakers_on_every_node_are_created_listed_read_and_deleted(cluster_store: RedisStore) -> None:
    decisions = await asyncio.gather(*(cluster_store.acquire(name) for name in NAMES))
    await cluster_store.force(NAMES[0], State.OPEN, reason="drill", ttl_s=None, actor="ops")

    snapshots = await cluster_store.snapshots()
    await cluster_store.delete(NAMES[1], actor="ops", reason="gone")

    assert all(decision.allowed for decision in decisions)
    assert [s.name for s in snapshots] == sorted(NAMES)
    assert {s.name: s.forced for s in snapshots}[NAMES[0]] is State.OPEN
    assert (await cluster_store.history(NAMES[0]))[0].actor == "ops"
    assert await cluster_store.names() == sorted(NAMES[:1] + NAMES[2:])


async def test_concurrent_failures_trip_a_breaker_exactly_once_on_a_cluster(cluster_store: RedisStore) -> None:
    await asyncio.gather(*(cluster_store.record("payments", Outcome(outcome="failure")) for _ in range(120)))

    snapshot = await cluster_store.snapshot("payments")
    history = await cluster_store.history("payments")

    assert (snapshot.state, snapshot.counts.failure) == (State.OPEN, 120)
    assert [(t.from_state, t.to_state) for t in history] == [(State.CLOSED, State.OPEN)]


async def test_a_report_id_counts_once_and_patch_works_on_every_node(cluster_store: RedisStore) -> None:
    for name in NAMES:  # the report key shares the breaker's hash tag, so record.lua stays in one slot
        await cluster_store.record(name, Outcome(outcome="failure", count=2, report_id="once"))
        again = await cluster_store.record(name, Outcome(outcome="failure", count=2, report_id="once"))
        patched = await cluster_store.patch(name, ConfigPatch(failure_threshold=9), actor="ops", reason="tune")
        assert again.counts.failure == 2
        assert patched.config.failure_threshold == 9


async def test_transitions_on_every_node_reach_one_subscriber(cluster_store: RedisStore) -> None:
    live = asyncio.Event()
    seen: list[StoreEvent] = []

    async def consume() -> None:
        async for event in cluster_store.events(live):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(live.wait(), timeout=10)
        for name in NAMES:
            await cluster_store.force(name, State.OPEN, reason="drill", ttl_s=None, actor="ops")

        async def all_arrived() -> bool:
            return len([e for e in seen if isinstance(e.data, Transition)]) >= len(NAMES)

        await wait_until(all_arrived, "a state event from every breaker")
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)

    transitions = Counter(e.data.name for e in seen if isinstance(e.data, Transition))
    assert transitions == Counter(NAMES)


async def test_the_service_runs_on_a_cluster(cluster_url: str, service_factory: ServiceFactory) -> None:
    service = service_factory(cluster_url, env={"REDIS_CLUSTER": "true"})

    async with httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS) as http:
        listed = (await http.get("/breakers")).json()
        decision = (await http.post("/breakers/openai/acquire", json={})).json()
        ready = await http.get("/health/ready")

    assert [b["name"] for b in listed["breakers"]] == [
        "collections_monitor",
        "notification_service",
        "openai",
        "sms_agent",
        "supabase",
    ]
    assert decision["allowed"] is True
    assert ready.status_code == 200


async def test_probe_results_and_the_degradation_mode_work_across_nodes(cluster_store: RedisStore) -> None:
    from breaker_service.degradation import Mode, ProbeResult

    status = cluster_store.status_store()
    result = ProbeResult(ok=True, latency_ms=1.5, error=None, at=1.0)
    claims = [await status.claim_probe(name, 60.0) for name in NAMES]
    again = [await status.claim_probe(name, 60.0) for name in NAMES]
    for name in NAMES:
        await status.save_probe(name, result, 180.0)

    settled = await status.settle(Mode.PARTIAL, "unhealthy: a")
    forced = await status.force(
        Mode.EMERGENCY, reason="drill", actor="ops", ttl_s=None, derived=Mode.PARTIAL, derived_reason="unhealthy: a"
    )

    assert (all(claims), any(again)) == (True, False)
    assert await status.probes(NAMES) == dict.fromkeys(NAMES, result)
    assert (settled.state.mode, settled.state.forced) == (Mode.PARTIAL, False)
    assert (forced.state.mode, forced.state.forced, forced.forced_until) == (Mode.EMERGENCY, True, None)
    change = await status.last_change()
    assert change is not None
    assert (change.mode, change.actor, change.reason) == (Mode.EMERGENCY, "ops", "drill")


async def test_idempotency_keys_claim_and_settle_on_every_node(cluster_store: RedisStore) -> None:
    from breaker_service.store.idempotency_base import Answered, Pending
    from breaker_service.store.keys import admin_idempotency_key

    entries = cluster_store.idempotency_store()
    scopes = [f"{i:064x}" for i in range(24)]  # digests, as the route makes them: each is its own hash tag
    pending = Pending(fingerprint="f", claim="c")
    answer = Answered(fingerprint="f", status=200, body=b"{}", media_type="application/json")
    for scope in scopes:
        assert await entries.claim(scope, pending) is None
        await entries.complete(scope, pending, answer)
        assert await entries.claim(scope, Pending(fingerprint="f", claim="other")) == answer

    nodes = {key_slot(admin_idempotency_key(scope).encode()) * NODES // 16384 for scope in scopes}
    assert nodes == set(range(NODES))
