"""The scheduler: the queue's brain, an asyncio task inside the HTTP process.

The database is the source of truth; the scheduler keeps a hot copy of every
unfinished (and recently finished) request in memory so status polling never
touches the database, and an ordered index of queued requests so
``queue_position`` is a binary search. It claims the head of the queue
(priority, then FIFO) whenever the executor has an idle slot, prepares the
input (fetch, decode, size checks) in a thread, hands the task over, and turns
the executor's events into durable state, log lines, metrics and webhooks.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import logging
import os
import secrets
import string
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional, Protocol

from ccsr.jobs.executor import Done, Event, Executor, Failed, Log, Progress, Task, WorkerLost, WorkerState
from ccsr.jobs.models import CANCELLED, COMPLETED, FAILED, FINAL_STATES, PRIORITY_NORMAL, QUEUED, RUNNING
from ccsr.jobs.store import JobRecord, JobStore, LogRecord

log = logging.getLogger("ccsr.jobs.scheduler")

#: Seconds a result stays downloadable after delivery when X-Fal-Store-IO is 0.
STORE_IO_GRACE = 60.0


class InputProblem(Exception):
    """The request's input cannot be used (maps to a 422 naming the field)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Files(Protocol):
    """Where results are written and how they are addressed."""

    def result_target(self, request_id: str, file_name: str) -> tuple[str, str]:
        """(absolute path to write, URL path like "/files/...") for a result file."""

    def adopt(self, path: str, url_path: str, *, owner: Optional[str], ttl: Optional[float]) -> None:
        """Publish a finished result file written at ``path`` under ``url_path``."""

    def delete(self, url_path: str) -> None:
        """Remove a file written for a job (missing files are fine)."""


@dataclasses.dataclass
class JobView:
    """The hot, in-memory state of one request."""

    request_id: str
    seq: int
    owner: Optional[str]
    status: str
    priority: int
    created_at: float
    input: dict
    base_url: Optional[str] = None
    webhook_url: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    start_deadline: Optional[float] = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: float = 0.0
    logs: Optional[list[LogRecord]] = None  # None: not loaded from the database yet
    result: Optional[dict] = None
    error: Optional[str] = None
    error_type: Optional[str] = None
    error_status: Optional[int] = None
    error_body: Optional[dict] = None
    inference_time: Optional[float] = None
    ttl: Optional[float] = None
    expires_at: Optional[float] = None
    store_io: bool = True
    delivered_at: Optional[float] = None
    files: list[str] = dataclasses.field(default_factory=list)
    last_step_at: Optional[float] = None
    # (path the worker writes, URL path, file name) of the running attempt's result
    output: Optional[tuple[str, str, str]] = None
    version: int = 0  # bumped on every change; keys the rendered-status cache
    status_cache: dict = dataclasses.field(default_factory=dict)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    final: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def key(self) -> tuple[int, int]:
        return (self.priority, self.seq)

    @classmethod
    def from_record(cls, r: JobRecord) -> "JobView":
        v = cls(
            request_id=r.request_id, seq=r.seq, owner=r.owner, status=r.status, priority=r.priority,
            created_at=r.created_at, input=r.input, base_url=r.base_url, webhook_url=r.webhook_url,
            started_at=r.started_at, finished_at=r.finished_at, start_deadline=r.start_deadline,
            attempts=r.attempts, cancel_requested=r.cancel_requested, result=r.result, error=r.error,
            error_type=r.error_type, error_status=r.error_status, error_body=r.error_body,
            inference_time=r.inference_time, ttl=r.ttl, expires_at=r.expires_at, store_io=r.store_io,
            delivered_at=r.delivered_at, files=list(r.files),
        )
        if v.finished:
            v.progress = 1.0 if r.status == COMPLETED else 0.0
            v.final.set()
        return v

    def touch(self) -> None:
        """Wake everyone waiting for a change of this request."""
        self.version += 1
        old, self.changed = self.changed, asyncio.Event()
        old.set()
        if self.finished:
            self.final.set()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def random_file_name(ext: str = "png") -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12)) + "." + ext


class Hooks:
    """Things the scheduler tells the rest of the service (metrics, webhooks)."""

    def job_started(self, view: JobView) -> None: ...
    def job_step(self, view: JobView, seconds: float) -> None: ...
    def job_finished(self, view: JobView) -> None: ...


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        files: Files,
        *,
        prepare_input: Callable[[JobView, str], Awaitable[None]],
        work_dir: str,
        result_ttl: float = 7 * 24 * 3600,
        max_attempts: int = 2,
        max_output_pixels: int = 4096 * 4096,
        hooks: Optional[Hooks] = None,
        sweep_interval: float = 30.0,
        store_io_grace: float = STORE_IO_GRACE,
        cache_size: int = 20000,
    ):
        """``await prepare_input(view, dest_path)`` fetches and checks the input image
        and writes it to ``dest_path``; it raises
        :class:`InputProblem` (or anything with ``field``/``message``) for bad input."""
        self.store = store
        self.executor = executor
        self.files = files
        self.prepare_input = prepare_input
        self.work_dir = work_dir
        self.result_ttl = result_ttl
        self.max_attempts = max_attempts
        self.max_output_pixels = max_output_pixels
        self.hooks = hooks or Hooks()
        self.sweep_interval = sweep_interval
        self.store_io_grace = store_io_grace
        self.cache_size = cache_size

        self.active: dict[str, JobView] = {}  # queued and running
        self.finished_cache: "collections.OrderedDict[str, JobView]" = collections.OrderedDict()
        self._queue: list[tuple[int, int, str]] = []  # (priority, seq, id), sorted
        self._preparing = 0
        self._pending_logs: list[tuple[str, float, str, str]] = []
        self._wake = asyncio.Event()
        self.queue_changed = asyncio.Event()
        self.queue_version = 0
        self._log_lock = asyncio.Lock()  # keeps log rows in order between the flusher and endings
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
        """Recover from the database, then start dispatching."""
        os.makedirs(self.work_dir, exist_ok=True)
        recovered = await asyncio.to_thread(self.store.recover)
        if recovered:
            log.warning("re-queued %d request(s) interrupted by a restart: %s", len(recovered), ", ".join(recovered))
        for rec in await asyncio.to_thread(self.store.unfinished):
            view = JobView.from_record(rec)
            self.active[view.request_id] = view
            self._enqueue(view)
        await self.executor.start(self._on_event)
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="ccsr-dispatch"),
            asyncio.create_task(self._log_flush_loop(), name="ccsr-logs"),
            asyncio.create_task(self._sweep_loop(), name="ccsr-sweep"),
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
        running = [v.request_id for v in self.active.values() if v.status == RUNNING]
        if running:
            await asyncio.to_thread(lambda: [self.store.release(rid) for rid in running])
            log.warning("shutting down: %d running request(s) returned to the queue", len(running))
        await self.executor.close()
        await asyncio.to_thread(self._flush_logs_now)

    # --- queries ---------------------------------------------------------------------
    def queue_position(self, view: JobView) -> int:
        return bisect.bisect_left(self._queue, (view.priority, view.seq, view.request_id))

    def queue_depth(self) -> int:
        return len(self._queue)

    def running_count(self) -> int:
        return sum(1 for v in self.active.values() if v.status == RUNNING)

    def cached(self, request_id: str) -> Optional[JobView]:
        view = self.active.get(request_id)
        if view is None:
            view = self.finished_cache.get(request_id)
        return view

    async def get(self, request_id: str) -> Optional[JobView]:
        """The request's hot state, loading finished ones from the database on demand."""
        view = self.cached(request_id)
        if view is not None:
            return view
        if len(request_id) > 64:
            return None
        rec = await asyncio.to_thread(self.store.get, request_id)
        if rec is None:
            return None
        view = self.cached(request_id)  # filled meanwhile?
        if view is None:
            view = JobView.from_record(rec)
            if view.finished:
                self._remember(view)
        return view

    async def logs_of(self, view: JobView) -> list[LogRecord]:
        if view.logs is None:
            view.logs = await asyncio.to_thread(self.store.logs, view.request_id)
        return view.logs

    # --- commands ----------------------------------------------------------------------
    async def submit(
        self,
        input: dict,
        *,
        owner: Optional[str],
        priority: int = PRIORITY_NORMAL,
        base_url: Optional[str] = None,
        webhook_url: Optional[str] = None,
        start_timeout: Optional[float] = None,
        ttl: Optional[float] = None,
        store_io: bool = True,
        request_id: Optional[str] = None,
    ) -> JobView:
        """Commit a request, then queue it (the row exists before we answer)."""
        now = time.time()
        rid = request_id or str(uuid.uuid4())
        rec = await asyncio.to_thread(
            self.store.add, rid, input, owner=owner, priority=priority, base_url=base_url,
            webhook_url=webhook_url, start_deadline=(now + start_timeout) if start_timeout else None,
            ttl=ttl, store_io=store_io, now=now,
        )
        view = JobView.from_record(rec)
        view.logs = []
        self.active[rid] = view
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
            self._dequeue(view)
            await self._finish(view, CANCELLED, error="Request was cancelled before it started.",
                               error_type="request_cancelled", error_status=400)
        else:
            self.executor.cancel(view.request_id)
        return "CANCELLATION_REQUESTED"

    async def delivered(self, view: JobView) -> None:
        """The result was handed to the client; with store_io off, forget it soon."""
        if view.delivered_at is not None:
            return
        now = time.time()
        view.delivered_at = now
        expires = None
        if not view.store_io:
            expires = min(view.expires_at or now + self.store_io_grace, now + self.store_io_grace)
            view.expires_at = expires
        await asyncio.to_thread(self.store.mark_delivered, view.request_id, now, expires)

    # --- queue index ---------------------------------------------------------------------
    def _enqueue(self, view: JobView) -> None:
        if view.status != QUEUED:
            return
        bisect.insort(self._queue, (view.priority, view.seq, view.request_id))
        self._queue_touched()

    def _dequeue(self, view: JobView) -> None:
        key = (view.priority, view.seq, view.request_id)
        i = bisect.bisect_left(self._queue, key)
        if i < len(self._queue) and self._queue[i] == key:
            del self._queue[i]
            self._queue_touched()

    def _queue_touched(self) -> None:
        self.queue_version += 1
        old, self.queue_changed = self.queue_changed, asyncio.Event()
        old.set()

    def _remember(self, view: JobView) -> None:
        self.finished_cache[view.request_id] = view
        self.finished_cache.move_to_end(view.request_id)
        while len(self.finished_cache) > self.cache_size:
            self.finished_cache.popitem(last=False)

    # --- dispatching ---------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._expire_start_deadlines()
                while self._queue and self.executor.idle_slots() - self._preparing > 0:
                    _, _, rid = self._queue[0]
                    view = self.active[rid]
                    self._dequeue(view)
                    await self._start(view)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep dispatching whatever happens
                log.exception("dispatch failed")
                await asyncio.sleep(0.5)

    async def _expire_start_deadlines(self) -> None:
        now = time.time()
        late = [self.active[rid] for _, _, rid in self._queue if (d := self.active[rid].start_deadline) and d <= now]
        for view in late:
            self._dequeue(view)
            await self._finish(
                view, FAILED,
                error=f"Request was not started within its start timeout (X-Fal-Request-Timeout).",
                error_type="request_timeout", error_status=504,
            )

    async def _start(self, view: JobView) -> None:
        if view.attempts >= self.max_attempts:
            # It was interrupted (server restart or worker crash) on every attempt it had.
            await self._finish(
                view, FAILED,
                error=f"The request was interrupted {view.attempts} times while running (worker crash or "
                      f"server restart) and is not retried again.",
                error_type="internal_server_error", error_status=500,
            )
            return
        try:
            ok = await asyncio.to_thread(self.store.claim, view.request_id)
        except Exception:
            # The database failed (not the request): keep it at its place in the
            # queue so the dispatch loop tries again, rather than dropping it.
            self._enqueue(view)
            raise
        if not ok:
            rec = await asyncio.to_thread(self.store.get, view.request_id)
            if rec is not None and rec.status == QUEUED and rec.cancel_requested:
                await self._finish(view, CANCELLED, error="Request was cancelled before it started.",
                                   error_type="request_cancelled", error_status=400)
            else:
                # Claimed elsewhere (another server on the same database).
                self.active.pop(view.request_id, None)
            return
        if view.finished:  # cancelled while the claim was in flight (the cancel has ended it)
            return
        view.status = RUNNING
        view.started_at = time.time()
        view.attempts += 1
        view.last_step_at = None  # the first step interval would include input decoding and encoding
        view.touch()
        self.hooks.job_started(view)
        self._add_log(view, "INFO", "request started" + (f" (attempt {view.attempts})" if view.attempts > 1 else ""))
        self._preparing += 1
        t = asyncio.create_task(self._prepare_and_run(view))
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def _prepare_and_run(self, view: JobView) -> None:
        input_path = os.path.join(self.work_dir, f"{view.request_id}.png")
        try:
            try:
                await self.prepare_input(view, input_path)
            except Exception as exc:  # noqa: BLE001
                field = getattr(exc, "field", None)
                message = getattr(exc, "message", None) or str(exc)
                if field is None:
                    log.exception("preparing %s failed", view.request_id)
                    await self._finish(view, FAILED, error=f"Could not prepare the input: {message}",
                                       error_type="internal_server_error", error_status=500)
                else:
                    await self._finish(view, FAILED, error=f"{field}: {message}", error_type="validation_error",
                                       error_status=422, error_body=validation_body(field, message))
                _unlink(input_path)
                return
            if view.cancel_requested or view.finished:
                if not view.finished:
                    await self._finish(view, CANCELLED, error="Request was cancelled.", error_type="request_cancelled",
                                       error_status=400)
                _unlink(input_path)
                return
            file_name = random_file_name("png")
            out_path, url_path = self.files.result_target(view.request_id, file_name)
            view.output = (out_path, url_path, file_name)
            params = {k: v for k, v in view.input.items() if k != "image_url"}
            task = Task(view.request_id, input_path, params, out_path, view.attempts, self.max_output_pixels)
            try:
                self.executor.submit(task)
            except Exception:  # noqa: BLE001 - the slot vanished (its worker died while we prepared)
                log.warning("no worker for %s after preparing it; back to the queue", view.request_id)
                _unlink(input_path)
                if await asyncio.to_thread(self.store.release, view.request_id):
                    view.status, view.started_at, view.attempts = QUEUED, None, max(0, view.attempts - 1)
                    self._enqueue(view)
                    view.touch()
        finally:
            self._preparing -= 1
            self._wake.set()

    # --- executor events -------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if self._stopping:  # endings during shutdown are the shutdown's own cancels
            return
        if isinstance(ev, WorkerState):
            self.worker_messages[ev.worker] = ev.message
            self._wake.set()
            return
        view = self.active.get(ev.request_id)
        if view is None or view.finished:
            return
        if isinstance(ev, Progress):
            view.progress = ev.step / max(ev.total, 1)
            if view.last_step_at is not None and ev.step > 0:
                self.hooks.job_step(view, ev.time - view.last_step_at)
            view.last_step_at = ev.time
            self._add_log(view, "INFO", f"step {ev.step}/{ev.total}", ev.time)
        elif isinstance(ev, Log):
            self._add_log(view, ev.level, ev.message, ev.time)
        else:
            self._spawn(self._on_ending(view, ev))
            self._wake.set()

    def _spawn(self, coro: Awaitable) -> None:
        t = asyncio.ensure_future(coro)
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def _on_ending(self, view: JobView, ev: Event) -> None:
        input_path = os.path.join(self.work_dir, f"{view.request_id}.png")
        out = view.output
        if isinstance(ev, Done):
            out_path, url_path, file_name = out
            ttl = view.ttl if view.ttl is not None else self.result_ttl
            try:
                await asyncio.to_thread(self.files.adopt, out_path, url_path, owner=view.owner, ttl=ttl)
            except Exception as exc:  # noqa: BLE001
                log.exception("storing the result of %s failed", view.request_id)
                await self._finish(view, FAILED, error=f"Could not store the result: {exc}",
                                   error_type="internal_server_error", error_status=500)
                _unlink(input_path)
                return
            result = {
                "image": {
                    "url": url_path,
                    "content_type": "image/png",
                    "file_name": file_name,
                    "file_size": ev.file_size,
                    "width": ev.width,
                    "height": ev.height,
                },
                "seed": ev.seed,
            }
            self._add_log(view, "INFO", f"done in {ev.inference_time:.2f}s, output {ev.width}x{ev.height}, seed {ev.seed}")
            await self._finish(view, COMPLETED, result=result, inference_time=ev.inference_time, files=[url_path])
        elif isinstance(ev, Failed):
            if out is not None:
                self.files.delete(out[1])
            if ev.kind == "cancelled":
                await self._finish(view, CANCELLED, error="Request was cancelled while running.",
                                   error_type="request_cancelled", error_status=400)
            elif ev.kind == "invalid":
                field = ev.field or "body"
                await self._finish(view, FAILED, error=f"{field}: {ev.message}", error_type="validation_error",
                                   error_status=422, error_body=validation_body(field, ev.message))
            else:  # _finish logs the error line
                error_type = "out_of_memory" if ev.kind == "oom" else "internal_server_error"
                await self._finish(view, FAILED, error=ev.message, error_type=error_type, error_status=500)
        elif isinstance(ev, WorkerLost):
            if out is not None:
                self.files.delete(out[1])
            self._add_log(view, "ERROR", ev.message)
            if view.cancel_requested:
                await self._finish(view, CANCELLED, error="Request was cancelled while running.",
                                   error_type="request_cancelled", error_status=400)
            elif view.attempts < self.max_attempts:
                self._add_log(view, "WARN", f"retrying (attempt {view.attempts + 1} of {self.max_attempts})")
                if await asyncio.to_thread(self.store.requeue, view.request_id):
                    view.status = QUEUED
                    view.started_at = None
                    view.progress = 0.0
                    self._enqueue(view)
                    view.touch()
            else:
                await self._finish(
                    view, FAILED,
                    error=f"{ev.message}; the request was tried {view.attempts} times and failed every time, "
                          f"so it is not retried again.",
                    error_type="internal_server_error", error_status=500,
                )
        _unlink(input_path)

    # --- endings ---------------------------------------------------------------------------
    async def _finish(
        self,
        view: JobView,
        status: str,
        *,
        result: Optional[dict] = None,
        error: Optional[str] = None,
        error_type: Optional[str] = None,
        error_status: Optional[int] = None,
        error_body: Optional[dict] = None,
        inference_time: Optional[float] = None,
        files: Optional[list[str]] = None,
    ) -> None:
        if view.finished:
            return
        now = time.time()
        if error is not None and error_body is None:
            error_body = {"detail": error, "error_type": error_type}
        ttl = view.ttl if view.ttl is not None else self.result_ttl
        expires_at = now + ttl
        if error is not None:
            self._add_log(view, "ERROR", error)
        in_tx = None
        if view.webhook_url and self.outbox is not None:
            final = dataclasses.replace(
                view, status=status, result=result, error=error, error_type=error_type, error_status=error_status,
                error_body=error_body, inference_time=inference_time, finished_at=now,
            )
            outbox = self.outbox
            in_tx = lambda session: outbox(session, final)  # noqa: E731

        def persist() -> bool:
            self.store.add_logs(view.request_id, lines)
            ok = self.store.finish(
                view.request_id, status, result=result, error=error, error_type=error_type,
                error_status=error_status, error_body=error_body, inference_time=inference_time,
                expires_at=expires_at, files=files, now=now, in_transaction=in_tx,
            )
            if ok and not view.store_io:
                self.store.scrub_input(view.request_id)
            return ok

        async with self._log_lock:
            lines = self._take_logs(view.request_id)
            ok = await asyncio.to_thread(persist)
        if not ok:
            # Someone else ended it (another server); take the database's word.
            rec = await asyncio.to_thread(self.store.get, view.request_id)
            if rec is None:
                self.active.pop(view.request_id, None)
                return
            fresh = JobView.from_record(rec)
            status, result, error, error_type = fresh.status, fresh.result, fresh.error, fresh.error_type
            error_status, error_body, inference_time = fresh.error_status, fresh.error_body, fresh.inference_time
            expires_at, files = fresh.expires_at, fresh.files
        view.status, view.finished_at, view.result = status, now, result
        view.error, view.error_type, view.error_status, view.error_body = error, error_type, error_status, error_body
        view.inference_time, view.expires_at = inference_time, expires_at
        view.files = list(files or [])
        if status == COMPLETED:
            view.progress = 1.0
        if not view.store_io:
            view.input = {}
        self.active.pop(view.request_id, None)
        self._remember(view)
        view.touch()
        if in_tx is not None and ok and self.on_outbox is not None:
            self.on_outbox()
        try:
            self.hooks.job_finished(view)
        except Exception:  # noqa: BLE001 - a hook must not break the queue
            log.exception("job_finished hook failed for %s", view.request_id)

    # --- logs ----------------------------------------------------------------------------------
    def _add_log(self, view: JobView, level: str, message: str, ts: Optional[float] = None) -> None:
        ts = time.time() if ts is None else ts
        if view.logs is None:
            # A request recovered after a restart: its earlier attempts' lines are
            # in the database only. Load them once (rare path) so status keeps them.
            view.logs = list(self.store.logs(view.request_id))
        view.logs.append(LogRecord(ts, level, message))
        self._pending_logs.append((view.request_id, ts, level, message))
        view.touch()

    def _take_logs(self, request_id: str) -> list[tuple[float, str, str]]:
        mine = [(t, lv, m) for rid, t, lv, m in self._pending_logs if rid == request_id]
        if mine:
            self._pending_logs = [p for p in self._pending_logs if p[0] != request_id]
        return mine

    def _flush_logs_now(self, batch: Optional[list] = None) -> None:
        batch = batch if batch is not None else self._pending_logs
        by: dict[str, list] = {}
        for rid, t, lv, m in batch:
            by.setdefault(rid, []).append((t, lv, m))
        for rid, lines in by.items():
            self.store.add_logs(rid, lines)

    async def _log_flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._pending_logs:
                async with self._log_lock:
                    batch, self._pending_logs = self._pending_logs, []
                    try:
                        await asyncio.to_thread(self._flush_logs_now, batch)
                    except Exception:  # noqa: BLE001
                        log.exception("writing logs failed")

    # --- retention -----------------------------------------------------------------------------
    async def sweep(self, now: Optional[float] = None) -> int:
        """Delete requests (rows, logs, files) whose retention has passed."""
        expired = await asyncio.to_thread(self.store.expired, now)
        for rec in expired:
            for f in rec.files:
                try:
                    self.files.delete(f)
                except Exception:  # noqa: BLE001
                    log.exception("deleting %s failed", f)
            await asyncio.to_thread(self.store.delete, rec.request_id)
            self.finished_cache.pop(rec.request_id, None)
        return len(expired)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001
                log.exception("retention sweep failed")


def validation_body(field: str, message: str) -> dict:
    """FastAPI's 422 shape for one bad field of the request body."""
    loc = ["body"] + ([field] if field and field != "body" else [])
    return {"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
