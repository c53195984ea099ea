"""Locust as the demo's load generator: a headless subprocess, stopped when the incident ends, read from its CSV."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Final

from examples.demo.summary import CallerFigures
from tests.fixtures.process import stop_gracefully

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["LocustRun"]

LOCUSTFILE: Final = Path(__file__).with_name("locustfile.py")
STOP_TIMEOUT_S: Final = 30.0


class LocustRun:
    """`locust --headless` with `users` users against `host`, its output and CSV files in `directory`."""

    def __init__(self, directory: Path, host: str, *, users: int, rate_per_user: float) -> None:
        self._directory = directory
        self._prefix = directory / "locust"
        self._host = host
        self._users = users
        self._rate_per_user = rate_per_user
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocustRun:
        self.start()
        return self

    def start(self) -> None:
        """Start Locust; its users begin at once."""
        self._directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--users", str(self._users), "--spawn-rate", str(self._users),
            "--host", self._host, "--csv", str(self._prefix), "--only-summary",
            "--loglevel", "WARNING", "--exit-code-on-error", "0",
        ]  # fmt: skip
        env = {"DEMO_LOCUST_USER_RATE": str(self._rate_per_user)}
        with (self._directory / "locust.log").open("ab") as output:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=_with(env)
            )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask Locust to stop (SIGTERM: it writes its CSV and exits), SIGKILL if it does not in time."""
        if self._process is not None:
            stop_gracefully(self._process, STOP_TIMEOUT_S)
        self._process = None

    def figures(self) -> CallerFigures:
        """The aggregated row of Locust's statistics, and its failures by error."""
        with Path(f"{self._prefix}_stats.csv").open(newline="") as stats_file:
            total = next(row for row in csv.DictReader(stats_file) if row["Name"] == "Aggregated")
        errors: Counter[str] = Counter()
        failures = Path(f"{self._prefix}_failures.csv")
        if failures.exists():
            with failures.open(newline="") as failures_file:
                for row in csv.DictReader(failures_file):
                    errors[row["Error"]] += int(row["Occurrences"])
        return CallerFigures(
            source="locust",
            requests=int(total["Request Count"]),
            errors=errors,
            requests_per_s=float(total["Requests/s"]),
            p50_ms=float(total["50%"]),
            p99_ms=float(total["99%"]),
        )


def _with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
