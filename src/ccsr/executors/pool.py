"""WorkerPool: the local :class:`Executor` of one app, one spawned model process per device.

Each worker holds the model once and runs one batch at a time: with
``batch_size`` 1 (the default) a batch is one request; with more, an idle
worker takes up to ``batch_size`` requests from the queue at once, and those
of one shape and settings go through the network together (see
:func:`ccsr.executors.worker.run_tasks`). The tasks the scheduler hands over while a
worker gathers its batch are sent when the batch is full, when the scheduler
has nothing more in preparation (:meth:`WorkerPool.flush`) or after
``batch_wait`` seconds, whichever comes first. A worker that dies is noticed through its
pipe (EOF), reported as :class:`WorkerLost` for the request it was running,
and started again. All bookkeeping happens on the event loop thread; one small
reader thread per worker only forwards messages to the loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import threading
import time
from typing import Any, Optional

from ccsr.executors.base import Done, Emit, Executor, Failed, Task, WorkerLost, WorkerState, post_to_loop
from ccsr.executors.worker import worker_main
from ccsr.storage import BlobStore

log = logging.getLogger("ccsr.executors.pool")


class _Worker:
    def __init__(self, name: str, device: str):
        self.name = name
        self.device = device
        self.process: Optional[Any] = None
        self.conn: Optional[Any] = None
        self.generation = 0
        self.ready = False
        #: Request ids sent to the process and not ended yet.
        self.tasks: set[str] = set()
        #: Tasks gathered for the next batch, not sent yet.
        self.pending: list[Task] = []
        self.load_failures = 0
        self.last_error = ""
        self.info: dict = {}


class WorkerPool(Executor):
    """Model worker processes of the app ``app_ref`` ("module:Class", see
    :attr:`ccsr.apps.App.ref`), one per device in ``devices``. ``factory``
    ("module:function") replaces the app's own engine factory."""

    def __init__(
        self,
        settings: dict,
        devices: list[str],
        app_ref: str,
        factory: Optional[str] = None,
        restart_delay: float = 0.5,
        batch_size: int = 1,
        batch_wait: float = 0.5,
    ):
        self.settings = settings
        self.app_ref = app_ref
        self.factory = factory
        self.restart_delay = restart_delay
        self.batch_size = max(1, int(batch_size))
        self.batch_wait = float(batch_wait)
        #: Tasks handed over when no gathering worker had room (its batch left on a
        #: timer before a slow preparation ended): the next free worker takes them.
        self.backlog: list[Task] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self.workers = [_Worker(f"worker-{i}", d) for i, d in enumerate(devices)]
        self._emit: Optional[Emit] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._store_spec: dict = {}
        self._closing = False
        self._ctx = mp.get_context("spawn")

    # --- Executor ---------------------------------------------------------------
    async def start(self, emit: Emit, blobs: BlobStore) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._store_spec = blobs.spec()  # each worker process opens the store once from it
        for w in self.workers:
            self._spawn(w)

    def idle_slots(self) -> int:
        room = sum(self.batch_size - len(w.pending) for w in self.workers if self._gathering(w))
        return max(0, room - len(self.backlog))

    def submit(self, task: Task) -> None:
        if not any(w.ready for w in self.workers):
            raise RuntimeError("no idle worker")  # it died meanwhile: the scheduler re-queues the task
        for w in self.workers:
            if self._gathering(w) and len(w.pending) < self.batch_size:
                w.pending.append(task)
                if len(w.pending) >= self.batch_size:
                    self._send(w)
                elif self._timer is None and self._loop is not None:
                    self._timer = self._loop.call_later(self.batch_wait, self.flush)
                return
        self.backlog.append(task)

    def flush(self) -> None:
        """Send every gathered batch now (the scheduler has nothing more to hand over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for w in self.workers:
            if w.pending:
                self._send(w)

    def cancel(self, request_id: str) -> None:
        for w in self.workers:
            if any(t.request_id == request_id for t in w.pending):
                self._send(w)  # the worker ends it before it starts
            if request_id in w.tasks and w.conn is not None:
                try:
                    w.conn.send(("cancel", request_id))
                except (OSError, BrokenPipeError):
                    pass
        for t in list(self.backlog):
            if t.request_id == request_id:
                self.backlog.remove(t)
                # Delivered on the next loop turn, as every other event: never inside the caller's cancel.
                self._loop.call_soon(self._emit, Failed.cancelled(request_id))

    def _gathering(self, w: _Worker) -> bool:
        """Ready, and not running a batch: it can take more tasks."""
        return w.ready and not w.tasks

    def _send(self, w: _Worker) -> None:
        tasks, w.pending = w.pending, []
        w.tasks.update(t.request_id for t in tasks)
        try:
            w.conn.send(("run", tasks))
        except (OSError, BrokenPipeError, AttributeError):
            # The reader thread will see the death and report WorkerLost.
            pass

    def _take_backlog(self, w: _Worker) -> None:
        if self.backlog and self._gathering(w):
            w.pending, self.backlog = self.backlog[: self.batch_size], self.backlog[self.batch_size :]
            self._send(w)

    @property
    def ready(self) -> bool:
        return any(w.ready for w in self.workers)

    def describe(self) -> list[dict]:
        return [
            {
                "name": w.name,
                "device": w.device,
                "ready": w.ready,
                "busy": bool(w.tasks),
                "pid": w.process.pid if w.process is not None else None,
                **({"error": w.last_error} if w.last_error and not w.ready else {}),
            }
            for w in self.workers
        ]

    def running(self) -> dict[str, int]:
        """request id -> pid of the worker running it (tests kill workers with it)."""
        return {rid: w.process.pid for w in self.workers if w.process is not None for rid in w.tasks}

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        procs = []
        for w in self.workers:
            if w.conn is not None:
                try:
                    w.conn.send(("stop",))
                except (OSError, BrokenPipeError):
                    pass
            if w.process is not None:
                procs.append(w.process)
        await asyncio.to_thread(self._join_all, procs)

    @staticmethod
    def _join_all(procs: list) -> None:
        deadline = time.monotonic() + 5
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(2)

    # --- processes ----------------------------------------------------------------
    def _spawn(self, w: _Worker) -> None:
        if self._closing:
            return
        w.generation += 1
        gen = w.generation
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main,
            args=(child, self.settings, w.device, self.app_ref, self._store_spec, self.factory),
            name=f"ccsr-{w.name}",
            daemon=True,
        )
        proc.start()
        child.close()
        w.process, w.conn, w.ready, w.tasks = proc, parent, False, set()
        threading.Thread(target=self._reader, args=(w, gen, parent, proc), daemon=True, name=f"ccsr-{w.name}-reader").start()

    def _reader(self, w: _Worker, gen: int, conn: Any, proc: Any) -> None:
        """Forward every message to the loop; report the process's end."""
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an unpicklable message must not kill the reader
                log.exception("bad message from %s: %s", w.name, exc)
                continue
            self._post(self._on_message, w, gen, msg)
        proc.join(10)
        self._post(self._on_exit, w, gen, proc.exitcode)

    def _post(self, fn, *args) -> None:  # noqa: ANN001
        post_to_loop(self._loop, fn, *args)

    def _on_message(self, w: _Worker, gen: int, msg: tuple) -> None:
        if gen != w.generation:
            return
        kind = msg[0]
        if kind == "ready":
            w.ready, w.load_failures, w.last_error, w.info = True, 0, "", msg[1]
            log.info("%s ready on %s", w.name, msg[1].get("device"))
            self._emit(WorkerState(w.name, True, f"model loaded on {msg[1].get('device')}"))
            self._take_backlog(w)
        elif kind == "load_failed":
            w.load_failures += 1
            w.last_error = msg[1]
            log.error("%s could not load the model: %s", w.name, msg[1])
            self._emit(WorkerState(w.name, False, msg[1]))
        elif kind == "event":
            ev = msg[1]
            if isinstance(ev, (Done, Failed)) and ev.request_id in w.tasks:
                w.tasks.discard(ev.request_id)
            self._emit(ev)
            self._take_backlog(w)

    def _on_exit(self, w: _Worker, gen: int, exitcode: Optional[int]) -> None:
        if gen != w.generation:
            return
        lost = sorted(w.tasks) + [t.request_id for t in w.pending]
        w.tasks, w.pending, w.ready, w.conn = set(), [], False, None
        if self._closing:
            return
        how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        for rid in lost:
            log.error("%s died (%s) while running %s", w.name, how, rid)
            self._emit(WorkerLost(rid, f"the model worker process on {w.device} died ({how})"))
        # Back off when the model keeps failing to load (bad weights, no device).
        delay = self.restart_delay if w.load_failures == 0 else min(30.0, self.restart_delay * 2 ** w.load_failures)
        self._loop.call_later(delay, self._spawn, w)
