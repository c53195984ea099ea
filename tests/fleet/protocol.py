"""What the controller and its worker processes say to each other over a pipe (all picklable, all frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Crashed", "Exit", "Ready", "Run", "RunResult", "WorkerSpec"]

Kind = Literal["client", "sync", "pybreaker", "lua"]
Until = Literal["refused", "ok", "stopped"]


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """How a worker protects its calls: `client` is ours (`breaker_client` on `service_urls`), `sync` our
    `SyncBreakerClient` with `threads` callers in one process; `pybreaker` (pybreaker with its Redis storage) and
    `lua` (one atomic check per call) are baselines on `redis_url`."""

    kind: Kind = "client"
    service_urls: tuple[str, ...] = ()
    token: str | None = None
    redis_url: str | None = None
    timeout_s: float = 5.0
    budget_wait_s: float = 2.0
    recheck_s: float = 0.2
    flush_interval_s: float = 3600.0
    """Tests flush successes only at the end of a run, so no late batch lands in the next phase."""
    ready_timeout_s: float = 20.0
    threads: int = 1
    """`sync` only: callers in the process, each with one call in flight."""


@dataclass(frozen=True, kw_only=True)
class Run:
    """One phase: every worker waits at the barrier, then calls `url` under breaker `breaker` in a loop.

    A worker stops at its first refusal (`until="refused"`), its first success (`"ok"`), or when the controller
    says so (`"stopped"`), and in any case after `max_calls` calls or `max_s` seconds. After a refusal it pauses
    `refusal_pause_s` (a caller backing off, not spinning); after every call `pause_s`.
    `threshold` and `open_timeout_s` configure the baselines' breakers; ours are configured on the service.
    """

    breaker: str
    url: str
    until: Until = "refused"
    max_calls: int = 1000
    max_s: float = 20.0
    retry_attempts: int = 1
    retry_base_s: float = 0.01
    pause_s: float = 0.0
    refusal_pause_s: float = 0.01
    call_timeout_s: float = 5.0
    threshold: int = 5
    open_timeout_s: float = 60.0


@dataclass(frozen=True)
class Exit:
    """Close the client and end the process."""


@dataclass(frozen=True)
class Ready:
    """The worker is up (for `client`: its event stream is live, unless `live` says otherwise)."""

    pid: int
    live: bool


@dataclass(frozen=True)
class Crashed:
    """The worker failed outside any call; the controller raises with this traceback."""

    pid: int
    traceback: str


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one worker saw in one run.

    `failed` counts calls the dependency failed (after their retries), `refused` calls the breaker refused, and
    `unexpected` anything else raised: an error of the client's own plumbing, which must never reach a caller.
    `acquires` and `records` count the requests the client sent to the service during the run.
    """

    pid: int
    calls: int
    ok: int
    failed: int
    refused: int
    unexpected: tuple[str, ...]
    acquires: int = 0
    records: int = 0
    degraded: bool = False
    live: bool = False
    state: str | None = None
    stopped_by: str = ""
