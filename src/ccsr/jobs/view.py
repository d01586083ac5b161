"""JobView: one request's hot state, served to status polls from memory.

It wraps the stored :class:`ccsr.jobs.store.JobRecord` (every durable field is
read and written through the view, so there is one copy of each) and adds what
only lives in memory: progress, loaded log lines, the running attempt's
output blob, change notifications and the rendered-status cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Optional

from ccsr.jobs.models import COMPLETED
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.store import JobRecord, LogRecord

_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))


class JobView:
    """The stored record of one request plus its in-memory state."""

    record: JobRecord
    params: Any  # the app's typed parameters when submitted here (None after a restart)
    progress: float
    logs: Optional[list[LogRecord]]  # None: not loaded from the database yet
    last_step_at: Optional[float]
    input_key: Optional[str]  # blob this server's running attempt reads its prepared input from
    output_key: Optional[str]  # blob the running attempt writes its result to
    local_run: bool  # this server's executor runs it (else: queued, or watched while another server runs it)
    version: int  # bumped on every change; keys the rendered-status cache
    status_cache: dict
    changed: asyncio.Event
    final: asyncio.Event

    def __init__(self, record: JobRecord, params: Any = None):
        object.__setattr__(self, "record", record)
        self.params = params
        self.progress = 1.0 if record.status == COMPLETED else 0.0
        self.logs = None
        self.last_step_at = None
        self.input_key = None
        self.output_key = None
        self.local_run = False
        self.version = 0
        self.status_cache = {}
        self.changed = asyncio.Event()
        self.final = asyncio.Event()
        if record.finished:
            self.final.set()

    # The record's fields read and write through (view.status, view.attempts...).
    def __getattr__(self, name: str) -> Any:
        if name in _RECORD_FIELDS:
            return getattr(self.record, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _RECORD_FIELDS:
            setattr(self.record, name, value)
        else:
            object.__setattr__(self, name, value)

    @property
    def finished(self) -> bool:
        return self.record.finished

    @property
    def outcome(self) -> Optional[Outcome]:
        return self.record.outcome

    def touch(self) -> None:
        """Wake everyone waiting for a change of this request."""
        self.version += 1
        old, self.changed = self.changed, asyncio.Event()
        old.set()
        if self.finished:
            self.final.set()
