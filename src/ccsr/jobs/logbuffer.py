"""Log lines on their way to the database.

A line shows in the request's status at once (it is appended to the view),
and is written in batches every ``interval`` seconds (0.5 s at most: a kill -9
loses no line older than that, and other servers sharing the database see the
lines and the progress they carry at that cadence), so a request logging
every sampling step costs one insert per batch, not per line. A request's
last lines are taken out of the batch and written in the transaction that
ends it (under ``lock``, so rows stay in order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from ccsr.jobs.store import JobStore, LogRecord
from ccsr.jobs.view import JobView

log = logging.getLogger("ccsr.jobs.logs")


class LogBuffer:
    def __init__(self, store: JobStore, interval: float = 0.5):
        self.store = store
        self.interval = interval
        self.pending: list[tuple[str, float, str, str]] = []
        self.progress: dict[str, float] = {}  # the progress of each request with pending lines
        self.lock = asyncio.Lock()

    def add(self, view: JobView, level: str, message: str, ts: Optional[float] = None) -> None:
        ts = time.time() if ts is None else ts
        if view.logs is None:
            # A request recovered after a restart: its earlier attempts' lines are
            # in the database only. Load them once (rare path) so status keeps them.
            view.logs = list(self.store.logs(view.request_id))
        view.logs.append(LogRecord(ts, level, message))
        self.pending.append((view.request_id, ts, level, message))
        self.progress[view.request_id] = view.progress
        view.touch()

    def take(self, request_id: str) -> list[tuple[float, str, str]]:
        """Remove and return one request's unwritten lines (call under ``lock``)."""
        mine = [(t, lv, m) for rid, t, lv, m in self.pending if rid == request_id]
        if mine:
            self.pending = [p for p in self.pending if p[0] != request_id]
        self.progress.pop(request_id, None)
        return mine

    def flush_now(self, batch: Optional[list] = None, progress: Optional[dict[str, float]] = None) -> None:
        """Write ``batch`` (default: everything pending) to the database (blocking)."""
        batch = batch if batch is not None else self.pending
        progress = progress if progress is not None else self.progress
        by: dict[str, list] = {}
        for rid, t, lv, m in batch:
            by.setdefault(rid, []).append((t, lv, m))
        for rid, lines in by.items():
            self.store.add_logs(rid, lines, progress.get(rid))
        if batch is self.pending:
            self.pending = []
            self.progress = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.pending:
                async with self.lock:
                    batch, self.pending = self.pending, []
                    progress, self.progress = self.progress, {}
                    try:
                        await asyncio.to_thread(self.flush_now, batch, progress)
                    except Exception:  # noqa: BLE001
                        log.exception("writing logs failed")
