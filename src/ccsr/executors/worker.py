"""The model worker: one process per device holding one app's engine once.

It speaks a tiny message protocol over a ``multiprocessing`` pipe:

    parent -> worker: ("run", [Task, ...]) | ("cancel", request_id) | ("stop",)
    worker -> parent: ("ready", info) | ("load_failed", message) | ("event", Event)

Each "run" message carries the tasks the worker took from the queue at once
(up to ``batch_size``); those that can share the network's batch run together
(:func:`run_tasks`), the rest one after another, on the main thread. A reader thread keeps
listening so a cancel arrives while a task runs and sets that task's
``threading.Event``, which the engine checks before each network evaluation.
The worker opens the blob store once, from the spec its pool was started
with, reads each input from it and writes the result there itself, so only
small messages (blob keys) cross the pipe.

:func:`run_task` is the whole job of a worker for one task, shared with the
in-process :class:`ccsr.executors.thread.ThreadExecutor` used by quick tests.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import time
import traceback
from typing import Any, Callable, Optional

from ccsr.apps.base import App, load_app, resolve
from ccsr.apps.finish import Source, finish, source_of
from ccsr.apps.output import OutputSpec
from ccsr.executors.base import Done, Emit, Failed, Log, Progress, Task
from ccsr.storage import BlobNotFound, BlobStore, BlobStoreError, StoreUnavailable, open_blob_store


def resolve_factory(spec: str) -> Callable[[dict, str], Any]:
    """An engine factory named "module:function", called as f(settings, device)."""
    return resolve(spec)


def _read_input(blobs: BlobStore, task: Task) -> Any:
    """The task's prepared input (PIL; RGB, RGBA, L or LA, with its ICC profile:
    :mod:`ccsr.engine.normalize`)."""
    from PIL import Image

    from ccsr.engine.normalize import MODES, normalize_image

    im = Image.open(io.BytesIO(blobs.read(task.input_key)))
    im.load()
    return im if im.mode in MODES else normalize_image(im)


def _spec(task: Task) -> OutputSpec:
    return OutputSpec.from_dict(task.output)


def _ending(app: App, task: Task, exc: BaseException) -> Failed:
    """The Failed event of a run that raised ``exc``."""
    from ccsr.errors import CCSRError, Cancelled, InvalidParameter, OutOfMemory

    rid = task.request_id
    if isinstance(exc, Cancelled):
        return Failed.cancelled(rid)
    if isinstance(exc, StoreUnavailable):  # the store's fault, not the request's: it runs again
        return Failed(rid, Failed.UNAVAILABLE, str(exc))
    if isinstance(exc, BlobStoreError):  # a safe text (never the bucket or the key)
        return Failed(rid, "error", str(exc))
    if isinstance(exc, BlobNotFound):  # its text is the key: say what it means instead
        return Failed(rid, "error", "the request's input or result is no longer in the blob store "
                                    "(the request was cancelled or ended elsewhere)")
    if isinstance(exc, InvalidParameter):
        return Failed(rid, "invalid", exc.message, field=exc.field)
    if isinstance(exc, OutOfMemory):
        return Failed(rid, "oom", app.oom_advice(task.params, str(exc)))
    if isinstance(exc, CCSRError):
        return Failed(rid, "error", str(exc))
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError not wrapped by the engine
        return Failed(rid, "oom", app.oom_advice(task.params, str(exc).splitlines()[0]))
    traceback.print_exception(exc)
    return Failed(rid, "error", f"{type(exc).__name__}: {exc}")


def _store_result(blobs: BlobStore, task: Task, out: Any, elapsed: float) -> Done:
    info = blobs.put(task.output_key, out.data, content_type=out.content_type)
    return Done(task.request_id, task.output_key, out.content_type, out.extension, info.size, out.fields,
                elapsed, out.timings)


def _reporters(task: Task, emit: Emit) -> tuple[Callable, Callable]:
    rid = task.request_id

    def log(message: str, level: str = "INFO") -> None:
        emit(Log(rid, level, str(message), time.time()))

    def progress(step: int, total: int) -> None:
        emit(Progress(rid, int(step), int(total), time.time()))

    return log, progress


def run_task(app: App, engine: Any, blobs: BlobStore, task: Task, cancel: threading.Event, emit: Emit,
             source: Optional[Source] = None) -> None:
    """Run one task over the keys it names in ``blobs`` and emit its progress,
    logs and exactly one ending (``source``: its input, when already read).
    The result file is written by the output stage every app shares
    (:mod:`ccsr.apps.finish`: format, alpha, grey, ICC profile, provenance)."""
    from ccsr.errors import Cancelled

    log, progress = _reporters(task, emit)
    try:
        spec = _spec(task)
        if source is None:
            source = source_of(_read_input(blobs, task), spec, log)
        if cancel.is_set():
            raise Cancelled("cancelled before start")
        t0 = time.perf_counter()
        made = app.run(engine, source.colour, task.params, progress=progress, cancel=cancel, log=log)
        out = finish(app, engine, source, made, task.params, spec, cancel=cancel, log=log)
        emit(_store_result(blobs, task, out, time.perf_counter() - t0))
    except Exception as exc:  # noqa: BLE001 - a failure of one request must not end the worker
        emit(_ending(app, task, exc))


class _AllSet:
    """A cancel flag for a batch: set once every request in it is cancelled."""

    def __init__(self, events: list[threading.Event]):
        self.events = events

    def is_set(self) -> bool:
        return all(ev.is_set() for ev in self.events)


def run_tasks(app: App, engine: Any, blobs: BlobStore, tasks: list[Task], cancels: dict[str, threading.Event],
              emit: Emit) -> None:
    """Run tasks a worker took from the queue together. Those with one
    :meth:`App.batch_key` go through the network as one batch (:meth:`App.run_batch`),
    the others one by one, groups in the order of their first task; every task
    still gets its own progress, logs and exactly one ending."""
    if len(tasks) == 1 or not app.batches:
        for task in tasks:
            run_task(app, engine, blobs, task, cancels[task.request_id], emit)
        return
    groups: dict[Any, list[tuple[Task, Source]]] = {}
    for task in tasks:
        try:
            source = source_of(_read_input(blobs, task), _spec(task), _reporters(task, emit)[0])
            key = app.batch_key(task.params, source.colour.width, source.colour.height)
        except Exception as exc:  # noqa: BLE001
            emit(_ending(app, task, exc))
            continue
        groups.setdefault(object() if key is None else key, []).append((task, source))
    for group in groups.values():
        if len(group) == 1:
            task, source = group[0]
            run_task(app, engine, blobs, task, cancels[task.request_id], emit, source)
        else:
            _run_group(app, engine, blobs, group, cancels, emit)


def _run_group(app: App, engine: Any, blobs: BlobStore, group: list[tuple[Task, Source]],
               cancels: dict[str, threading.Event], emit: Emit) -> None:
    from ccsr.errors import OutOfMemory

    ended: set[str] = set()
    reporters = {t.request_id: _reporters(t, emit) for t, _ in group}

    def end_cancelled() -> None:
        # A request cancelled inside a running batch ends at once; the others go on.
        for t, _ in group:
            if t.request_id not in ended and cancels[t.request_id].is_set():
                ended.add(t.request_id)
                emit(Failed.cancelled(t.request_id))

    def live() -> list[str]:
        return [t.request_id for t, _ in group if t.request_id not in ended]

    def log(message: str, level: str = "INFO") -> None:
        for rid in live():
            reporters[rid][0](message, level)

    def progress(step: int, total: int) -> None:
        end_cancelled()
        for rid in live():
            reporters[rid][1](step, total)

    end_cancelled()
    if not live():
        return
    todo = [(t, src) for t, src in group if t.request_id not in ended]
    if len(todo) == 1:
        run_task(app, engine, blobs, todo[0][0], cancels[todo[0][0].request_id], emit, todo[0][1])
        return
    log(f"running {len(todo)} queued requests batched through the network")
    t0 = time.perf_counter()
    try:
        outs = app.run_batch(engine, [src.colour for _, src in todo], [t.params for t, _ in todo], progress=progress,
                             cancel=_AllSet([cancels[t.request_id] for t, _ in todo]), log=log)
    except OutOfMemory as exc:
        log(f"the batch ran out of memory ({exc}); running its requests one by one", "WARN")
        for t, src in todo:
            if t.request_id not in ended:
                run_task(app, engine, blobs, t, cancels[t.request_id], emit, src)
        return
    except Exception as exc:  # noqa: BLE001
        for t, _ in todo:
            if t.request_id not in ended:
                emit(_ending(app, t, exc))
        return
    elapsed = time.perf_counter() - t0
    end_cancelled()
    for (t, src), out in zip(todo, outs):
        if t.request_id in ended:
            continue
        try:
            made = finish(app, engine, src, out, t.params, _spec(t), cancel=cancels[t.request_id],
                          log=reporters[t.request_id][0])
            emit(_store_result(blobs, t, made, elapsed))
        except Exception as exc:  # noqa: BLE001
            emit(_ending(app, t, exc))


def worker_main(conn: Any, settings: dict, device: str, app_ref: str, store_spec: dict,
                factory_spec: Optional[str] = None) -> None:
    """Entry point of a spawned worker process: open the blob store from
    ``store_spec``, build the app from its ref and its engine (``factory_spec``
    replaces the app's own factory: tests, benchmarks)."""
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    try:
        blobs = open_blob_store(store_spec)
        app = load_app(app_ref)
        factory = resolve_factory(factory_spec) if factory_spec else app.load_engine
        engine = factory(settings, device)
    except BaseException as exc:  # noqa: BLE001 - report, then exit
        send(("load_failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", {"device": str(getattr(engine, "device", device)), "pid": os.getpid()}))

    batches: "queue.Queue[Optional[list[Task]]]" = queue.Queue()
    current: dict[str, threading.Event] = {}
    cancelled_early: set[str] = set()
    lock = threading.Lock()

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                # The parent died (maybe kill -9): stop at once, even mid-task, so a
                # restarted server never finds a second model on this device.
                os._exit(0)
            if msg[0] == "run":
                batches.put(list(msg[1]))
            elif msg[0] == "cancel":
                with lock:
                    ev = current.get(msg[1])
                    if ev is not None:
                        ev.set()
                    else:
                        cancelled_early.add(msg[1])
            elif msg[0] == "stop":
                with lock:
                    for ev in current.values():
                        ev.set()
                batches.put(None)
                return

    threading.Thread(target=reader, daemon=True, name="ccsr-worker-reader").start()
    while True:
        tasks = batches.get()
        if tasks is None:
            break
        events = {t.request_id: threading.Event() for t in tasks}
        with lock:
            current.update(events)
            for rid in events.keys() & cancelled_early:
                cancelled_early.discard(rid)
                events[rid].set()
        try:
            run_tasks(app, engine, blobs, tasks, events, lambda e: send(("event", e)))
        finally:
            with lock:
                for rid in events:
                    current.pop(rid, None)
    try:
        conn.close()
    except OSError:
        pass
