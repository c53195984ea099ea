"""The client's logging: the standard `logging` module, logger `breaker_client`, silent unless the app configures it.

A library must not print: the logger carries a `NullHandler`, so without the application's own logging setup
nothing reaches stdout or stderr (not even the "last resort" handler's warnings). Each line is an event name and
`key=value` fields; the fields are also on the record as `record.breaker_client` (a dict) for structured handlers.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["LOGGER_NAME", "ClientLogger", "get_logger"]

LOGGER_NAME: Final = "breaker_client"

_LOGGER: Final = logging.getLogger(LOGGER_NAME)
_LOGGER.addHandler(logging.NullHandler())


class ClientLogger:
    """`log.warning("breaker.retry", breaker="sms", attempt=1)`: one event name, then its fields."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def debug(self, event: str, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: object) -> None:
        """An error with the traceback of the exception being handled."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def _log(self, level: int, event: str, fields: dict[str, object], *, exc_info: bool = False) -> None:
        if not self._logger.isEnabledFor(level):
            return  # the common case: nothing formatted at all
        text = " ".join(
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in fields.items()
        )
        self._logger.log(
            level,
            "%s %s" if text else "%s%s",
            event,
            text,
            exc_info=exc_info,
            extra={"breaker_client": {"event": event, **fields}},
            stacklevel=3,
        )


def _field(key: str, value: object) -> str:
    return f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"


def get_logger() -> ClientLogger:
    """The client's logger."""
    return ClientLogger(_LOGGER)
