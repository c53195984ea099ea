"""`python -m breaker_service --help` and `--version` print and exit 0 without starting a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from breaker_service import __version__
from tests.fixtures.service import REPO_ROOT, deployed_env


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    # No REDIS_URL and a port that is surely taken: were a server started, it would fail or hang, not exit 0.
    env = {**deployed_env(None), "BREAKER_PORT": "1"}
    command = [sys.executable, "-m", "breaker_service", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_version_prints_and_exits_0() -> None:
    result = run_module("--version")

    assert (result.returncode, result.stdout) == (0, f"breaker-service {__version__}\n")


def test_help_names_the_settings_and_exits_0() -> None:
    result = run_module("--help")

    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m breaker_service")
    assert "REDIS_URL" in result.stdout
    assert "serving on" not in result.stderr


@pytest.mark.parametrize("argument", ["--port=9000", "serve"])
def test_an_unknown_argument_is_a_usage_error(argument: str) -> None:
    result = run_module(argument)

    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr
