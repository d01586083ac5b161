"""The queued requests of one app in run order, for dispatch and positions.

A sorted list of ``(priority, seq, request_id)`` (refreshed from the shared
database, so it holds other servers' queued jobs too): the head is the next to
run, and a request's ``queue_position`` is a binary search, so polling a deep
queue costs nothing. ``changed`` wakes whoever waits for positions to move.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any, Optional


def _key(view: Any) -> tuple[int, int, str]:
    return (view.priority, view.seq, view.request_id)


class QueueIndex:
    def __init__(self) -> None:
        self._keys: list[tuple[int, int, str]] = []
        self.version = 0
        self.changed = asyncio.Event()

    def push(self, view: Any) -> None:
        bisect.insort(self._keys, _key(view))
        self._touched()

    def remove(self, view: Any) -> bool:
        key = _key(view)
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]
            self._touched()
            return True
        return False

    def replace(self, keys: list[tuple[int, int, str]]) -> None:
        """Take the queue as the database has it (every server's queued jobs,
        sorted), so positions count the jobs submitted to other servers too."""
        if keys != self._keys:
            self._keys = list(keys)
            self._touched()

    def position(self, view: Any) -> int:
        return bisect.bisect_left(self._keys, _key(view))

    def head(self) -> Optional[str]:
        return self._keys[0][2] if self._keys else None

    def ids(self) -> list[str]:
        return [k[2] for k in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def _touched(self) -> None:
        self.version += 1
        old, self.changed = self.changed, asyncio.Event()
        old.set()
