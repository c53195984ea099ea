"""Baseline breakers for the benchmark's fleet figures, run by the same workers with the same counting.

- `pybreaker`: pybreaker's `CircuitBreaker` with `CircuitRedisStorage`, every process on the same Redis keys, so
  the fleet shares its state the way pybreaker offers it (reads and writes of separate keys, no atomic decision).
- `lua`: a naive shared breaker: one atomic Lua check per call ("open until" passed?) and one atomic Lua update per
  outcome. Each decision is atomic, but nothing bounds the calls in flight, and half-open admits everyone.

Both are synchronous, as pybreaker is (its async support needs tornado): one call in flight per process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, Protocol

import httpx
import pybreaker
import redis

from tests.fleet.protocol import Exit, Ready, Run, RunResult, WorkerSpec
from tests.fleet.worker import BARRIER_TIMEOUT_S, Outcomes

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier, Event

__all__ = ["serve_baseline"]

_CHECK: Final = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
if now_ms < open_until then return 0 end
return 1
"""
_RECORD: Final = """
-- ARGV[1] 1 failure / 0 success, ARGV[2] threshold, ARGV[3] open ms
if ARGV[1] == '0' then
  redis.call('HSET', KEYS[1], 'failures', 0)
  return 0
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('HSET', KEYS[1], 'open_until', now_ms + tonumber(ARGV[3]), 'failures', 0)
end
return failures
"""


class Refused(Exception):
    """The baseline breaker refused the call."""


class Guard(Protocol):
    def call(self, fn: Callable[[], str]) -> str: ...


class PyBreakerGuard:
    def __init__(self, client: redis.Redis, run: Run) -> None:
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=run.breaker)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=run.threshold,
            reset_timeout=run.open_timeout_s,
            state_storage=storage,
            name=run.breaker,
            throw_new_error_on_trip=False,  # the call that trips it reached the dependency: report it as a failure
        )

    def call(self, fn: Callable[[], str]) -> str:
        try:
            result: str = self._breaker.call(fn)
        except pybreaker.CircuitBreakerError as exc:
            raise Refused(str(exc)) from exc
        return result


class LuaGuard:
    def __init__(self, client: redis.Redis, run: Run) -> None:
        self._check = client.register_script(_CHECK)
        self._record = client.register_script(_RECORD)
        self._keys = [f"naive:{{{run.breaker}}}"]
        self._threshold = run.threshold
        self._open_ms = round(run.open_timeout_s * 1000)

    def call(self, fn: Callable[[], str]) -> str:
        if not int(self._check(keys=self._keys)):
            raise Refused("open")
        try:
            result = fn()
        except Exception:
            self._record(keys=self._keys, args=[1, self._threshold, self._open_ms])
            raise
        self._record(keys=self._keys, args=[0, self._threshold, self._open_ms])
        return result


def serve_baseline(conn: Connection, barrier: Barrier, stop: Event, spec: WorkerSpec) -> None:
    """The worker loop of a baseline kind."""
    if spec.redis_url is None:
        raise ValueError("a baseline worker needs redis_url")
    client = redis.Redis.from_url(spec.redis_url)
    with httpx.Client(timeout=spec.timeout_s) as http:
        conn.send(Ready(os.getpid(), True))
        while True:
            command = conn.recv()
            if isinstance(command, Exit):
                break
            assert isinstance(command, Run), command
            guard: Guard = PyBreakerGuard(client, command) if spec.kind == "pybreaker" else LuaGuard(client, command)
            barrier.wait(BARRIER_TIMEOUT_S)
            conn.send(_run(guard, http, stop, command))
    client.close()


def _run(guard: Guard, http: httpx.Client, stop: Event, run: Run) -> RunResult:
    def call() -> str:
        response = http.get(run.url)
        response.raise_for_status()
        return response.text

    outcomes = Outcomes(run, stop)
    while outcomes.more():
        outcomes.calls += 1
        try:
            guard.call(call)
        except Refused:
            outcomes.refused += 1
            if run.until != "refused":
                stop.wait(run.refusal_pause_s)
        except httpx.HTTPError:
            outcomes.failed += 1
        except Exception as exc:
            outcomes.unexpected.append(repr(exc))
        else:
            outcomes.ok += 1
    return outcomes.result()
