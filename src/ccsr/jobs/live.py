"""The requests the scheduler holds in memory: every unfinished one, and a
bounded LRU of recently finished ones (status and result polls of those are
answered without the database)."""

from __future__ import annotations

import collections
from typing import Iterator, Optional

from ccsr.jobs.view import JobView


class LiveJobs:
    def __init__(self, cache_size: int = 20000):
        self.cache_size = cache_size
        self.active: dict[str, JobView] = {}  # queued and running
        self.finished: "collections.OrderedDict[str, JobView]" = collections.OrderedDict()

    def get(self, request_id: str) -> Optional[JobView]:
        view = self.active.get(request_id)
        return view if view is not None else self.finished.get(request_id)

    def add(self, view: JobView) -> None:
        self.active[view.request_id] = view

    def retire(self, view: JobView) -> None:
        """A request ended: out of the active set, into the finished cache.

        A finished view is only read from now on, and the cache holds up to
        ``cache_size`` of them, so it drops what can be had again: its log
        lines (all in the database by now; the first status poll asking for
        logs reloads them) and its typed parameters (parsed again from the
        stored input if ever needed). The soak benchmark saw the HTTP process
        grow by ~14 KB per finished request until the cache is full; this
        takes ~1.2 KB of a fake-engine request's ~13 KB view (more for
        requests with many log lines)."""
        self.active.pop(view.request_id, None)
        view.logs = None
        view.params = None
        self.remember(view)

    def remember(self, view: JobView) -> None:
        self.finished[view.request_id] = view
        self.finished.move_to_end(view.request_id)
        while len(self.finished) > self.cache_size:
            self.finished.popitem(last=False)

    def drop(self, request_id: str) -> None:
        """Forget a request (ended elsewhere, or deleted by retention)."""
        self.active.pop(request_id, None)
        self.finished.pop(request_id, None)

    def running(self) -> Iterator[JobView]:
        from ccsr.jobs.models import RUNNING

        return (v for v in list(self.active.values()) if v.status == RUNNING)
