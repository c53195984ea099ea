"""The protected calls the client tests make: one that succeeds, one whose dependency is down."""

from __future__ import annotations

from typing import Final

from breaker_client import RetryPolicy

NO_RETRY: Final = RetryPolicy(attempts=1)


class DependencyDown(Exception):
    pass


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise DependencyDown("no answer")
