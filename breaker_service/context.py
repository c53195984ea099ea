"""What the routes share for the life of one app: settings, config, auth, metrics, the store, the stop signal."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from breaker_service.errors import StoreUnavailableError
from breaker_service.event_hub import EventHub
from breaker_service.logs import DenialLog

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from breaker_service.auth import Authenticator
    from breaker_service.config import ServiceConfig
    from breaker_service.metrics import Metrics
    from breaker_service.monitor import HealthMonitor
    from breaker_service.settings import Settings
    from breaker_service.store.breaker_base import BreakerStore
    from breaker_service.store.queue_base import QueueStore


class AppContext:
    """Held in `app.state.context`; the lifespan fills in the store when `create_app` was not given one."""

    def __init__(
        self,
        *,
        settings: Settings,
        config: ServiceConfig,
        auth: Authenticator,
        metrics: Metrics,
        store: BreakerStore | None,
        queues: QueueStore | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.auth = auth
        self.metrics = metrics
        self.denials = DenialLog()
        """Denied acquires, logged once per breaker per second with their count."""
        self.hub = EventHub()
        self.denials = DenialLog()
        """The replica's one subscription to the store's events, shared by every `/events` stream."""
        self.stopping = asyncio.Event()
        """Set when the server begins to shut down: event streams end so connections can close."""
        self._store = store
        self._queues = queues
        self._monitor: HealthMonitor | None = None

    @property
    def store(self) -> BreakerStore:
        """The started store; 503 while there is none yet."""
        if self._store is None:
            raise StoreUnavailableError("the store is not started")
        return self._store

    @property
    def has_store(self) -> bool:
        """Whether a store was given or built."""
        return self._store is not None

    def use_store(self, store: BreakerStore) -> None:
        """Install the store the lifespan built."""
        self._store = store

    @property
    def queues(self) -> QueueStore:
        """The started queue store; 503 while there is none yet."""
        if self._queues is None:
            raise StoreUnavailableError("the queue store is not started")
        return self._queues

    @property
    def has_queues(self) -> bool:
        """Whether a queue store was given or built."""
        return self._queues is not None

    def use_queues(self, queues: QueueStore) -> None:
        """Install the queue store the lifespan built."""
        self._queues = queues

    @property
    def monitor(self) -> HealthMonitor:
        """Dependency health and the degradation mode; 503 until the lifespan has started it."""
        if self._monitor is None:
            raise StoreUnavailableError("the health monitor is not started")
        return self._monitor

    @property
    def has_monitor(self) -> bool:
        """Whether the lifespan has started the monitor."""
        return self._monitor is not None

    def use_monitor(self, monitor: HealthMonitor) -> None:
        """Install the monitor the lifespan built."""
        self._monitor = monitor


def context(connection: HTTPConnection) -> AppContext:
    """The context of the app serving `connection`."""
    return cast("AppContext", connection.app.state.context)
