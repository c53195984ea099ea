"""`capture_client_logs()`: the client's log lines (logger `breaker_client`) as dicts of their event and fields."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from breaker_client._logging import LOGGER_NAME

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["capture_client_logs"]


class _Collect(logging.Handler):
    def __init__(self, into: list[dict[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = dict(getattr(record, LOGGER_NAME, {}))
        fields["log_level"] = record.levelname.lower()
        fields["message"] = record.getMessage()
        self._into.append(fields)


@contextlib.contextmanager
def capture_client_logs() -> Iterator[list[dict[str, Any]]]:
    """Every line the client logs in the block, at any level."""
    logger = logging.getLogger(LOGGER_NAME)
    lines: list[dict[str, Any]] = []
    handler = _Collect(lines)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
