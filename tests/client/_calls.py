"""The protected calls the client tests make: one that succeeds, one whose dependency is down, one that counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from breaker_client import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

NO_RETRY: Final = RetryPolicy(attempts=1)
FALLBACK: Final = "queued for later"


class DependencyDown(Exception):
    pass


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise DependencyDown("no answer")


class Dependency:
    """A protected dependency that counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def charge(self) -> str:
        self.calls += 1
        return "charged"

    async def charge_async(self) -> str:
        return self.charge()


def seen_then_fallback(seen: list[BaseException]) -> Callable[[BaseException], str]:
    """A fallback that keeps the exception it is given and answers FALLBACK."""

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return FALLBACK

    return fallback
