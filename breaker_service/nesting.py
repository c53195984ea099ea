"""How deep a JSON text nests, measured before it is decoded.

msgspec decodes recursively and raises `RecursionError` somewhere past 1,000 levels, and a `msgspec.Raw` payload is
never decoded by us at all; the contract instead refuses anything deeper than `MAX_DEPTH` (400 ORC_001). The check
runs on bytes at C speed, with no Python-level loop per character (scripts/bench_hostile.py: 60-180 ms for the
worst 1 MiB body on a busy 2-core machine, by load; nothing measurable for an ordinary body):

1. nearly every body has at most `MAX_DEPTH` brackets in all, so it cannot nest deeper: done;
2. else drop escape pairs (`\\"` and friends), then strings, then every byte but brackets, turning openers into
   +1 and closers into -1; the deepest nesting is the largest running sum.

Dropping escapes before strings keeps step 2 linear: a string regex that handles escapes itself rescans the rest of
the body from every escaped quote of an unterminated string (quadratic in the body size).
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate, repeat
from typing import Final

MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects a request body may have (DESIGN.md v1.1)."""

_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_STEP: Final = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
"""Openers become 2 and closers 0, so that `byte - 1` is the step (bytes are unsigned)."""


def depth_of(body: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text `body` (`[]` is 1, a scalar 0)."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(_STEP, _NOT_BRACKET)
    return max(accumulate(map(operator.sub, brackets, repeat(1))), default=0)


def nests_deeper_than(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text `body` nests arrays/objects more than `limit` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    return depth_of(body) > limit
