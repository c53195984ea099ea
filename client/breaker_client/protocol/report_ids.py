"""Report ids: an outcome that carries a `report_id` is counted once, however often its reporter sends it again."""

from __future__ import annotations

import math
from typing import Final

REPORT_MIN_TTL_MS: Final = 60_000
"""A report_id is remembered for at least permit_ttl_s, and at least this long."""


def already_counted(reports: dict[str, int], report_id: str | None, permit_ttl_s: float, now_ms: int) -> bool:
    """Whether `report_id` was counted before; else remember it in `reports` (for at least permit_ttl_s).

    `reports` maps a report_id to when it may be forgotten (ms).
    """
    if report_id is None:
        return False
    for known in [r for r, forget_ms in reports.items() if forget_ms <= now_ms]:
        del reports[known]
    if report_id in reports:
        return True
    ttl_ms = max(math.floor(permit_ttl_s * 1000), REPORT_MIN_TTL_MS)
    reports[report_id] = now_ms + ttl_ms
    return False
