"""Which retry policy a call uses: the breaker's own, else its `retry` config from the service, else the default."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

from breaker_client._retry import RetryPolicy

if TYPE_CHECKING:
    from breaker_client._views import Views
    from breaker_client.protocol.models import RetryConfig

__all__ = ["DEFAULT_RETRY", "configured_policy"]

DEFAULT_RETRY: Final = RetryPolicy()


@functools.lru_cache(maxsize=256)
def _policy_of(config: RetryConfig) -> RetryPolicy:
    return RetryPolicy.from_config(config)


def configured_policy(views: Views, name: str) -> RetryPolicy:
    """The policy the service configures for `name` now (a `PUT` of its retry table changes it for the next call),
    or the default while the breaker is unknown or has none."""
    view = views.get(name)
    config = None if view is None else view.config.retry
    return DEFAULT_RETRY if config is None else _policy_of(config)
