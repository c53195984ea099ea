"""The rate window's totals, read for the metrics: the same buckets `lua/record.lua` and the Python machine keep."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from breaker_client.protocol.rate_window import WINDOW_BUCKETS, bucket_ms

if TYPE_CHECKING:
    from collections.abc import Mapping

    from breaker_client.protocol.machine import BreakerMachine

__all__ = ["bucket_ms", "machine_window_totals", "window_totals"]

_FIELD: Final = re.compile(r"^(\d+):([cfs])$")


def window_totals(counters: Mapping[str, int], now_ms: int, window_s: float) -> tuple[int, int, int]:
    """(calls, failures, slow calls) from `<bucket>:c|f|s` counters, over the buckets still inside the window."""
    current = now_ms // bucket_ms(window_s)
    totals = {"c": 0, "f": 0, "s": 0}
    for field, value in counters.items():
        found = _FIELD.match(field)
        if found is not None and int(found.group(1)) > current - WINDOW_BUCKETS:
            totals[found.group(2)] += value
    return totals["c"], totals["f"], totals["s"]


def machine_window_totals(machine: BreakerMachine, now_ms: int, window_s: float) -> tuple[int, int, int]:
    """The same totals from a Python machine's window."""
    current = now_ms // bucket_ms(window_s)
    live = [bucket for index, bucket in machine.window.items() if index > current - WINDOW_BUCKETS]
    return sum(b.calls for b in live), sum(b.failures for b in live), sum(b.slow for b in live)
