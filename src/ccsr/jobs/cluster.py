"""What makes several servers on one database behave as one service.

Each ``ccsr serve`` is a node with an id of its own. A job it claims carries
that id (``claimed_by``) and a lease (``lease_until``) which this loop renews
every ``heartbeat_interval`` while the job runs here. Leases are written and
compared on the database's clock (:mod:`ccsr.jobs.dbclock`), never a
server's own: servers whose clocks disagree agree on which have passed. The
same loop:

* re-queues jobs whose lease has passed (their node died), at start-up and
  then at every heartbeat, whichever node notices first, and ends queued jobs
  past their start deadline;
* passes on cancels sent to another node (the ``cancel_requested`` flag) to
  this node's executor, and stops runs this node no longer holds;
* every ``poll_interval``, takes the queue order from the database (so
  ``queue_position`` counts every node's jobs, and dispatch looks for jobs
  submitted elsewhere) and refreshes the requests this node answers for but
  another node runs: their status, progress and logs as last flushed, and
  their end (which wakes status streams and waiting synchronous calls).

Polling keeps it the same on SQLite and PostgreSQL; a job submitted to this
node starts without waiting for a poll (the scheduler wakes itself).

The loop works on a :class:`NodeHost` (the scheduler): the few things it
reads and asks for are listed there, and nothing else of the scheduler is
used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any, Mapping, Optional, Protocol

from ccsr.jobs.dbclock import DbClock
from ccsr.jobs.live import LiveJobs
from ccsr.jobs.models import COMPLETED, QUEUED
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.queue_index import QueueIndex
from ccsr.jobs.store import JobStore
from ccsr.jobs.view import JobView

log = logging.getLogger("ccsr.jobs.cluster")


def make_node_id() -> str:
    """A name unique to this process (a restarted server is a new node)."""
    return f"{socket.gethostname()[:80]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def start_message(attempts: int, interruptions: int) -> str:
    """The log line of a run's start, naming a retry and the server
    interruptions before it (neither on a first, uninterrupted run)."""
    notes = ([f"attempt {attempts}"] if attempts > 1 else []) + (
        [f"after {interruptions} server interruption{'s' if interruptions > 1 else ''}"] if interruptions else [])
    return "request started" + (f" ({', '.join(notes)})" if notes else "")


def not_to_run(rec: Any, max_interruptions: int, max_attempts: int, late_message: str,
               now: Optional[float] = None) -> Optional[Outcome]:
    """How a just-claimed job ends instead of running, or None to run it.
    ``now``: the database's time (start deadlines are written in it)."""
    if rec.interruptions >= max_interruptions:
        # A request whose runs keep ending with their server (killed or
        # restarted): fail it rather than take servers down forever.
        return Outcome.failed(
            f"The request was interrupted {rec.interruptions} times while running by a server restart or kill "
            f"(max_interruptions) and is not retried again.")
    if rec.attempts > max_attempts:  # e.g. max_attempts lowered while it waited
        return Outcome.failed(
            f"The request's worker crashed on all {rec.attempts - 1} attempts it had and it is not retried again.")
    if rec.start_deadline and rec.start_deadline <= (time.time() if now is None else now):
        return Outcome.timed_out(late_message)
    return None


class NodeHost(Protocol):
    """What the node loop needs from its scheduler: exactly this."""

    #: This node's id (``claimed_by`` of the jobs it runs).
    node: str
    #: The shared job store.
    store: JobStore
    #: The database's clock as this node estimates it (start deadlines).
    db_clock: DbClock
    #: The requests this node answers for: its own runs (``local_run``) and
    #: those it watches while another node runs them.
    live: LiveJobs
    #: Each served app's queue order, for positions.
    queues: Mapping[str, QueueIndex]

    async def get(self, request_id: str) -> Optional[JobView]:
        """The request's view, loaded from the store when not in memory."""

    async def expire(self, view: JobView) -> None:
        """End a queued request whose start deadline has passed."""

    def cancel_local_run(self, view: JobView) -> None:
        """Ask this node's executor to stop the request's run."""

    def wake(self) -> None:
        """Look for work now."""


class NodeLoop:
    def __init__(self, host: NodeHost, *, lease: float, heartbeat_interval: float, poll_interval: float):
        self.host = host
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval

    async def run(self) -> None:
        next_beat = 0.0
        while True:
            await asyncio.sleep(self.poll_interval)
            # Each step on its own: a failing refresh must not stop the
            # heartbeat (the leases of this node's running jobs would pass).
            steps = [self.refresh]
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat_interval
                steps = [self.heartbeat, self.recover, self.expire_late, self.refresh, self.check_clock]
            for step in steps:
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                    log.exception("node loop: %s failed", step.__name__)
            self.host.wake()  # look for jobs submitted to other nodes

    async def check_clock(self) -> float:
        """Measure how far the database's clock is from this server's (leases
        do not depend on it, in-memory deadline checks use it) and warn when
        they differ by more than a second."""
        offset = await asyncio.to_thread(self.host.db_clock.measure)
        warning = self.host.db_clock.skew_warning()
        if warning:
            log.warning(warning)
        return offset

    async def recover(self) -> list[str]:
        """Queue again the jobs of nodes whose lease has passed."""
        ids = await asyncio.to_thread(self.host.store.recover)
        if ids:
            log.warning("re-queued %d request(s) whose server stopped renewing its lease: %s",
                        len(ids), ", ".join(ids))
            self.host.wake()
        return ids

    async def expire_late(self) -> None:
        """End queued jobs past their start deadline that this server holds no
        view of (submitted elsewhere, or before a restart); the scheduler ends
        its own views' at once."""
        host = self.host
        for rid in await asyncio.to_thread(host.store.late):
            view = await host.get(rid)
            if view is not None and not view.finished and view.status == QUEUED and not view.local_run:
                await host.expire(view)

    async def heartbeat(self) -> None:
        host = self.host
        mine = {v.request_id: v for v in list(host.live.active.values()) if v.local_run}
        if not mine:
            return
        cancels, lost = await asyncio.to_thread(host.store.heartbeat, host.node, list(mine), self.lease)
        for rid in cancels:
            view = mine[rid]
            if view.local_run and not view.cancel_requested:
                view.cancel_requested = True  # sent to another node
                host.cancel_local_run(view)
        for rid in lost:
            view = mine[rid]
            if not view.local_run:
                continue  # ended here meanwhile
            # Our lease passed (a stall longer than the lease) and another node
            # took the job over, or it was ended elsewhere: stop our run; its
            # events are ignored from now on and the refresh shows the truth.
            log.warning("request %s is no longer held by this server; stopping its run here", rid)
            view.local_run = False
            host.cancel_local_run(view)

    async def refresh(self) -> None:
        host = self.host
        keys = await asyncio.to_thread(host.store.queued_keys)
        for app_id, queue in host.queues.items():
            queue.replace(keys.get(app_id, []))
        queued = {k[2] for lst in keys.values() for k in lst}
        # Requests answered here but not run here, whose row may have moved on:
        # a queued one that left the queue, and every one running elsewhere.
        watch = [v for v in list(host.live.active.values())
                 if not v.local_run and not (v.status == QUEUED and v.request_id in queued)]
        if not watch:
            return
        records = {r.request_id: r for r in await asyncio.to_thread(host.store.get_many, [v.request_id for v in watch])}
        for view in watch:
            if view.local_run or view.request_id not in host.live.active:
                continue  # claimed or ended here while we read
            rec = records.get(view.request_id)
            if rec is None:  # deleted (retention)
                host.live.drop(view.request_id)
                view.touch()
                continue
            old = view.record
            if (rec.status, rec.attempts, rec.interruptions, rec.stored_progress, rec.log_lines, rec.cancel_requested,
                    rec.claimed_by) == (old.status, old.attempts, old.interruptions, old.stored_progress, old.log_lines,
                                        old.cancel_requested, old.claimed_by):
                continue
            if rec.log_lines != old.log_lines or rec.attempts != old.attempts:
                view.logs = None  # reloaded from the database when asked for
            if not view.store_io and rec.finished:
                rec.input = {}
            view.record = rec
            view.progress = 1.0 if rec.status == COMPLETED else (rec.stored_progress or 0.0)
            if rec.finished:
                host.live.retire(view)
            view.touch()
