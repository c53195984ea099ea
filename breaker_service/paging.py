"""`GET /breakers?limit=N&cursor=C`: pages of breakers in name order (DESIGN.md v1.1).

A page is the first `limit` names after the cursor, so pages are exactly `limit` long except the last, and no
breaker shows twice while nothing changes (a breaker created or deleted meanwhile shows or not, by its name's
place). The cursor is the last name of the previous page: clients treat it as opaque. `next_cursor` is null on
the last page. Names come from the registry (bounded by the breaker cap); only the page's snapshots are read.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from breaker_client.protocol.models import BreakerList

if TYPE_CHECKING:
    from breaker_service.store.breaker_base import BreakerStore


async def breaker_page(store: BreakerStore, *, limit: int | None, cursor: str | None) -> BreakerList:
    """The page after `cursor` (from the start when None), at most `limit` long (no limit when None)."""
    if limit is None and cursor is None:
        return BreakerList(breakers=await store.snapshots())
    names = await store.names()
    start = 0 if cursor is None else bisect.bisect_right(names, cursor)
    end = len(names) if limit is None else start + limit
    page = names[start:end]
    next_cursor = page[-1] if page and end < len(names) else None
    return BreakerList(breakers=await store.snapshots(page), next_cursor=next_cursor)
