"""The client prints nothing: a process that uses both clients with failing calls, retries, fallbacks, a
service that goes away (degraded) and an event stream that breaks, with the application's logging left alone,
writes not one byte to stdout or stderr. Configured, the same lines come through `logging`, one field set each."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from tests.fixtures.service import CLIENT_TOKEN, REPO_ROOT, ServiceFactory, deployed_env

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fixtures.service import ServiceProcess

RUN_TIMEOUT_S: Final = 120.0
REFUSED: Final = httpx.ConnectError("the dependency refused")

PROGRAM: Final = textwrap.dedent(
    """
    import asyncio, logging, sys

    import httpx

    from breaker_client import BreakerClient, CircuitOpenError, RetryPolicy, SyncBreakerClient

    URL, TOKEN, CONFIGURE = sys.argv[1], sys.argv[2], sys.argv[3] == "configure"
    if CONFIGURE:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
    RETRY = RetryPolicy(attempts=3, base_s=0, jitter=False)


    def refused() -> None:
        raise httpx.ConnectError("the dependency refused")


    def answer_503() -> httpx.Response:
        return httpx.Response(503, request=httpx.Request("GET", "http://dependency.example/"))


    with SyncBreakerClient(URL, token=TOKEN) as client:
        client.wait_for(lambda c: c.live)
        breaker = client.breaker("silent-sync-" + sys.argv[3], retry=RETRY, fallback="fallback")
        breaker.call(answer_503)  # three failures, retried; the breaker opens during the loop below
        for _ in range(3):
            breaker.call(refused)

    with SyncBreakerClient("http://127.0.0.1:9", token=TOKEN, recheck_s=0.01) as away:
        breaker = away.breaker("silent-away", retry=RETRY)
        for _ in range(7):
            try:
                breaker.call(refused)
            except (httpx.ConnectError, CircuitOpenError):
                pass
        assert away.degraded


    async def main() -> None:
        async with BreakerClient(URL, token=TOKEN) as client:
            await client.wait_for(lambda c: c.live)

            async def down() -> None:
                refused()

            breaker = client.breaker("silent-async-" + sys.argv[3], retry=RETRY, fallback="fallback")
            for _ in range(6):
                await breaker.call(down)


    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    factory = ServiceFactory(tmp_path_factory.mktemp("silence-service"))
    try:
        yield factory(None)
    finally:
        factory.stop_all()


def run_program(replica: ServiceProcess, mode: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, replica.url, CLIENT_TOKEN, mode],
        env={**deployed_env(None), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_a_process_using_the_client_prints_nothing(replica: ServiceProcess) -> None:
    done = run_program(replica, "leave-logging-alone")

    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    assert done.stderr == b""


def test_with_logging_configured_the_lines_come_through_logging_with_one_field_set(replica: ServiceProcess) -> None:
    done = run_program(replica, "configure")

    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    retries = [line for line in lines if "breaker.retry " in line]
    assert retries, lines
    assert all(line.startswith("WARNING breaker_client breaker.retry breaker=") for line in retries)
    assert any("outcome='HTTP 503'" in line for line in retries), retries
    refused = "outcome=" + repr(repr(REFUSED))
    assert any(refused in line for line in retries), retries
    assert not any("status=None" in line or "error=None" in line for line in retries)
    assert any("breaker.degraded" in line for line in lines)
