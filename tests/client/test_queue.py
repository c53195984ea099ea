"""`WorkQueue` and `drain` against the real service: work deferred while a dependency is down, replayed once it
recovers. The service's stores and the client share one fake clock, so open times and delays pass when told."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from breaker_client import ClaimedJob, NotFoundError, State, ValidationError
from tests.client._calls import NO_RETRY, DependencyDown, down
from tests.client._harness import TEST_CONFIG

if TYPE_CHECKING:
    from breaker_client import BreakerClient
    from tests.client._harness import FakeClock, ServiceHarness
    from tests.client.conftest import ClientFactory


class SmsAgent:
    """The protected dependency: records what it sent, or fails while `up` is False."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        if not self.up:
            raise DependencyDown("sms agent unreachable")
        self.sent.append(message)


async def trip(client: BreakerClient, name: str) -> None:
    breaker = client.breaker(name, retry=NO_RETRY)
    for _ in range(TEST_CONFIG.failure_threshold):
        with pytest.raises(DependencyDown):
            await breaker.call(down)
    await client.wait_for(
        lambda c: (v := c.view(name)) is not None and v.state is State.OPEN and v.deadline is not None
    )


async def test_work_enqueued_while_the_circuit_is_open_is_replayed_once_it_recovers(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    client, _ = await make_client()
    sms, outbox = client.breaker("sms_agent"), client.queue("sms_outbox")
    agent = SmsAgent()
    await trip(client, "sms_agent")
    await outbox.enqueue({"to": "+15550100", "body": "your code is 1234"}, idempotency_key="otp-1")

    deferred = await outbox.drain(sms, agent.send, consumer="worker-1")

    assert agent.sent == []
    assert (deferred.deferred, deferred.acked, deferred.failed) == (1, 0, 0)
    assert deferred.retry_after_s == pytest.approx(TEST_CONFIG.open_timeout_s)
    counts = await outbox.stats()
    assert (counts.ready, counts.delayed, counts.pending) == (1, 1, 0)

    clock.advance(TEST_CONFIG.open_timeout_s)
    replayed = await outbox.drain(sms, agent.send, consumer="worker-1")

    assert agent.sent == [{"to": "+15550100", "body": "your code is 1234"}]
    assert (replayed.acked, replayed.deferred, replayed.failed) == (1, 0, 0)
    assert await outbox.stats() == type(counts)(ready=0, pending=0, dead=0, delayed=0)
    view = client.view("sms_agent")
    assert view is not None
    assert view.state is State.CLOSED


async def test_a_deferred_job_spends_no_attempt(make_client: ClientFactory, clock: FakeClock) -> None:
    client, _ = await make_client()
    outbox = client.queue("sms_outbox")
    await trip(client, "sms_agent")
    queued = await outbox.enqueue("hello")
    for _ in range(3):
        await outbox.drain(client.breaker("sms_agent"), SmsAgent().send, consumer="w")

    clock.advance(TEST_CONFIG.open_timeout_s)

    assert await outbox.claim("w") == [ClaimedJob(id=queued.id, payload="hello", attempts=1)]


async def test_a_job_that_keeps_failing_ends_in_the_dead_letters(
    make_client: ClientFactory, service: ServiceHarness
) -> None:
    client, _ = await make_client()
    outbox, agent = client.queue("sms_outbox"), SmsAgent()
    agent.up = False
    await outbox.enqueue({"to": "+1"})
    # A breaker that does not trip on five failures, so each reaches the queue: five attempts, then dead.
    await service.admin("PUT", "/breakers/lenient", {"failure_threshold": 100})

    report = await outbox.drain(client.breaker("lenient"), agent.send, consumer="w", failure_delay_s=0)

    assert (report.failed, report.dead, report.acked, report.deferred) == (5, 1, 0, 0)
    counts = await outbox.stats()
    assert (counts.ready, counts.pending, counts.dead) == (0, 0, 1)


async def test_queue_operations_round_trip(make_client: ClientFactory, service: ServiceHarness) -> None:
    client, _ = await make_client()
    outbox = client.queue("outbox")
    first = await outbox.enqueue([1, "two", None], idempotency_key="k")
    assert (await outbox.enqueue("other", idempotency_key="k")).duplicate

    [job] = await outbox.claim("w", max=5, lease_s=10)
    assert (job.id, job.payload, job.attempts) == (first.id, [1, "two", None], 1)
    nacked = await outbox.nack([job.id], delay_s=0, error="later")
    assert (nacked.requeued, nacked.dead) == (1, 0)
    [again] = await outbox.claim("w")
    assert again.attempts == 2
    assert await outbox.ack([again.id]) == 1
    assert await outbox.ack([again.id]) == 0


async def test_queue_errors_are_the_client_s_error_classes(make_client: ClientFactory) -> None:
    client, _ = await make_client()

    with pytest.raises(NotFoundError):
        await client.queue("never-used").stats()
    with pytest.raises(ValidationError):
        await client.queue("outbox").ack(["not-an-id"])
    with pytest.raises(ValueError, match="invalid queue name"):
        client.queue("bad name")


async def test_an_enqueue_without_a_key_gets_one_of_its_own(make_client: ClientFactory) -> None:
    """So that sending it again to another replica (after a timeout or a 503) cannot make a second job."""
    client, transport = await make_client()
    outbox = client.queue("sms_outbox")

    first, second = await outbox.enqueue("a"), await outbox.enqueue("b")

    keys = [e.body["idempotency_key"] for e in transport.exchanges if e.path.endswith("/jobs")]
    assert len(keys) == 2
    assert all(isinstance(key, str) and key for key in keys)
    assert keys[0] != keys[1], "one key per call: two calls are two jobs"
    assert first.id != second.id
