"""`GET /events` consumed in the background (parsed by httpx-sse): dispatch into the views, reconnection with
backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Final

import msgspec

from breaker_client._errors import ClientError
from breaker_client._logging import get_logger
from breaker_client.protocol.models import Deleted, FailureSignal, Snapshot, Transition

if TYPE_CHECKING:
    from collections.abc import Callable

    from httpx_sse import ServerSentEvent

    from breaker_client._service import ServiceConnection
    from breaker_client._views import Views

__all__ = ["EventStream"]

_log = get_logger()


class _SnapshotChunk(msgspec.Struct, frozen=True):
    """An opening `snapshot` event: the service sends at most 1,000 breakers per event, with `more` until the last
    (a v1 service sends one event without `more`)."""

    breakers: list[Snapshot]
    more: bool = False


_SNAPSHOT_LIST: Final = msgspec.json.Decoder(_SnapshotChunk)
_TRANSITION: Final = msgspec.json.Decoder(Transition)
_FAILURES: Final = msgspec.json.Decoder(FailureSignal)
_CONFIG: Final = msgspec.json.Decoder(Snapshot)
_DELETED: Final = msgspec.json.Decoder(Deleted)


class _Resync(msgspec.Struct):
    name: str | None = None


_RESYNC: Final = msgspec.json.Decoder(_Resync)


def _resync_all(data: str) -> bool:
    """Whether a `resync` event asks to read every breaker again (no name, or data this version cannot read)."""
    try:
        return _RESYNC.decode(data).name is None
    except msgspec.DecodeError:
        return True


class EventStream:
    """Keeps `views` current from the service's event stream, reconnecting with jittered exponential backoff."""

    def __init__(
        self,
        connection: ServiceConnection,
        views: Views,
        *,
        on_connect: Callable[[], None],
        on_transition: Callable[[str], None] | None = None,
        idle_timeout_s: float,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._connection = connection
        self._views = views
        self._on_connect = on_connect
        self._on_transition = on_transition
        self._idle_timeout_s = idle_timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._task: asyncio.Task[None] | None = None
        self.malformed = 0
        """Events skipped because they could not be read."""
        self._opening: list[Snapshot] = []
        """The opening snapshot's breakers so far, while `snapshot` events with `more` arrive."""

    def start(self) -> None:
        """Start consuming in a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="breaker-client-events")

    async def stop(self) -> None:
        """Stop consuming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._views.set_live(False)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._consume()
                reason = "stream ended"
            except ClientError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug here must not end the stream for good
                _log.exception("breaker.events.crashed", error=repr(exc))
                reason = repr(exc)
            if self._views.live:
                failures = 0
            self._views.set_live(False)
            delay = min(self._backoff_max_s, self._backoff_base_s * 2**failures) * random.uniform(0.5, 1.0)
            failures = min(failures + 1, 30)
            _log.info("breaker.events.reconnecting", reason=reason, delay_s=delay)
            await asyncio.sleep(delay)

    async def _consume(self) -> None:
        self._opening = []
        async with self._connection.events(idle_timeout_s=self._idle_timeout_s) as events:
            async for event in events:
                if event.event == "resync" and _resync_all(event.data):
                    # Events were missed, or a replica answered from local state: a fresh stream's snapshot
                    # replaces every view (lower generations included). A resync naming one breaker (restored
                    # after a store reset) follows that breaker's state event: nothing more to do.
                    _log.info("breaker.events.resync", data=event.data[:200])
                    return
                self._dispatch(event)

    def _dispatch(self, event: ServerSentEvent) -> None:
        try:
            match event.event:
                case "snapshot":
                    chunk = _SNAPSHOT_LIST.decode(event.data)
                    self._opening += chunk.breakers
                    if chunk.more:
                        return
                    opening, self._opening = self._opening, []
                    self._views.replace_all(opening)
                    self._views.set_live(True)
                    self._on_connect()
                case "state":
                    transition = _TRANSITION.decode(event.data)
                    if self._views.apply_transition(transition) and self._on_transition is not None:
                        self._on_transition(transition.name)
                case "failures":
                    self._views.apply_failures(_FAILURES.decode(event.data))
                case "config" | "breaker":
                    self._views.apply_snapshot(_CONFIG.decode(event.data), from_stream=True)
                case "deleted":
                    self._views.remove(_DELETED.decode(event.data).name)
                case "error":
                    # The service could not read its snapshot; it ends the stream and we reconnect.
                    _log.warning("breaker.events.service_error", data=event.data[:500])
                case _:
                    _log.debug("breaker.events.ignored", sse_event=event.event, sse_id=event.id)
        except msgspec.DecodeError as exc:
            self.malformed += 1
            self._views.notify()
            _log.warning("breaker.events.malformed", sse_event=event.event, sse_id=event.id, error=str(exc))
