"""Admission and reporting: the fast path, the strict path through the service, and the local fallback.

A call takes the fast path (no request before it) only while the event stream is live, the breaker is known
CLOSED with no failure in a row (or forced CLOSED), and this process has seen a success through it since it was
last strict. A breaker known OPEN (or forced OPEN) is refused with no request (and the refusal is counted, sent
in a batch as a `rejected` outcome). Everything else asks the service (`acquire` with `{"lease": true}`: this
client opts into fleet budgeting), whose lease budget bounds the calls made while failures accumulate. While the
service cannot be reached, a local machine per breaker decides, and the client is `degraded` until the service
answers again; a breaker this process never saw follows its `when_unknown` there (`_local`), and a refusal made
without the service is a `CircuitOpenError` with `degraded=True`.

Every report carries a `report_id` (the same one if it is sent again), and a success without a permit says how many
failures of the breaker this process knew when the call was admitted (`failures_seen`), so a late success does not
end a streak it did not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from breaker_client._batcher import SuccessBatcher, new_report_id
from breaker_client._correlation import current_correlation_id
from breaker_client._errors import AuthenticationError, CircuitOpenError, ClientError, ForbiddenError, NotFoundError
from breaker_client._local import LocalBreakers
from breaker_client._logging import get_logger
from breaker_client._service import ServiceConnection, is_outage
from breaker_client.protocol.models import MAX_SECONDS, BreakerConfig, Decision, Outcome, State, WhenUnknown

if TYPE_CHECKING:
    from breaker_client._views import BreakerView, Epoch, Views

__all__ = ["Admission", "Route", "Ticket"]

_log = get_logger()
_MAX_DURATION_MS: Final = MAX_SECONDS * 1000
_BUDGET_POLL_FIRST_S: Final = 0.005
_BUDGET_POLL_MAX_S: Final = 0.1


class Route(enum.Enum):
    """How a call was admitted."""

    FAST = "fast"  # no request: the breaker is known healthy
    SHARED = "shared"  # the service's acquire allowed it
    LOCAL = "local"  # the local machine allowed it (service unreachable)


@dataclass(frozen=True, kw_only=True)
class Ticket:
    """An admitted call: what its outcome must carry."""

    name: str
    route: Route
    generation: int
    permit: str | None
    epoch: Epoch
    slow_call_ms: float | None
    failures_seen: int | None
    """The breaker's `counts.failure` this process knew at admission (0 when it knew nothing: the cautious side)."""


class Admission:
    """Decides whether a call may go ahead, and reports how it went."""

    def __init__(
        self,
        connection: ServiceConnection,
        views: Views,
        *,
        default_config: BreakerConfig,
        when_unknown: WhenUnknown,
        report_timeout_s: float,
        flush_interval_s: float,
        recheck_s: float,
        budget_wait_s: float,
    ) -> None:
        self._connection = connection
        self._views = views
        # A "deny" refusal of a breaker never seen says when this client asks the service again.
        self._local = LocalBreakers(
            default_config,
            lambda: int(views.now() * 1000),
            when_unknown=when_unknown,
            unknown_retry_after_s=recheck_s,
        )
        self._batcher = SuccessBatcher(self._send_batch, interval_s=flush_interval_s)
        self._report_timeout_s = report_timeout_s
        self._recheck_s = recheck_s
        self._budget_wait_s = budget_wait_s
        self._trusted: dict[str, Epoch] = {}
        # name -> (views.version, ticket): a fast-path admission stays valid until the views or the trust change.
        self._fast: dict[str, tuple[int, Ticket]] = {}
        self._degraded = False
        self._next_recheck = 0.0

    @property
    def degraded(self) -> bool:
        """True while decisions are local because the service cannot be reached."""
        return self._degraded

    def start(self) -> None:
        """Start the success flusher."""
        self._batcher.start()

    async def flush(self) -> None:
        """Send the successes counted so far."""
        await self._batcher.flush()

    async def aclose(self) -> None:
        """Flush, then stop background work."""
        await self._batcher.aclose()

    # -- admission ------------------------------------------------------------------------------------------------

    def admit_fast(self, name: str) -> Ticket | None:
        """The fast-path ticket when nothing has changed since the last fast admission of `name`, else None (then
        `admit` decides). This is the whole admission cost of a call while all is well."""
        cached = self._fast.get(name)
        if cached is not None and cached[0] == self._views.version:
            return cached[1]
        return None

    async def admit(self, name: str, when_unknown: WhenUnknown | None = None) -> Ticket:
        """A ticket for one call, or `CircuitOpenError`; `when_unknown` is what the application declared for `name`
        (None: the client's default), used only while the service cannot be reached and `name` was never seen."""
        views, now = self._views, self._views.now()
        view = views.get(name)
        if self._degraded and now < self._next_recheck:
            return self._admit_locally(name, view, when_unknown)
        if view is not None:
            self._refuse_if_known_open(view, now)
            if (
                views.live
                and view.healthy
                and (view.forced is State.CLOSED or self._trusted.get(name) == views.epoch(name))
            ):
                ticket = self._ticket(name, Route.FAST, view.generation, None, view)
                if not self._degraded:
                    self._fast[name] = (views.version, ticket)
                return ticket
        if self._degraded:
            self._next_recheck = now + self._recheck_s  # one call probes the service, the others stay local
        try:
            decision = await self._acquire_within_budget(name)
        except ClientError as exc:
            if isinstance(exc, AuthenticationError | ForbiddenError):
                raise
            self._on_service_error(exc)
            return self._admit_locally(name, view, when_unknown)
        self._set_degraded(False)
        if not decision.degraded:
            # A degraded replica answered from its local state: never keep a generation the shared state lacks.
            views.apply_decision(name, decision)
        view = views.get(name)
        if not decision.allowed:
            raise CircuitOpenError(name, decision.retry_after_s, degraded=decision.degraded)
        return self._ticket(name, Route.SHARED, decision.generation, decision.permit, view)

    def _refuse_if_known_open(self, view: BreakerView, now: float) -> None:
        if view.forced is State.OPEN and self._views.live:
            if view.deadline is None or now < view.deadline:
                self._refuse(view, now)
        elif view.forced is None and view.state is State.OPEN and view.deadline is not None and now < view.deadline:
            self._refuse(view, now)

    def _refuse(self, view: BreakerView, now: float) -> None:
        self._batcher.add_rejected(view.name)
        raise CircuitOpenError(view.name, view.retry_after_s(now))

    async def _acquire_within_budget(self, name: str) -> Decision:
        """Acquire; a denial in CLOSED means the fleet's failure budget is in flight, not an open circuit, so wait
        up to `budget_wait_s` for a slot: the calls out will either succeed (and free it) or trip the breaker."""
        give_up = time.monotonic() + self._budget_wait_s
        delay_s = _BUDGET_POLL_FIRST_S
        while True:
            decision = await self._acquire(name)
            if decision.allowed or decision.state is not State.CLOSED or time.monotonic() + delay_s > give_up:
                return decision
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _BUDGET_POLL_MAX_S)

    async def _acquire(self, name: str) -> Decision:
        try:
            return await self._connection.acquire(name)
        except NotFoundError:
            # Deleted while in use: a second acquire creates it again.
            self._forget(name)
            return await self._connection.acquire(name)

    def _admit_locally(self, name: str, view: BreakerView | None, when_unknown: WhenUnknown | None) -> Ticket:
        views = self._views
        decision = self._local.acquire(
            name, view, views.now(), learnt=views.learnt_when_unknown(name), declared=when_unknown
        )
        if not decision.allowed:
            raise CircuitOpenError(name, decision.retry_after_s, degraded=True)
        return self._ticket(name, Route.LOCAL, decision.generation, decision.permit, view)

    def _ticket(self, name: str, route: Route, generation: int, permit: str | None, view: BreakerView | None) -> Ticket:
        return Ticket(
            name=name,
            route=route,
            generation=generation,
            permit=permit,
            epoch=self._views.epoch(name),
            slow_call_ms=None if view is None else view.config.slow_call_ms,
            failures_seen=None if permit is not None else (0 if view is None else view.failures),
        )

    # -- reporting ------------------------------------------------------------------------------------------------

    def count_success(self, ticket: Ticket, duration_ms: float) -> None:
        """A fast-path success: counted, and sent with the next batch."""
        slow = ticket.slow_call_ms is not None and duration_ms >= ticket.slow_call_ms
        self._batcher.add(ticket.name, ticket.generation, duration_ms, slow=slow, failures_seen=ticket.failures_seen)

    async def report(self, ticket: Ticket, *, failed: bool, duration_ms: float) -> None:
        """Report one call's outcome; never raises."""
        duration_ms = min(max(0.0, duration_ms), _MAX_DURATION_MS)
        if ticket.route is Route.LOCAL:
            if self._degraded:
                outcome = _outcome(ticket, failed=failed, duration_ms=duration_ms, report_id=None)
                self._local.record(ticket.name, outcome, self._views.get(ticket.name), self._views.now())
            return
        if not failed:
            self._trust(ticket)
        if not failed and ticket.permit is None:
            self.count_success(ticket, duration_ms)
            return
        if failed:
            self._distrust(ticket.name)
            # Successes counted before this failure go first: sent after it, they would reset its count.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._report_timeout_s):
                    await self._batcher.drain()
        # One report_id per report: a retry of this request (on any replica) sends the same bytes.
        outcome = _outcome(ticket, failed=failed, duration_ms=duration_ms, report_id=new_report_id())
        await self._record(ticket.name, outcome, self._report_timeout_s)

    def _trust(self, ticket: Ticket) -> None:
        if ticket.route is Route.SHARED and ticket.epoch == self._views.epoch(ticket.name):
            self._trusted[ticket.name] = ticket.epoch

    async def _send_batch(self, name: str, outcome: Outcome) -> None:
        await self._record(name, outcome, None)

    async def _record(self, name: str, outcome: Outcome, timeout_s: float | None) -> None:
        try:
            snapshot = await self._connection.record(name, outcome, timeout_s=timeout_s)
        except NotFoundError:
            self._forget(name)
        except ClientError as exc:
            _log.warning("breaker.report_failed", breaker=name, error=str(exc), correlation_id=current_correlation_id())
            self._on_service_error(exc)
            if self._degraded and outcome.outcome == "failure":
                self._local.record(name, outcome, self._views.get(name), self._views.now())
        else:
            self._set_degraded(False)
            self._views.apply_snapshot(snapshot, from_stream=False)

    # -- knowledge ------------------------------------------------------------------------------------------------

    def on_stream_connected(self) -> None:
        """The event stream delivered its snapshot: the service is back, shared state rules again."""
        self._set_degraded(False)

    def _distrust(self, name: str) -> None:
        self._trusted.pop(name, None)
        self._fast.pop(name, None)

    def _forget(self, name: str) -> None:
        self._distrust(name)
        self._views.remove(name)

    def _on_service_error(self, exc: ClientError) -> None:
        if is_outage(exc):
            self._set_degraded(True, reason=str(exc))
        else:
            _log.error("breaker.service_refused", error=str(exc), correlation_id=current_correlation_id())

    def _set_degraded(self, degraded: bool, *, reason: str | None = None) -> None:
        if degraded:
            self._next_recheck = self._views.now() + self._recheck_s
        if degraded == self._degraded:
            return
        self._degraded = degraded
        self._trusted.clear()
        self._fast.clear()
        if degraded:
            _log.warning("breaker.degraded", reason=reason, base_url=self._connection.base_url)
        else:
            self._local.clear()
            _log.info("breaker.recovered", base_url=self._connection.base_url)
        self._views.invalidate_all()


def _outcome(ticket: Ticket, *, failed: bool, duration_ms: float, report_id: str | None) -> Outcome:
    return Outcome(
        outcome="failure" if failed else "success",
        duration_ms=duration_ms,
        permit=ticket.permit,
        generation=ticket.generation,
        failures_seen=None if failed else ticket.failures_seen,
        report_id=report_id,
    )
