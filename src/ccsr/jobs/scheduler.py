"""The scheduler: decides what runs where and when, an asyncio task inside the
HTTP process.

The database is the source of truth; the scheduler keeps the live requests in
memory (:mod:`ccsr.jobs.live`) so status polling never touches the database,
and one :class:`~ccsr.jobs.queue_index.QueueIndex` per app so
``queue_position`` is a binary search. Each job is routed by its ``app_id`` to
that app's executor: whenever the executor has an idle slot, the head of the
app's queue (priority, then FIFO) is claimed in the database (atomically, so
several servers can share one; :mod:`ccsr.jobs.cluster` keeps their leases,
cancels and views in step), its input prepared by the
service (fetch, decode, checks) and put into the blob store, and a
:class:`Task` naming blobs is handed over. The executor's events become
durable state, log lines (:mod:`ccsr.jobs.logbuffer`) and one typed
:class:`Outcome` per request. It speaks no HTTP: the service renders outcomes.

A blob store that does not answer fails no request: a run it fails (storing
the input, a worker reading it or writing the result, publishing) goes back
to the queue uncounted, and while the store is down (:attr:`Storage.health`,
checked every ``store_check_interval``) this server claims nothing, so a
server cut off from its store leaves the queue to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Mapping, Optional

from ccsr.executors.base import Event, Executor, Log, Progress, Task, WorkerState
from ccsr.jobs.cluster import NodeLoop, make_node_id, not_to_run, start_message
from ccsr.jobs.config import SchedulerConfig
from ccsr.jobs.dbclock import DbClock
from ccsr.jobs.edges import Edges, Hooks, Prepared, Published
from ccsr.jobs.endings import Endings
from ccsr.jobs.live import LiveJobs
from ccsr.jobs.logbuffer import LogBuffer
from ccsr.jobs.models import CANCELLED, COMPLETED, FINAL_STATES, PRIORITY_NORMAL, QUEUED
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.queue_index import QueueIndex
from ccsr.jobs.retention import Retention
from ccsr.jobs.store import JobStore, LogRecord
from ccsr.jobs.view import JobView
from ccsr.storage import Storage, StoreUnavailable

log = logging.getLogger("ccsr.jobs.scheduler")

_CANCELLED_QUEUED = "Request was cancelled before it started."
_START_TIMEOUT = "Request was not started within its start timeout (X-Fal-Request-Timeout)."


class Scheduler(Endings):
    """Also the :class:`ccsr.jobs.cluster.NodeHost` of its node loop: ``node``,
    ``store``, ``live``, ``queues``, :meth:`get`, :meth:`expire`,
    :meth:`cancel_local_run` and :meth:`wake` are what the loop may use."""

    def __init__(self, store: JobStore, executors: Mapping[str, Executor], edges: Edges, storage: Storage,
                 config: Optional[SchedulerConfig] = None, hooks: Optional[Hooks] = None):
        """``executors`` maps each served app id to the executor running it;
        ``storage`` keeps the runs' bytes (executors get its blob store when they start)."""
        self.config = config = config or SchedulerConfig()
        self.node = config.node_id or make_node_id()
        self.node_loop = NodeLoop(self, lease=config.lease_seconds, heartbeat_interval=config.heartbeat_interval,
                                  poll_interval=config.poll_interval)
        self.store = store
        # Start deadlines are in the database's time, like leases: decided alike by every server.
        self.db_clock = DbClock(store.engine)
        self.executors = dict(executors)
        self.edges = edges
        self.storage = storage
        self.hooks = hooks or Hooks()

        self.live = LiveJobs(config.cache_size, config.finished_cache_bytes)
        self.queues: dict[str, QueueIndex] = {app_id: QueueIndex() for app_id in self.executors}
        self.logs = LogBuffer(store, config.log_flush_interval)
        self.retention = Retention(store, self.live, lambda ref: storage.run(edges.delete_file, ref),
                                   config.sweep_interval)
        self._preparing = {app_id: 0 for app_id in self.executors}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[asyncio.Task] = set()
        self._stopping = False
        self.started = False
        self.worker_messages: dict[str, str] = {}
        # Webhook outbox: outbox(session, final_view) adds the delivery row in the
        # transaction that ends the job; on_outbox() wakes the sender afterwards.
        self.outbox: Optional[Callable[[Any, JobView], None]] = None
        self.on_outbox: Optional[Callable[[], None]] = None

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Recover from the database, then start dispatching.

        Only jobs whose lease has passed are re-queued: another server sharing
        the database may be running the rest. Queued jobs stay in the database
        (dispatch claims them from there); their order is read into the queue
        index for positions. Says so when this server's clock and the
        database's disagree by more than a second."""
        await self.node_loop.check_clock()
        await self.node_loop.recover()
        await self.node_loop.refresh()
        served = set(self.queues)
        for rec in await asyncio.to_thread(self.store.unfinished):
            if rec.app_id not in served:
                log.warning("request %s is for app %s, which this server does not serve", rec.request_id, rec.app_id)
                served.add(rec.app_id)  # said once per app
        for ex in self.executors.values():
            await ex.start(self._on_event, self.storage.blobs)
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="ccsr-dispatch"),
            asyncio.create_task(self.logs.run(), name="ccsr-logs"),
            asyncio.create_task(self.retention.run(), name="ccsr-sweep"),
            asyncio.create_task(self.node_loop.run(), name="ccsr-node"),
            # an idle server notices an outage (not ready), a down one its end (claims again)
            asyncio.create_task(self.storage.watch(self.config.store_check_interval, self.wake), name="ccsr-store"),
        ]
        self.started = True

    async def stop(self) -> None:
        """Graceful shutdown: running requests go back to the queue, uncounted.

        They are not cancelled (the next start runs them again), and a clean
        restart does not use up one of their attempts the way a crash does."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        running = [v.request_id for v in self.live.running() if v.local_run]
        if running:
            await asyncio.to_thread(lambda: [self.store.release(rid, self.node) for rid in running])
            log.warning("shutting down: %d running request(s) returned to the queue", len(running))
        for ex in self.executors.values():
            await ex.close()
        await asyncio.to_thread(self.logs.flush_now)

    # --- queries ---------------------------------------------------------------------
    def queue_of(self, view: JobView) -> QueueIndex:
        return self.queues[view.app_id]

    def queue_position(self, view: JobView) -> int:
        return self.queues[view.app_id].position(view)

    def queue_depth(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def running_count(self) -> int:
        """Requests running on this server."""
        return sum(1 for v in self.live.running() if v.local_run)

    def wake(self) -> None:
        """Look for work now (a job submitted elsewhere, a freed slot)."""
        self._wake.set()

    def cancel_local_run(self, view: JobView) -> None:
        """Ask this node's executor to stop ``view``'s run (it ends through its events)."""
        self.executors[view.app_id].cancel(view.request_id)

    def cached(self, request_id: str) -> Optional[JobView]:
        return self.live.get(request_id)

    async def get(self, request_id: str) -> Optional[JobView]:
        """The request's hot state, loading finished ones from the database on demand."""
        view = self.live.get(request_id)
        if view is not None:
            return view
        if len(request_id) > 64:
            return None
        rec = await asyncio.to_thread(self.store.get, request_id)
        if rec is None:
            return None
        view = self.live.get(request_id)  # filled meanwhile?
        if view is None:
            view = JobView(rec)
            view.progress = 1.0 if rec.status == COMPLETED else (rec.stored_progress or 0.0)
            if view.finished:
                self.live.remember(view)
            elif rec.app_id in self.queues:
                self.live.add(view)  # queued or running on another server: watched by the node loop
        return view

    async def logs_of(self, view: JobView) -> list[LogRecord]:
        """The request's log lines. A finished request's are read from the
        database for the caller and not kept: the finished cache holds many
        requests, and a poll with logs after the end is rare."""
        if view.logs is not None:
            return view.logs
        logs = await asyncio.to_thread(self.store.logs, view.request_id)
        if not view.finished:
            view.logs = logs
        return logs

    async def sweep(self, now: Optional[float] = None) -> int:
        """Delete requests (rows, logs, files) whose retention has passed."""
        return await self.retention.sweep(now)

    # --- commands ----------------------------------------------------------------------
    async def submit(
        self,
        app_id: str,
        input: dict,
        *,
        params: Any = None,
        owner: Optional[str],
        priority: int = PRIORITY_NORMAL,
        base_url: Optional[str] = None,
        webhook_url: Optional[str] = None,
        start_timeout: Optional[float] = None,
        ttl: Optional[float] = None,
        store_io: bool = True,
        request_id: Optional[str] = None,
    ) -> JobView:
        """Commit a request, then queue it (the row exists before we answer).

        ``input`` is what is stored (JSON); ``params`` the app's typed
        parameters, already checked, kept on the view for the run."""
        if app_id not in self.queues:
            raise KeyError(f"app {app_id!r} is not served here")
        now = time.time()
        rid = request_id or str(uuid.uuid4())
        rec = await asyncio.to_thread(
            self.store.add, rid, input, owner=owner, app_id=app_id, priority=priority, base_url=base_url,
            webhook_url=webhook_url, start_deadline=(self.db_clock.now() + start_timeout) if start_timeout else None,
            ttl=ttl, store_io=store_io, now=now,
        )
        view = JobView(rec, params)
        view.logs = []
        self.live.add(view)
        self._enqueue(view)
        self._wake.set()
        return view

    async def cancel(self, view: JobView) -> str:
        """CANCELLATION_REQUESTED or ALREADY_COMPLETED."""
        if view.finished:
            return "ALREADY_COMPLETED"
        prior = await asyncio.to_thread(self.store.request_cancel, view.request_id)
        if prior is None or prior in FINAL_STATES:
            return "ALREADY_COMPLETED"
        view.cancel_requested = True
        if view.status == QUEUED:
            self.queue_of(view).remove(view)
            # Guarded: if another server claimed it meanwhile, this does not end
            # it; that server sees the flag at its next heartbeat and stops it.
            await self._finish(view, Outcome.cancelled(_CANCELLED_QUEUED))
        elif view.local_run:
            self.cancel_local_run(view)
        return "CANCELLATION_REQUESTED"

    async def delivered(self, view: JobView) -> None:
        """The result was handed to the client; with store_io off, forget it soon."""
        await self.retention.delivered(view, self.config.store_io_grace)

    def _enqueue(self, view: JobView) -> None:
        if view.status == QUEUED:
            self.queues[view.app_id].push(view)

    # --- dispatching ---------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:  # not wait_for: on 3.11 it can swallow stop()'s cancel (see the webhook sender)
                async with asyncio.timeout(0.5):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._expire_start_deadlines()
                for app_id, executor in self.executors.items():
                    # From the database, not the local queue: jobs submitted to
                    # other servers run here when this one has a free slot.
                    # Nothing is claimed while the blob store is down: a run could
                    # not store its input, and another server may reach the store.
                    while self.storage.health.ok and executor.idle_slots() - self._preparing[app_id] > 0:
                        rec = await asyncio.to_thread(self.store.claim_next, app_id=app_id, node=self.node,
                                                      lease=self.config.lease_seconds)
                        if rec is None:
                            break
                        await self._start(rec)
                    if not self._preparing[app_id]:
                        # Nothing more is coming: start the batch the executor gathered
                        # (each preparation's end wakes this loop).
                        executor.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep dispatching whatever happens
                log.exception("dispatch failed")
                await asyncio.sleep(0.5)

    async def _expire_start_deadlines(self) -> None:
        now = self.db_clock.now()
        late = [v for v in list(self.live.active.values())
                if v.status == QUEUED and not v.local_run and v.start_deadline and v.start_deadline <= now]
        for view in late:
            await self.expire(view)

    async def expire(self, view: JobView) -> None:
        """End a queued request whose start deadline has passed (guarded: one
        claimed meanwhile by another server keeps running)."""
        self.queue_of(view).remove(view)
        executor = self.executors.get(view.app_id)
        why = executor.unavailable() if executor is not None else None  # e.g. no actor placeable on the cluster
        await self._finish(view, Outcome.timed_out(f"{_START_TIMEOUT} {why}" if why else _START_TIMEOUT))

    async def _start(self, rec: Any) -> None:
        """Run a job this server has just claimed (``rec``: its claimed row)."""
        if rec.request_id in self.live.finished:
            return  # cancelled here while the claim was in flight: the cancel ended it
        view = self.live.active.get(rec.request_id)
        if view is None:  # submitted to another server, or before a restart
            view = JobView(rec)
            self.live.add(view)
        else:
            self.queue_of(view).remove(view)
            view.record = rec  # the claimed row (attempts, interruptions); params stay
        view.local_run = True
        if view.logs is None:  # earlier attempts' lines, loaded off the event loop
            view.logs = await asyncio.to_thread(self.store.logs, view.request_id)
        refusal = not_to_run(rec, self.config.max_interruptions, self.config.max_attempts, _START_TIMEOUT,
                             self.db_clock.now())
        if refusal is not None:
            await self._finish(view, refusal)
            return
        if view.finished:  # cancelled while the claim was in flight (the cancel has ended it)
            return
        view.progress = 0.0
        view.last_step_at = None  # the first step interval would include input decoding and encoding
        view.touch()
        self.hooks.job_started(view)
        self.logs.add(view, "INFO", start_message(view.attempts, view.interruptions))
        self._preparing[view.app_id] += 1
        self._spawn(self._prepare_and_run(view))

    def _spawn(self, coro: Awaitable) -> None:
        t = asyncio.ensure_future(coro)
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def _prepare_and_run(self, view: JobView) -> None:
        try:
            try:
                prepared = await self.edges.prepare(view)
                view.input_key = await self.storage.run(self.storage.put_run_input, view.request_id, prepared.data)
            except StoreUnavailable:  # reading a kept input or an uploaded file, storing the run's input
                await self._back_to_queue(view, "the blob store is unavailable")
                return
            except Exception as exc:  # noqa: BLE001 - bad input (a field), or a store's refusal (a safe text)
                if getattr(exc, "field", None) is None:
                    log.exception("preparing %s failed", view.request_id)
                await self._finish(view, Outcome.of_prepare_error(exc))
                return
            # No await between this check and submit: a cancel arriving in between
            # would find nothing to stop in the executor and be lost.
            if view.cancel_requested or view.finished:
                if not view.finished:
                    await self._finish(view, Outcome.cancelled("Request was cancelled."))
                return
            view.output_key = self.storage.new_result_key()  # a new file per attempt, registered if it succeeds
            task = Task(view.request_id, view.app_id, prepared.params, view.input_key, view.output_key, view.attempts,
                        prepared.output)
            try:
                self.executors[view.app_id].submit(task)
            except Exception:  # noqa: BLE001 - the slot vanished (its worker died while we prepared)
                log.warning("no worker for %s after preparing it; back to the queue", view.request_id)
                await self._back_to_queue(view)
        finally:
            self._preparing[view.app_id] -= 1
            self._wake.set()

    async def _back_to_queue(self, view: JobView, why: Optional[str] = None) -> None:
        """Hand a run this server could not carry out back to the queue: not a
        failure of the request, so the attempt is not counted (``why``: for
        its log). Another server, or this one when it can, runs it."""
        if why:
            self.logs.add(view, "WARN", f"{why}; the request goes back to the queue")
        await self._drop_blobs(view)
        view.input_key = view.output_key = None
        view.local_run = False
        if await asyncio.to_thread(self.store.release, view.request_id, self.node):
            view.status, view.started_at, view.attempts = QUEUED, None, max(0, view.attempts - 1)
            view.progress = 0.0
            self._enqueue(view)
            view.touch()
        self._wake.set()

    async def _drop_blobs(self, view: JobView) -> None:
        await self.storage.drop_leftovers(view.request_id, view.input_key, view.output_key, view.input, False)

    # --- executor events -------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if self._stopping:  # endings during shutdown are the shutdown's own cancels
            return
        if isinstance(ev, WorkerState):
            self.worker_messages[ev.worker] = ev.message
            self._wake.set()
            return
        view = self.live.active.get(ev.request_id)
        if view is None or view.finished or not view.local_run:
            return  # not (or no longer) run by this server
        if isinstance(ev, Progress):
            view.progress = ev.step / max(ev.total, 1)
            if view.last_step_at is not None and ev.step > 0:
                self.hooks.job_step(view, ev.time - view.last_step_at)
            view.last_step_at = ev.time
            self.logs.add(view, "INFO", f"step {ev.step}/{ev.total}", ev.time)
        elif isinstance(ev, Log):
            self.logs.add(view, ev.level, ev.message, ev.time)
        else:
            self._spawn(self._on_ending(view, ev))
            self._wake.set()


__all__ = ["CANCELLED", "Edges", "Hooks", "JobView", "Outcome", "Prepared", "Published", "Scheduler", "SchedulerConfig"]
