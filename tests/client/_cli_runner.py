"""`breakerctl` run in this process as a test runs it: its exit code and what it printed."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from structlog.testing import capture_logs

from breaker_client._cli import run
from tests.client._harness import ADMIN_TOKEN

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx
    import pytest


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def rows(self) -> list[list[str]]:
        """A table's lines split on runs of spaces, header included."""
        return [line.split() for line in self.out.splitlines()]


class Ctl:
    """`await ctl("list", "--json")`: breakerctl aimed at `url`, with the admin token unless told otherwise.

    An in-process service logs through structlog, to stdout by default: its lines are kept out of the CLI's output.
    """

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    async def __call__(
        self,
        *argv: str,
        token: str | None = ADMIN_TOKEN,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Result:
        self.capsys.readouterr()
        options = ["--url", self.url, *(["--token", token] if token else [])]
        with capture_logs():
            code = await run([*options, *argv], transport=transport, sleep=sleep)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)
