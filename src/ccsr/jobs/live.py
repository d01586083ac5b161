"""The requests the scheduler holds in memory: every unfinished one, and a
bounded LRU of recently finished ones (status and result polls of those are
answered without the database)."""

from __future__ import annotations

import collections
import json
from typing import Iterator, Optional

from ccsr.jobs.view import JobView


#: A finished view's fixed cost (the record's fields, the view, the dict entry),
#: measured on the soak benchmark's fake-engine requests, rounded up.
VIEW_OVERHEAD = 1536


def view_bytes(view: JobView) -> int:
    """About what a finished view holds in memory: a fixed part, its stored
    input, result and error, and the status bodies it keeps rendered."""
    size = VIEW_OVERHEAD
    for name in ("input", "result", "error"):
        value = getattr(view.record, name, None)
        if value is not None:
            size += len(json.dumps(value, default=str)) if not isinstance(value, (str, bytes)) else len(value)
    for hit in view.status_cache.values():
        size += len(hit[1])
    return size


class LiveJobs:
    def __init__(self, cache_size: int = 20000, cache_bytes: int = 64 * 2**20):
        self.cache_size = cache_size
        #: The finished cache's bound in bytes (about: :func:`view_bytes`), besides its count.
        self.cache_bytes = cache_bytes
        self.active: dict[str, JobView] = {}  # queued and running
        self.finished: "collections.OrderedDict[str, JobView]" = collections.OrderedDict()
        self._sizes: dict[str, int] = {}
        self.finished_bytes = 0

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
        rid = view.request_id
        self.finished[rid] = view
        self.finished.move_to_end(rid)
        self.resize(view)
        while self.finished and (len(self.finished) > self.cache_size or self.finished_bytes > self.cache_bytes):
            old, _ = self.finished.popitem(last=False)
            self.finished_bytes -= self._sizes.pop(old, 0)

    def resize(self, view: JobView) -> None:
        """Account again for a finished view whose kept bodies changed."""
        rid = view.request_id
        if rid in self.finished:
            size = view_bytes(view)
            self.finished_bytes += size - self._sizes.get(rid, 0)
            self._sizes[rid] = size

    def forget_finished(self, request_id: str) -> None:
        if self.finished.pop(request_id, None) is not None:
            self.finished_bytes -= self._sizes.pop(request_id, 0)

    def drop(self, request_id: str) -> None:
        """Forget a request (ended elsewhere, or deleted by retention)."""
        self.active.pop(request_id, None)
        self.forget_finished(request_id)

    def running(self) -> Iterator[JobView]:
        from ccsr.jobs.models import RUNNING

        return (v for v in list(self.active.values()) if v.status == RUNNING)
