"""`breakerctl` against the real service in this process: output, audit, watch, errors and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from structlog.testing import capture_logs

import breaker_client
from breaker_client._cli import Exit, main, run
from tests.client._cli_runner import Ctl
from tests.client._harness import ADMIN_TOKEN, CLIENT_TOKEN, HOST, RecordingTransport, free_port_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.client._harness import FakeClock, ServiceHarness


@pytest.fixture(autouse=True)
def quiet_service() -> Iterator[None]:
    """The in-process service logs through structlog, to stdout by default: keep its lines out of the CLI's output."""
    with capture_logs():
        yield


@pytest.fixture
def ctl(service: ServiceHarness, capsys: pytest.CaptureFixture[str]) -> Ctl:
    return Ctl(service.url, capsys)


async def service_json(service: ServiceHarness, path: str) -> Any:
    return (await service.admin("GET", path)).json()


async def create(service: ServiceHarness, *names: str) -> None:
    for name in names:
        await service.admin("PUT", f"/breakers/{name}", {})


async def trip(service: ServiceHarness, name: str) -> None:
    """Open `name` by failures: an automatic transition, with no actor."""
    await service.admin("POST", f"/breakers/{name}/record", {"outcome": "failure", "count": 3})


async def test_list_prints_one_aligned_row_per_breaker(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "sms_agent", "openai")
    await trip(service, "openai")

    result = await ctl("list")

    assert result.code == Exit.OK
    assert result.rows()[0] == ["NAME", "STATE", "FORCED", "GENERATION", "FAILURES", "RETRY_AFTER"]
    snapshots = {b["name"]: b for b in (await service_json(service, "/breakers"))["breakers"]}
    rows = {row[0]: row for row in result.rows()[1:]}
    for name, state, retry_after in (("sms_agent", "CLOSED", "-"), ("openai", "OPEN", "30.0s")):
        failures = str(snapshots[name]["consecutive_failures"])
        assert rows[name] == [name, state, "-", str(snapshots[name]["generation"]), failures, retry_after]
    lines = result.out.splitlines()
    state_column = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert state_column == {lines[0].index("STATE")}


async def test_list_json_is_the_services_answer(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "sms_agent", "openai")

    result = await ctl("list", "--json")

    assert result.code == Exit.OK
    assert result.json() == await service_json(service, "/breakers")


async def test_list_of_no_breakers_says_so_on_stderr(ctl: Ctl) -> None:
    result = await ctl("list")

    assert (result.code, result.out, result.err) == (Exit.OK, "", "no breakers\n")


async def test_show_prints_every_field_and_json_matches_the_service(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")

    human = await ctl("show", "supabase")
    machine = await ctl("show", "supabase", "--json")

    assert human.code == machine.code == Exit.OK
    fields = dict(line.split(":", 1) for line in human.out.splitlines())
    assert fields["name"].strip() == "supabase"
    assert fields["state"].strip() == "CLOSED"
    assert fields["forced"].strip() == "-"
    assert "failure_threshold=3" in fields["config"]
    assert machine.json() == await service_json(service, "/breakers/supabase")


async def test_history_lists_transitions_newest_first(ctl: Ctl, service: ServiceHarness, clock: FakeClock) -> None:
    await trip(service, "openai")
    clock.advance(1)
    await service.admin("POST", "/breakers/openai/reset", {"reason": "recovered"})

    human = await ctl("history", "openai")
    machine = await ctl("history", "openai", "--json")
    limited = await ctl("history", "openai", "--limit", "1", "--json")

    reset, tripped = (await service_json(service, "/breakers/openai/history"))["transitions"]
    assert human.rows()[0] == ["AT", "FROM", "TO", "GENERATION", "ACTOR", "REASON"]
    assert [row[1:5] for row in human.rows()[1:]] == [
        ["OPEN", "CLOSED", str(reset["generation"]), "test-admin"],
        ["CLOSED", "OPEN", str(tripped["generation"]), "-"],
    ]
    assert human.rows()[1][0] == "2023-11-14T22:13:21.000Z"
    assert human.out.splitlines()[1].endswith("recovered")
    assert machine.json() == await service_json(service, "/breakers/openai/history")
    assert limited.json()["transitions"] == machine.json()["transitions"][:1]


async def test_force_open_shows_as_forced_open_and_is_audited(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "sms_agent")
    await trip(service, "openai")

    forced = await ctl("force-open", "sms_agent", "--reason", "provider outage", "--create")
    shown = await ctl("show", "sms_agent")
    audit = await ctl("audit", "--json")

    assert forced.code == Exit.OK
    assert forced.rows()[1][:3] == ["sms_agent", "OPEN", "OPEN"]
    fields = {key: value.strip() for key, value in (line.split(":", 1) for line in shown.out.splitlines())}
    assert fields["state"] == "OPEN (forced; own state CLOSED)"
    assert fields["forced"] == "OPEN"
    assert audit.json() == await service_json(service, "/audit?limit=50")
    forcing, configuring = audit.json()["entries"]  # the automatic trip of openai is not an admin action
    assert forcing == {
        "at": forcing["at"],
        "name": "sms_agent",
        "action": "force-open",
        "actor": "test-admin",
        "reason": "provider outage",
    }
    assert (configuring["name"], configuring["action"]) == ("sms_agent", "configure")


async def test_audit_reads_the_services_trail_newest_first_up_to_the_limit(
    ctl: Ctl, service: ServiceHarness, clock: FakeClock
) -> None:
    await create(service, "openai")
    await ctl("force-open", "sms_agent", "--reason", "first", "--create")
    clock.advance(1)
    await ctl("reset", "openai", "--reason", "second")
    clock.advance(1)
    await ctl("delete", "sms_agent", "--reason", "third")
    recorder = UrlRecorder()

    everything = await ctl("audit", transport=recorder)
    latest = await ctl("audit", "--limit", "2", "--json", transport=recorder)

    assert [(url.path, url.params.get("limit")) for url in recorder.urls] == [("/audit", "50"), ("/audit", "2")]
    assert everything.rows()[0] == ["AT", "BREAKER", "ACTION", "ACTOR", "REASON"]
    assert [(row[1], row[2], row[-1]) for row in everything.rows()[1:4]] == [
        ("sms_agent", "delete", "third"),  # a deleted breaker's actions stay in the trail
        ("openai", "reset", "second"),
        ("sms_agent", "force-open", "first"),
    ]
    assert everything.rows()[1][0] == "2023-11-14T22:13:22.000Z"
    assert latest.json() == await service_json(service, "/audit?limit=2")
    assert [e["reason"] for e in latest.json()["entries"]] == ["third", "second"]


async def test_audit_of_no_admin_actions_says_so_on_stderr(ctl: Ctl) -> None:
    result = await ctl("audit")

    assert (result.code, result.out, result.err) == (Exit.OK, "", "no admin actions\n")


async def test_force_close_with_ttl_and_reset(ctl: Ctl, service: ServiceHarness) -> None:
    await trip(service, "openai")

    forced = await ctl("force-close", "openai", "--reason", "drill", "--ttl", "120", "--create", "--json")
    reset = await ctl("reset", "openai", "--reason", "done", "--json")

    assert forced.code == reset.code == Exit.OK
    assert forced.json()["forced"] == "CLOSED"
    assert (reset.json()["state"], reset.json()["forced"]) == ("CLOSED", None)
    assert reset.json()["counts"] == {"success": 0, "failure": 0, "rejected": 0}
    assert reset.json() == await service_json(service, "/breakers/openai")


@pytest.mark.parametrize(
    "command", [["show"], ["history"], ["force-open", "--reason", "r"], ["reset", "--reason", "r"]]
)
async def test_a_bad_name_is_refused_before_any_request(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    transport = RecordingTransport()

    code = await run(["--url", free_port_url(), *command, "bad name!"], transport=transport)

    assert code == Exit.USAGE
    assert "invalid breaker name 'bad name!'" in capsys.readouterr().err
    assert transport.exchanges == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "list"],  # --json belongs after the command
        ["force-open", "sms_agent"],  # no --reason
        ["force-open", "sms_agent", "--reason", "r", "--ttl", "-1"],
        ["reset", "sms_agent", "--reason", " "],
        ["history", "sms_agent", "--limit", "0"],
        ["watch", "--count", "x"],
        ["audit", "--limit", "1001"],  # the service's largest
        ["frobnicate"],
    ],
)
async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = await run(["--url", free_port_url(), *argv])

    assert code == Exit.USAGE
    assert "usage: breakerctl" in capsys.readouterr().err


async def test_an_unknown_token_is_orc_007(ctl: Ctl) -> None:
    result = await ctl("list", token="not-a-token")

    assert result.code == Exit.SERVICE_ERROR
    assert result.err.startswith("breakerctl: ORC_007 (HTTP 401): ")
    assert "Traceback" not in result.err


async def test_a_client_token_may_not_force_orc_008(ctl: Ctl) -> None:
    result = await ctl("force-open", "sms_agent", "--reason", "r", token=CLIENT_TOKEN)

    assert result.code == Exit.SERVICE_ERROR
    assert result.err.startswith("breakerctl: ORC_008 (HTTP 403): ")


async def test_an_unknown_breaker_is_orc_009(ctl: Ctl) -> None:
    shown = await ctl("show", "nope")
    reset = await ctl("reset", "nope", "--reason", "r")

    assert shown.code == reset.code == Exit.SERVICE_ERROR
    assert shown.err.startswith("breakerctl: ORC_009 (HTTP 404): ")
    assert reset.err.startswith("breakerctl: ORC_009 (HTTP 404): ")
    assert shown.out == reset.out == ""


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (200, "breakerctl: HTTP 200: the answer is not the breaker API's"),
        (502, "breakerctl: ORC_004 (HTTP 502): breaker service answered 502"),
    ],
)
async def test_an_answer_that_is_not_the_api_exits_1(
    capsys: pytest.CaptureFixture[str], status: int, message: str
) -> None:
    proxy_page = httpx.MockTransport(lambda request: httpx.Response(status, html="<h1>proxy</h1>"))

    code = await run(["--url", "http://breakers.example", "list"], transport=proxy_page)

    assert code == Exit.SERVICE_ERROR
    assert capsys.readouterr().err.startswith(message)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == Exit.OK
    assert "watch" in capsys.readouterr().out


async def test_an_unreachable_service_exits_3_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = free_port_url()

    code = await run(["--url", url, "list"])

    assert code == Exit.UNREACHABLE
    assert f"connection to the breaker service at {url} failed" in capsys.readouterr().err


def test_main_exits_3_when_the_service_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    url = free_port_url()

    assert main(["--url", url, "show", "sms_agent"]) == Exit.UNREACHABLE
    assert url in capsys.readouterr().err


async def test_url_and_token_come_from_the_environment(
    service: ServiceHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BREAKER_URL", service.url)
    monkeypatch.setenv("BREAKER_TOKEN", ADMIN_TOKEN)

    code = await run(["force-open", "sms_agent", "--reason", "env", "--create", "--json"])

    assert code == Exit.OK
    assert json.loads(capsys.readouterr().out)["forced"] == "OPEN"


class _NotifyingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, opened: asyncio.Event) -> None:
        self._inner = inner
        self._opened = opened

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._opened.set()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class StreamOpened(httpx.AsyncBaseTransport):
    """Sets `opened` when the event stream's first bytes (its snapshot) arrive: the service has subscribed by then."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.opened = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not isinstance(response.stream, httpx.AsyncByteStream):
            raise TypeError("an async transport answers with an async stream")
        stream = _NotifyingStream(response.stream, self.opened)
        return httpx.Response(response.status_code, headers=response.headers, stream=stream)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("output", ["human", "json"])
async def test_watch_prints_the_transition_a_force_causes(ctl: Ctl, service: ServiceHarness, output: str) -> None:
    transport = StreamOpened()
    json_flag = ["--json"] if output == "json" else []
    watching = asyncio.create_task(ctl("watch", "--count", "1", *json_flag, transport=transport))
    await transport.opened.wait()

    await service.admin("POST", "/breakers/sms_agent/force-open?create=true", {"reason": "drill"})
    result = await watching

    assert result.code == Exit.OK
    if output == "json":
        transition = result.json()
        assert (transition["name"], transition["from"], transition["to"]) == ("sms_agent", "CLOSED", "OPEN")
        assert transition["actor"] == "test-admin"
    else:
        [line] = result.out.splitlines()
        assert "  sms_agent  CLOSED -> OPEN  generation=" in line
        assert line.endswith(" actor=test-admin reason='drill'")
        assert result.err == f"watching {service.url} for state changes (Ctrl-C to stop)\n"


def test_ctrl_c_ends_watch_quietly_with_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)

        def serve_a_silent_stream_then_interrupt() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(30)
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                connection.sendall(b"transfer-encoding: chunked\r\n\r\n")
                signal.pthread_kill(main_thread, signal.SIGINT)  # as Ctrl-C does, while watch waits for events
                with contextlib.suppress(ConnectionError):
                    connection.recv(1)  # until the client hangs up

        server = threading.Thread(target=serve_a_silent_stream_then_interrupt)
        server.start()
        code = main(["--url", f"http://{HOST}:{listener.getsockname()[1]}", "watch"])
        server.join()

    assert code == Exit.OK
    assert capsys.readouterr() == ("", "")


# -- v1.1: --version, delete, config, degradation, force-open --create -----------------------------------------


class UrlRecorder(httpx.AsyncBaseTransport):
    """Sends through a real transport and keeps each request's full URL (query included)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_version_prints_the_client_version(capsys: pytest.CaptureFixture[str]) -> None:
    code = await run(["--version"])

    assert (code, capsys.readouterr().out) == (Exit.OK, f"breakerctl {breaker_client.__version__}\n")


async def test_delete_removes_the_breaker_with_a_reason(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "sms_agent", "openai")
    recorder = UrlRecorder()

    human = await ctl("delete", "sms_agent", "--reason", "decommissioned", transport=recorder)
    machine = await ctl("delete", "openai", "--json")
    again = await ctl("delete", "openai")

    assert (human.code, human.out) == (Exit.OK, "deleted sms_agent\n")
    assert recorder.urls[-1].params["reason"] == "decommissioned"
    assert (machine.code, machine.json()) == (Exit.OK, {"name": "openai", "deleted": True})
    assert (await service_json(service, "/breakers"))["breakers"] == []
    assert again.code == Exit.SERVICE_ERROR
    assert again.err.startswith("breakerctl: ORC_009 (HTTP 404): ")


async def test_config_shows_the_breakers_config(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")

    human = await ctl("config", "supabase")
    machine = await ctl("config", "supabase", "--json")

    assert human.code == machine.code == Exit.OK
    rows = {row[0]: row[1] for row in human.rows()}
    assert (rows["failure_threshold"], rows["open_timeout_s"], rows["window_s"]) == ("3", "30", "-")
    assert machine.json() == (await service_json(service, "/breakers/supabase"))["config"]


async def test_config_set_merges_fields_with_patch(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    recorder = UrlRecorder()

    result = await ctl(
        "config", "supabase", "--set", "failure_threshold=7", "--set", "open_timeout_s=12.5", "--reason", "tune",
        "--json", transport=recorder,
    )  # fmt: skip

    assert result.code == Exit.OK, result.err
    assert (recorder.urls[-1].path, recorder.urls[-1].params["reason"]) == ("/breakers/supabase", "tune")
    config = (await service_json(service, "/breakers/supabase"))["config"]
    assert result.json() == config
    assert (config["failure_threshold"], config["open_timeout_s"], config["success_threshold"]) == (7, 12.5, 1)


async def test_config_set_of_an_unknown_field_is_orc_001_and_changes_nothing(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    before = await service_json(service, "/breakers/supabase")

    result = await ctl("config", "supabase", "--set", "nonsense=1")

    assert result.code == Exit.SERVICE_ERROR
    assert result.err.startswith("breakerctl: ORC_001 (HTTP 422): ")
    assert await service_json(service, "/breakers/supabase") == before


async def test_degradation_shows_forces_and_lifts_the_mode(ctl: Ctl) -> None:
    shown = await ctl("degradation")
    forced = await ctl("degradation", "--set", "emergency", "--reason", "drill", "--ttl", "600", "--json")
    while_forced = await ctl("degradation")
    lifted = await ctl("degradation", "--lift", "--json")

    assert shown.code == forced.code == while_forced.code == lifted.code == Exit.OK
    assert shown.out.splitlines()[0] == "mode:    NORMAL (derived from dependency health)"
    assert (forced.json()["mode"], forced.json()["forced"], forced.json()["reason"]) == ("EMERGENCY", True, "drill")
    assert while_forced.out.splitlines()[:2] == ["mode:    EMERGENCY (forced by an admin)", "reason:  drill"]
    assert (lifted.json()["mode"], lifted.json()["forced"]) == ("NORMAL", False)


async def test_a_client_token_may_not_force_a_degradation_mode(ctl: Ctl) -> None:
    result = await ctl("degradation", "--set", "OFFLINE", "--reason", "r", token=CLIENT_TOKEN)

    assert result.code == Exit.SERVICE_ERROR
    assert result.err.startswith("breakerctl: ORC_008 (HTTP 403): ")


async def test_force_open_create_asks_the_service_to_create(ctl: Ctl, service: ServiceHarness) -> None:
    recorder = UrlRecorder()

    result = await ctl("force-open", "brand_new", "--reason", "pre-emptive", "--create", "--json", transport=recorder)

    assert result.code == Exit.OK, result.err
    assert result.json() == await service_json(service, "/breakers/brand_new")
    assert (await service.admin("POST", "/breakers/brand_new/acquire", {})).json()["allowed"] is False
    assert (recorder.urls[-1].path, recorder.urls[-1].params["create"]) == ("/breakers/brand_new/force-open", "true")


@pytest.mark.parametrize(
    "argv",
    [
        ["degradation", "--set", "EMERGENCY"],  # no --reason
        ["degradation", "--set", "SIDEWAYS", "--reason", "r"],
        ["degradation", "--set", "EMERGENCY", "--lift", "--reason", "r"],
        ["degradation", "--ttl", "60"],
        ["degradation", "--reason", "r"],
        ["config", "supabase", "--set", "failure_threshold"],  # no =value
        ["config", "supabase", "--reason", "r"],  # a reason without a change
        ["delete"],
        ["delete", "bad name!"],
    ],
)
async def test_v11_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    transport = RecordingTransport()

    code = await run(["--url", free_port_url(), *argv], transport=transport)

    assert code == Exit.USAGE
    assert "usage: breakerctl" in capsys.readouterr().err
    assert transport.exchanges == []


async def test_each_admin_write_carries_its_invocations_own_idempotency_key(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    transport = RecordingTransport()

    for argv in (
        ["force-open", "supabase", "--reason", "r"],
        ["reset", "supabase", "--reason", "r"],
        ["config", "supabase", "--set", "failure_threshold=4"],
        ["degradation", "--set", "PARTIAL", "--reason", "drill"],
        ["delete", "supabase"],
        ["list"],
    ):
        assert (await ctl(*argv, transport=transport)).code == Exit.OK

    writes = [e for e in transport.exchanges if e.method != "GET"]
    keys = {e.headers["idempotency-key"] for e in writes}
    assert (len(writes), len(keys)) == (5, 5)
    assert all("idempotency-key" not in e.headers for e in transport.exchanges if e.method == "GET")


class ResendingTransport(RecordingTransport):
    """Sends every write twice, answering the second, as a proxy that retries after a lost answer does."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            await (await super().handle_async_request(request)).aread()
        return await super().handle_async_request(request)


async def test_a_resent_force_is_applied_once(ctl: Ctl, service: ServiceHarness) -> None:
    await create(service, "supabase")
    transport = ResendingTransport()

    result = await ctl("force-open", "supabase", "--reason", "drill", "--json", transport=transport)

    assert result.code == Exit.OK, result.err
    first, resent = (e for e in transport.exchanges if e.method == "POST")
    assert resent.response_headers is not None
    assert resent.response_headers["idempotent-replayed"] == "true"
    assert first.headers["idempotency-key"] == resent.headers["idempotency-key"]
    history = (await service_json(service, "/breakers/supabase/history"))["transitions"]
    assert [t["reason"] for t in history].count("drill") == 1
