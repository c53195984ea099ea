"""Every example in README.md runs, as written, against a real service on a real Redis.

A fenced block tagged `python` or `sh` is an example and runs, in document order, each as its own test. A block
may be kept out only by a `<!-- not run: <why> -->` line just before it (the two make commands: this suite is
one of them, the other is a server; `test_make_run_serves` runs it instead). Untagged blocks are not code.

The examples address the service as the README tells its reader to run it: on `127.0.0.1:8080` with the tokens of
the README's own setup (`README_ADMIN_TOKEN`, `README_CLIENT_TOKEN`). The test starts such a replica on a free
port and points the examples at it. In shell examples `curl` fails on an HTTP error (as `--fail-with-body`) and
streams that never end (`curl -N .../events`, `breakerctl watch`) are cut after a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from tests.fixtures.process import HOST, free_port
from tests.fixtures.redis_server import RedisServerFactory
from tests.fixtures.service import REPO_ROOT, ServiceFactory, deployed_env

if TYPE_CHECKING:
    from collections.abc import Iterator

README: Final = REPO_ROOT / "README.md"
README_ADDRESS: Final = "127.0.0.1:8080"
README_ADMIN_TOKEN: Final = "sre:s3cret-admin-token"
README_CLIENT_TOKEN: Final = "orchestrator:s3cret-client-token"
EXAMPLE_TIMEOUT_S: Final = 120.0
STREAM_CUT_S: Final = 3

_FENCE: Final = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_NOT_RUN: Final = re.compile(r"<!--\s*not run:\s*(?P<why>[^>]*?)\s*-->\s*$")
_RUNNABLE: Final = {"python", "sh", "bash"}

_SHELL_PRELUDE: Final = f"""
set -euo pipefail
curl() {{
  local rc=0
  command curl --fail-with-body --max-time {STREAM_CUT_S} "$@" || rc=$?
  # A stream (curl -N) ends only when cut: being cut is its success.
  if [ "$rc" -eq 28 ] && [[ " $* " == *" -"*N* ]]; then return 0; fi
  return "$rc"
}}
breakerctl() {{
  if [ "${{1:-}}" = watch ]; then timeout {STREAM_CUT_S} breakerctl-real "$@" || [ $? -eq 124 ]; return; fi
  breakerctl-real "$@"
}}
"""


@dataclass(frozen=True)
class Example:
    """One fenced block of the README."""

    language: str
    code: str
    line: int
    not_run_because: str | None

    @property
    def test_id(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def readme_examples(text: str) -> list[Example]:
    """The README's fenced blocks tagged with a runnable language, with their `not run` reasons."""
    examples = []
    for match in _FENCE.finditer(text):
        language = match["info"].strip().split(" ")[0]
        if language not in _RUNNABLE:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        examples.append(Example(language, match["body"], line, reason["why"] if reason else None))
    return examples


EXAMPLES: Final = readme_examples(README.read_text())


def token_of(pair: str) -> str:
    return pair.split(":", 1)[1]


@pytest.fixture(scope="module")
def readme_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A replica on its own Redis, set up as the README tells its reader; its `host:port`."""
    redis_servers = RedisServerFactory(tmp_path_factory.mktemp("readme-redis"))
    services = ServiceFactory(tmp_path_factory.mktemp("readme-service"))
    try:
        redis_server = redis_servers()
        service = services(
            redis_server.url,
            env={"BREAKER_ADMIN_TOKENS": README_ADMIN_TOKEN, "BREAKER_CLIENT_TOKENS": README_CLIENT_TOKEN},
        )
        yield service.url.removeprefix("http://")
    finally:
        services.stop_all()
        redis_servers.stop_all()


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory put first on the examples' PATH: this venv's tools, `breakerctl` reachable as the real one."""
    directory = tmp_path_factory.mktemp("readme-bin")
    real = Path(sys.executable).parent / "breakerctl"
    (directory / "breakerctl-real").symlink_to(real)
    return directory


def test_the_readme_has_examples_and_every_exclusion_says_why() -> None:
    assert sum(example.not_run_because is None for example in EXAMPLES) >= 5
    assert all(example.not_run_because for example in EXAMPLES if example.not_run_because is not None)
    text = README.read_text()
    assert token_of(README_ADMIN_TOKEN) in text
    assert token_of(README_CLIENT_TOKEN) in text


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.not_run_because is None], ids=lambda e: e.test_id)
def test_readme_example_runs(example: Example, readme_service: str, bin_dir: Path, tmp_path: Path) -> None:
    code = example.code.replace(README_ADDRESS, readme_service)
    env = {
        **deployed_env(None),
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [sys.executable, "-c", code] if example.language == "python" else ["bash", "-c", _SHELL_PRELUDE + code]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"{example.test_id} failed:\n{example.code}\nstdout:\n{done.stdout}\n{done.stderr}"


def test_make_run_serves(tmp_path: Path) -> None:
    """The README's first command: `make run` serves (on the memory store; this venv is already set up)."""
    port = free_port()
    env = {**deployed_env(None), "BREAKER_PORT": str(port)}
    with (tmp_path / "out").open("wb") as out:
        # Its own session, so that stopping it stops make's child (the server) too.
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=2.0) as client:
            answer = wait_for_health(client, process)
        assert answer == 200, (tmp_path / "out").read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_for_health(client: httpx.Client, process: subprocess.Popen[bytes]) -> int:
    """The status of the first `/health` answer, or -1 if the process ended first."""
    while process.poll() is None:
        try:
            return client.get("/health").status_code
        except httpx.TransportError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
    return -1
