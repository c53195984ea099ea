"""Fallbacks: a value, or a callable given the exception and, when it takes them, the call's own arguments."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["NO_FALLBACK", "fallback_result"]


class _NoFallback:
    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Final = _NoFallback()
"""No fallback: a refused or failed call raises."""


def fallback_result(fallback: object, exc: Exception, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> object:
    """What a fallback gives for a call of `fn(*args, **kwargs)` that ended with `exc` (an awaitable when the
    fallback is async). A callable that accepts them is called `fallback(exc, *args, **kwargs)`, as resilience4j
    and Polly pass the call's context (`lambda exc, message: outbox.put(message)`); else `fallback(exc)`."""
    if not callable(fallback):
        return fallback
    if args or kwargs:
        try:
            inspect.signature(fallback).bind(exc, *args, **kwargs)
        except TypeError:  # it takes the exception alone
            return fallback(exc)
        except ValueError:  # no signature to read (some builtins): the documented minimum
            return fallback(exc)
        return fallback(exc, *args, **kwargs)
    return fallback(exc)
