"""`SyncBreakerClient` against a real replica (`python -m breaker_service`, memory store): the fast and strict
paths, `with breaker:`, fallbacks that see the call's arguments, transition callbacks, the local breaker while the
service is away, and a client made before `fork` working in the children (gunicorn --preload, Celery prefork).
"""

from __future__ import annotations

import multiprocessing
import threading
import warnings
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from breaker_client import CircuitOpenError, RetryPolicy, State, StateChange, SyncBreakerClient
from tests.client._harness import free_port_url
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_TOKEN, ServiceFactory

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.connection import Connection

    from tests.fixtures.service import ServiceProcess

ONCE: Final = RetryPolicy(attempts=1)
WAIT_S: Final = 20.0
CHILDREN: Final = 2
CALLS_EACH: Final = 2


class DependencyDown(ConnectionError):
    """What the protected function raises: a failure, as any connection error is."""


def fail(*_: object) -> str:
    raise DependencyDown("refused")


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    factory = ServiceFactory(tmp_path_factory.mktemp("sync-client-service"))
    try:
        yield factory(None)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def admin(replica: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replica.url, headers=ADMIN_HEADERS, timeout=10.0) as client:
        yield client


@pytest.fixture
def client(replica: ServiceProcess) -> Iterator[SyncBreakerClient]:
    with SyncBreakerClient(replica.url, token=CLIENT_TOKEN, flush_interval_s=3600) as started:
        started.wait_for(lambda c: c.live, timeout_s=WAIT_S)
        yield started


def fresh(admin: httpx.Client, name: str, **config: Any) -> None:
    admin.delete(f"/breakers/{name}")
    admin.put(f"/breakers/{name}", json={"failure_threshold": 3, **config}).raise_for_status()


def breaker_body(admin: httpx.Client, name: str) -> dict[str, Any]:
    response = admin.get(f"/breakers/{name}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_calls_pass_the_result_through_and_failures_open_the_shared_breaker(
    client: SyncBreakerClient, admin: httpx.Client
) -> None:
    fresh(admin, "sync-basic")
    breaker = client.breaker("sync-basic", retry=ONCE)

    assert breaker.call(lambda a, b: a + b, 2, b=3) == 5
    for _ in range(3):
        with pytest.raises(DependencyDown):
            breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "never runs")

    body = breaker_body(admin, "sync-basic")
    assert body["state"] == "OPEN"
    assert body["counts"]["failure"] == 3


def test_protect_decorates_plain_functions_and_refuses_async_ones(
    client: SyncBreakerClient, admin: httpx.Client
) -> None:
    fresh(admin, "sync-protect")
    breaker = client.breaker("sync-protect", retry=ONCE)

    @breaker.protect()
    def double(value: int) -> int:
        return value * 2

    async def coroutine_function() -> None:
        return None

    assert double(21) == 42
    assert double.__name__ == "double"
    with pytest.raises(TypeError, match="plain functions"):
        breaker.protect()(coroutine_function)


def test_with_breaker_reports_how_the_block_ended(client: SyncBreakerClient, admin: httpx.Client) -> None:
    fresh(admin, "sync-with")
    breaker = client.breaker("sync-with")

    with pytest.raises(DependencyDown), breaker:
        fail()
    with breaker:
        pass
    client.flush()

    counts = breaker_body(admin, "sync-with")["counts"]
    assert (counts["failure"], counts["success"]) == (1, 1)


def test_a_fallback_gets_the_exception_and_the_calls_arguments(client: SyncBreakerClient, admin: httpx.Client) -> None:
    fresh(admin, "sync-fallback", open_timeout_s=600)
    outbox: list[str] = []
    breaker = client.breaker("sync-fallback", retry=ONCE, fallback=lambda exc, message: outbox.append(message))

    @breaker.protect(fallback=lambda exc: f"queued after {type(exc).__name__}")
    def send_other(message: str) -> str:
        raise DependencyDown(message)

    for message in ("one", "two", "three", "four"):  # the fourth is refused: the fallback still has it
        breaker.call(fail, message)

    assert outbox == ["one", "two", "three", "four"]
    assert send_other("x") == "queued after CircuitOpenError"  # a fallback taking the exception alone


def test_on_transition_calls_back_for_changes_seen_in_this_process(
    client: SyncBreakerClient, admin: httpx.Client
) -> None:
    fresh(admin, "sync-watch", open_timeout_s=600)
    changes: list[StateChange] = []
    opened = threading.Event()

    def seen(change: StateChange) -> None:
        if change.name == "sync-watch":
            changes.append(change)
            if change.to_state is State.OPEN:
                opened.set()

    client.on_transition(seen)
    breaker = client.breaker("sync-watch", retry=ONCE)
    breaker.call(lambda: "ok")  # known CLOSED from here
    for _ in range(3):
        with pytest.raises(DependencyDown):
            breaker.call(fail)

    assert opened.wait(WAIT_S)
    assert changes == [StateChange(name="sync-watch", from_state=State.CLOSED, to_state=State.OPEN)]


def test_while_the_service_is_away_a_local_breaker_protects_the_calls() -> None:
    with SyncBreakerClient(free_port_url(), recheck_s=3600) as client:
        breaker = client.breaker("sync-away", retry=ONCE)
        assert breaker.call(lambda: "ok") == "ok"
        for _ in range(5):  # the default config's failure_threshold
            with pytest.raises(DependencyDown):
                breaker.call(fail)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "never runs")

        assert client.degraded


# -- fork ------------------------------------------------------------------------------------------------------------


OPENED_HERE = threading.Event()
"""Set by a transition callback the parent registers before the fork: each child has its own copy."""


def _note_open(change: StateChange) -> None:
    if change.name == "sync-fork" and change.to_state is State.OPEN:
        OPENED_HERE.set()


def _child(client: SyncBreakerClient, conn: Connection) -> None:
    """Runs in a forked child: the parent's client, used as it is."""
    try:
        client.wait_for(lambda c: c.live, timeout_s=WAIT_S)
        breaker = client.breaker("sync-fork", retry=ONCE)
        outcomes = []
        for _ in range(CALLS_EACH):
            try:
                breaker.call(fail)
            except DependencyDown:
                outcomes.append("failed")
            except Exception as exc:
                outcomes.append(repr(exc))
        saw_open = OPENED_HERE.wait(WAIT_S)  # the breaker opens once every child has failed
        conn.send((client.live and saw_open, outcomes))
    except BaseException as exc:
        conn.send((False, [repr(exc)]))
    finally:
        client.close()
        conn.close()


def test_a_client_made_before_fork_works_in_the_children(client: SyncBreakerClient, admin: httpx.Client) -> None:
    fresh(admin, "sync-fork", failure_threshold=CHILDREN * CALLS_EACH, open_timeout_s=600)
    client.breaker("sync-fork", retry=ONCE).call(lambda: "ok")  # the parent's loop, pool and stream are in use
    client.on_transition(_note_open)
    OPENED_HERE.clear()
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False) for _ in range(CHILDREN)]
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a process with threads: that is the situation under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        children = [context.Process(target=_child, args=(client, sender)) for _, sender in pipes]
        for child in children:
            child.start()
    try:
        answers = [receiver.recv() if receiver.poll(WAIT_S * 2) else (False, ["no answer"]) for receiver, _ in pipes]
    finally:
        for child in children:
            child.join(WAIT_S)
            if child.is_alive():
                child.kill()

    # Each child followed the stream (with the parent's callback), and reported its failures.
    assert answers == [(True, ["failed"] * CALLS_EACH)] * CHILDREN
    body = breaker_body(admin, "sync-fork")
    assert body["counts"]["failure"] == CHILDREN * CALLS_EACH  # the children's own reports reached the service
    assert body["state"] == "OPEN"
    client.wait_for(lambda c: (v := c.view("sync-fork")) is not None and v.effective_state is State.OPEN)
    with pytest.raises(CircuitOpenError):  # and the parent's client still works, with the fleet's state
        client.breaker("sync-fork").call(lambda: "never runs")
