"""The sync client's section of `bench_client.py`: the added cost of one protected call in CLOSED state for
`SyncBreakerClient` on its fast path, beside pybreaker with its memory and its Redis storage, all called from plain
code in this process and interleaved in rounds, from the same run as the async figures.

The goal: the sync client's added p50 within 2x of pybreaker's in-memory breaker (which shares nothing).
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

import pybreaker
import redis

from breaker_client import RetryPolicy, SyncBreakerClient

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["sync_cost_per_call"]

THRESHOLD = 5


def noop() -> None:
    return None


def time_calls(call: Callable[[], object], count: int, into: list[int]) -> None:
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        into.append(time.perf_counter_ns() - started)


def quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def sync_cost_per_call(service_url: str, redis_url: str, token: str, *, calls: int, rounds: int) -> None:
    """Measure and print the table."""
    with SyncBreakerClient(service_url, token=token) as client:
        client.wait_for(lambda c: c.live)
        ours = client.breaker("bench-sync-cost")
        ours_no_retry = client.breaker("bench-sync-cost", retry=RetryPolicy(attempts=1))
        ours.call(noop)  # the first call is strict; its success earns the fast path
        client.wait_for(lambda c: (v := c.view("bench-sync-cost")) is not None and v.healthy)
        ours.call(noop)

        def ours_with() -> None:
            with ours:
                noop()

        memory = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=60, name="bench-sync-memory")
        redis_client = redis.Redis.from_url(redis_url)
        stored = pybreaker.CircuitBreaker(
            fail_max=THRESHOLD,
            reset_timeout=60,
            name="bench-sync-redis",
            state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis_client, namespace="bench-sync"),
        )
        cases: dict[str, Callable[[], object]] = {
            "bare fn()": noop,
            "ours sync: breaker.call(fn)": lambda: ours.call(noop),
            "ours sync: call(fn), RetryPolicy(attempts=1)": lambda: ours_no_retry.call(noop),
            "ours sync: with breaker": ours_with,
            "pybreaker, memory: breaker.call(fn)": lambda: memory.call(noop),
            "pybreaker, Redis: breaker.call(fn)": lambda: stored.call(noop),
        }
        samples: dict[str, list[int]] = {name: [] for name in cases}
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for name, call in cases.items():
                count = per_round // 10 if "Redis" in name else per_round  # round trips per call: fewer of them
                time_calls(call, min(count, 50), [])  # warm-up, not counted
                gc.collect()
                time_calls(call, max(1, count), samples[name])
        redis_client.close()

    bare_p50, bare_p99 = quantile(samples["bare fn()"], 0.5), quantile(samples["bare fn()"], 0.99)
    print(f"\n1b. SyncBreakerClient: added cost per protected call in CLOSED state ({calls} calls per case)")
    print(f"   {'case':<46}{'calls':>8}{'p50 us':>10}{'p99 us':>10}{'added p50':>11}{'added p99':>11}")
    added: dict[str, float] = {}
    for name, values in samples.items():
        p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
        added[name] = p50 - bare_p50
        extra = "" if name.startswith("bare") else f"{p50 - bare_p50:>11.2f}{p99 - bare_p99:>11.2f}"
        print(f"   {name:<46}{len(values):>8}{p50:>10.2f}{p99:>10.2f}{extra}")
    ours_added = added["ours sync: breaker.call(fn)"]
    memory_added = added["pybreaker, memory: breaker.call(fn)"]
    redis_added = added["pybreaker, Redis: breaker.call(fn)"]
    print(
        f"   ours sync vs pybreaker memory: {ours_added / memory_added:.2f}x the added p50 (target <= 2x); "
        f"pybreaker Redis vs ours sync: {redis_added / ours_added:.0f}x"
    )
