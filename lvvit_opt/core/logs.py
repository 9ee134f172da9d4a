"""Library logging with the legacy `log=` callbacks as thin adapters.

Libraries log through `logging.getLogger(__name__)`; the CLI decides what is shown.
Functions that grew a `log: Callable[[str], None]` parameter keep it for Python callers:
`say = reporter(logger, log)` logs every message AND hands it to `log` when one was given
(warnings prefixed with "WARNING: " there, as before).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

LogCallback = Optional[Callable[[str], None]]


class Reporter:
    def __init__(self, logger: logging.Logger, callback: LogCallback = None):
        self.logger, self.callback = logger, callback

    def __call__(self, message: str) -> None:
        """An informational message."""
        self.logger.info(message)
        if self.callback is not None:
            self.callback(message)

    def warning(self, message: str) -> None:
        self.logger.warning(message)
        if self.callback is not None:
            self.callback(f"WARNING: {message}")

    def debug(self, message: str) -> None:
        self.logger.debug(message)

    def child(self, prefix: str) -> "Reporter":
        """Same logger, messages to the callback indented with `prefix`."""
        callback = self.callback
        return Reporter(self.logger, (lambda m: callback(prefix + m)) if callback else None)


def reporter(logger: logging.Logger, log: "LogCallback | Reporter" = None) -> Reporter:
    if isinstance(log, Reporter):  # passed down from another library function
        return Reporter(logger, log.callback)
    return Reporter(logger, log)
