"""Rate-limiting repeated log messages, so a flood of identical failures
(thousands of "Too many open files" tracebacks a second) cannot fill the
disk or drown the one useful line.

A filter on every handler counts records per (logger, level, message
template, exception type) in fixed windows: the first ``limit`` of a
window pass, the rest are dropped, and the next one let through says how
many similar messages were suppressed. Distinct messages are unaffected.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "ccsr", "ccsr.service")


class RepeatFilter(logging.Filter):
    """Pass at most ``limit`` records per key per ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.limit, self.window, self.clock = limit, window, clock
        self._counts: dict[tuple, list] = {}  # key -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        key = (record.name, record.levelno, str(record.msg)[:200], exc)
        now = self.clock()
        entry = self._counts.get(key)
        if entry is None or now - entry[0] >= self.window:
            suppressed = entry[2] if entry else 0
            self._counts[key] = [now, 1, 0]
            if len(self._counts) > 10_000:  # bound the table itself
                self._counts = {key: self._counts[key]}
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar messages suppressed in the last {self.window:g} s]"
            return True
        if entry[1] < self.limit:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def install_rate_limit(limit: int, window: float, loggers: Iterable[str] = LOGGERS) -> RepeatFilter:
    """Attach one shared :class:`RepeatFilter` to the handlers of ``loggers``."""
    flt = RepeatFilter(limit, window)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                handler.addFilter(flt)
    return flt
