"""`breakerctl` writes retried under one Idempotency-Key while their outcome is unknown (client/_cli_retry.py).

Against the real service: in this process on the memory store (tests/client/_harness.py), or in-process over ASGI
on a real redis-server the test stops and starts. The CLI's wait between attempts is a function the test passes:
it records the delays and is where the world changes (the store comes back, the first request finishes), so no
test sleeps or races the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from breaker_client._cli import Exit, run
from breaker_service.app import create_app
from tests.client._cli_runner import Ctl
from tests.client._harness import ADMIN_TOKEN, RecordingTransport, free_port_url
from tests.fixtures.app import make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.applications import Starlette

    from tests.client._harness import ServiceHarness
    from tests.fixtures.redis_server import RedisServerFactory

KEY: Final = "sre-retry-2f1c"
ASGI_URL: Final = "http://breaker.test"
FORCE: Final = ("force-open", "supabase", "--reason", "drill")
_RETRY_LINE: Final = re.compile(r"^breakerctl: (.+); retrying in \d+\.\ds with the same key \(attempt (\d) of (\d)\)$")
_UNKNOWN_LINE: Final = re.compile(r"^breakerctl: outcome unknown; re-run with --idempotency-key (\S+) to retry safely$")


class Waits:
    """The CLI's `sleep`: keeps each delay and returns at once, after running `then` (if any) on the first."""

    def __init__(self, then: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self._then = then

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        if self._then is not None and len(self.delays) == 1:
            await self._then()


class LosingTransport(RecordingTransport):
    """Delivers the first `lose` writes to the service, then drops their answers, as a timed-out connection does."""

    def __init__(self, lose: int = 1) -> None:
        super().__init__()
        self.lose = lose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method != "GET" and self.lose > 0:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        return response


@pytest.fixture
def ctl(service: ServiceHarness, capsys: pytest.CaptureFixture[str]) -> Ctl:
    return Ctl(service.url, capsys)


async def create(service: ServiceHarness, name: str) -> None:
    await service.admin("PUT", f"/breakers/{name}", {})


async def drills(service: ServiceHarness | httpx.AsyncClient, name: str = "supabase") -> int:
    """How many times the force with reason "drill" was applied: its history entries."""
    if isinstance(service, httpx.AsyncClient):
        transitions = (await service.get(f"/breakers/{name}/history")).json()["transitions"]
    else:
        transitions = (await service.admin("GET", f"/breakers/{name}/history")).json()["transitions"]
    return [t["reason"] for t in transitions].count("drill")


def retry_lines(err: str) -> list[tuple[str, int, int]]:
    """(why, attempt, of) for each retry line on stderr."""
    found = [_RETRY_LINE.match(line) for line in err.splitlines()]
    return [(m[1], int(m[2]), int(m[3])) for m in found if m]


def keys_sent(transport: RecordingTransport) -> list[str]:
    return [e.headers["idempotency-key"] for e in transport.exchanges if e.method != "GET"]


# -- the answer was lost: the retry is answered, not applied ------------------------------------------------------


async def test_a_write_whose_answer_was_lost_is_retried_and_applied_once(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    transport, waits = LosingTransport(), Waits()

    result = await ctl(*FORCE, "--json", transport=transport, sleep=waits)

    assert result.code == Exit.OK, result.err
    assert result.json() == (await service.admin("GET", "/breakers/supabase")).json()
    [(why, attempt, of)] = retry_lines(result.err)
    assert result.err.count("\n") == 1, "one line per retry, nothing else"
    assert (why.startswith("no answer: ReadTimeout"), attempt, of) == (True, 2, 3)
    first, retried = transport.exchanges
    assert first.headers["idempotency-key"] == retried.headers["idempotency-key"]
    assert retried.response_headers is not None
    assert retried.response_headers["idempotent-replayed"] == "true"
    assert len(waits.delays) == 1
    assert await drills(service) == 1


async def test_with_retries_1_an_unknown_outcome_names_the_key_and_a_rerun_with_it_is_applied_once(
    ctl: Ctl, service: ServiceHarness
) -> None:
    await create(service, "supabase")
    transport = LosingTransport()

    lost = await ctl(*FORCE, "--retries", "1", transport=transport)
    [key] = keys_sent(transport)
    rerun = await ctl(*FORCE, "--idempotency-key", key, transport=transport)

    assert lost.code == Exit.UNREACHABLE
    assert retry_lines(lost.err) == []
    last = _UNKNOWN_LINE.match(lost.err.splitlines()[-1])
    assert last is not None
    assert last[1] == key
    assert rerun.code == Exit.OK, rerun.err
    assert rerun.rows()[1][:3] == ["supabase", "OPEN", "OPEN"]
    assert keys_sent(transport) == [key, key]
    assert transport.exchanges[-1].response_headers is not None
    assert transport.exchanges[-1].response_headers["idempotent-replayed"] == "true"
    assert await drills(service) == 1


async def test_an_unreachable_service_is_tried_the_given_times_then_the_key_is_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    transport, waits = RecordingTransport(), Waits()

    result = await Ctl(free_port_url(), capsys)(*FORCE, "--retries", "4", transport=transport, sleep=waits)

    assert result.code == Exit.UNREACHABLE
    assert [(attempt, of) for _, attempt, of in retry_lines(result.err)] == [(2, 4), (3, 4), (4, 4)]
    keys = keys_sent(transport)
    assert len(keys) == 4
    assert len(set(keys)) == 1
    assert result.err.splitlines()[-1] == (
        f"breakerctl: outcome unknown; re-run with --idempotency-key {keys[0]} to retry safely"
    )
    assert len(waits.delays) == 3
    assert all(delay > 0 for delay in waits.delays)


class Unanswered(httpx.AsyncBaseTransport):
    """Takes every request and never answers; `sent` is set once one has gone."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.headers = httpx.Headers()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = request.headers
        self.sent.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_write_interrupted_before_its_answer_names_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    transport = Unanswered()
    running = asyncio.create_task(run(["--url", free_port_url(), *FORCE], transport=transport))
    await transport.sent.wait()

    running.cancel()  # what asyncio.run does on Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await running

    [line] = capsys.readouterr().err.splitlines()
    named = _UNKNOWN_LINE.match(line)
    assert named is not None
    assert named[1] == transport.headers["idempotency-key"]


# -- the first request with the key is still in flight: wait, then get its answer ----------------------------------


async def test_a_write_still_in_flight_is_waited_for_then_its_answer_is_replayed(
    ctl: Ctl, service: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(service, "supabase")
    entered, release = asyncio.Event(), asyncio.Event()
    force = service.store.force

    async def held_force(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await force(*args, **kwargs)

    monkeypatch.setattr(service.store, "force", held_force)
    # An earlier run with the same key, whose write the service is still applying (held above, then applied).
    async with httpx.AsyncClient(base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        first = asyncio.create_task(
            http.post(
                "/breakers/supabase/force-open",
                json={"reason": "drill", "ttl_s": None},
                headers={"Idempotency-Key": KEY},
            )
        )
        await entered.wait()

        async def first_is_answered() -> None:
            release.set()
            assert (await first).status_code == 200

        transport = RecordingTransport()
        result = await ctl(
            *FORCE, "--idempotency-key", KEY, "--json", transport=transport, sleep=Waits(first_is_answered)
        )

    assert result.code == Exit.OK, result.err
    assert [e.status for e in transport.exchanges] == [409, 200]
    assert keys_sent(transport) == [KEY, KEY]
    [(why, _, _)] = retry_lines(result.err)
    assert why.startswith("ORC_003 (HTTP 409): ")
    assert result.out.strip() == first.result().text
    assert await drills(service) == 1


# -- answers that end it --------------------------------------------------------------------------------------------


async def test_a_refusal_is_not_retried_and_names_no_key(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    transport, waits = RecordingTransport(), Waits()

    unknown = await ctl("reset", "nope", "--reason", "r", transport=transport, sleep=waits)
    applied = await ctl(*FORCE, "--idempotency-key", KEY, transport=transport, sleep=waits)
    reused = await ctl("reset", "supabase", "--reason", "r", "--idempotency-key", KEY, transport=transport, sleep=waits)

    assert unknown.code == reused.code == Exit.SERVICE_ERROR
    assert unknown.err.startswith("breakerctl: ORC_009 (HTTP 404): ")
    assert applied.code == Exit.OK
    assert reused.err.startswith("breakerctl: ORC_001 (HTTP 422): ")  # the key was used for another request
    assert unknown.err.count("\n") == reused.err.count("\n") == 1
    assert [e.status for e in transport.exchanges] == [404, 200, 422]
    assert waits.delays == []


async def test_a_failed_read_is_not_retried(capsys: pytest.CaptureFixture[str]) -> None:
    transport, waits = RecordingTransport(), Waits()

    result = await Ctl(free_port_url(), capsys)("list", transport=transport, sleep=waits)

    assert result.code == Exit.UNREACHABLE
    assert (len(transport.exchanges), waits.delays) == (1, [])
    assert "outcome unknown" not in result.err
    assert "idempotency-key" not in transport.exchanges[0].headers


# -- --idempotency-key and --retries ---------------------------------------------------------------------------------


async def test_the_given_key_is_sent_up_to_255_characters(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    transport = RecordingTransport()
    longest = "~" * 254 + "!"

    for argv in (
        [*FORCE, "--idempotency-key", longest],
        ["degradation", "--lift", "--idempotency-key", KEY],
        ["config", "supabase", "--set", "failure_threshold=4", "--idempotency-key", "a"],
    ):
        assert (await ctl(*argv, transport=transport)).code == Exit.OK

    assert keys_sent(transport) == [longest, KEY, "a"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*FORCE, "--idempotency-key", ""], "invalid idempotency key"),
        ([*FORCE, "--idempotency-key", "x" * 256], "invalid idempotency key"),
        ([*FORCE, "--idempotency-key", "two words"], "invalid idempotency key"),
        ([*FORCE, "--idempotency-key", "clé"], "invalid idempotency key"),
        ([*FORCE, "--retries", "0"], "invalid number"),
        ([*FORCE, "--retries", "11"], "invalid number"),
        (["config", "supabase", "--idempotency-key", KEY], "config --retries and --idempotency-key go with --set"),
        (["degradation", "--retries", "2"], "go with --set or --lift"),
        (["list", "--retries", "2"], "unrecognized arguments"),
    ],
)
async def test_a_bad_key_or_retries_is_a_usage_error_and_nothing_is_sent(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    transport = RecordingTransport()

    result = await Ctl(free_port_url(), capsys)(*argv, transport=transport)

    assert result.code == Exit.USAGE
    assert "usage: breakerctl" in result.err
    assert message in result.err
    assert transport.exchanges == []


# -- on a real Redis: the store is down, then back --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service_on(redis_url: str, **settings: Any) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The service app on `redis_url`, lifespan entered, and an admin client on it (at `ASGI_URL`)."""
    tokens = {"admin_tokens": {"test-admin": ADMIN_TOKEN}, "client_tokens": {}}
    app = create_app(make_settings(redis_url=redis_url, **tokens, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url=ASGI_URL, headers=admin) as http:
            yield app, http


async def test_a_write_refused_while_the_store_is_down_is_applied_once_it_is_back(
    redis_server_factory: RedisServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = redis_server_factory()
    redis.stop()
    async with service_on(redis.url) as (app, http):
        transport = RecordingTransport(inner=httpx.ASGITransport(app=app))

        async def store_is_back() -> None:
            redis.start()
            assert (await http.get("/health/ready")).status_code == 200  # the replica has read the store

        result = await Ctl(ASGI_URL, capsys)(
            "force-open", "openai", "--reason", "drill", transport=transport, sleep=Waits(store_is_back)
        )

        assert result.code == Exit.OK, result.err
        assert [e.status for e in transport.exchanges] == [503, 200]
        assert len(set(keys_sent(transport))) == 1
        [(why, _, _)] = retry_lines(result.err)
        assert why.startswith("ORC_005 (HTTP 503): ")
        assert await drills(http, "openai") == 1


async def test_a_503_that_says_the_write_was_applied_is_not_retried(
    redis_server_factory: RedisServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Redis without replicas: WAIT 1 confirms none, so the force is applied and answered 503 applied: true.
    async with service_on(redis_server_factory().url, admin_min_replicas=1, store_timeout_s=0.5) as (app, http):
        transport, waits = RecordingTransport(inner=httpx.ASGITransport(app=app)), Waits()

        result = await Ctl(ASGI_URL, capsys)(
            "force-open", "openai", "--reason", "drill", transport=transport, sleep=waits
        )

        assert result.code == Exit.SERVICE_ERROR
        assert result.err.startswith("breakerctl: ORC_005 (HTTP 503): ")
        assert '"applied":true' in result.err
        assert "outcome unknown" not in result.err
        assert (len(transport.exchanges), waits.delays) == (1, [])
        assert await drills(http, "openai") == 1
