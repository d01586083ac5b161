"""The model worker: one process per device holding one app's engine once.

It speaks a tiny message protocol over a ``multiprocessing`` pipe:

    parent -> worker: ("run", Task) | ("cancel", request_id) | ("stop",)
    worker -> parent: ("ready", info) | ("load_failed", message) | ("event", Event)

Tasks run one after another on the main thread; a reader thread keeps
listening so a cancel arrives while a task runs and sets that task's
``threading.Event``, which the engine checks before each network evaluation.
The worker reads its input from the blob store and writes the result there
itself, so only small messages (blob keys) cross the pipe.

:func:`run_task` is the whole job of a worker for one task, shared with the
in-process :class:`ccsr.jobs.local.ThreadExecutor` used by quick tests.
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
from ccsr.blobs import BlobStore, open_blob_store
from ccsr.jobs.executor import Done, Emit, Failed, Log, Progress, Task

_stores: dict[str, BlobStore] = {}
_stores_lock = threading.Lock()


def blob_store(spec: dict) -> BlobStore:
    """The store of a task, rebuilt from its spec once per process."""
    key = repr(sorted(spec.items()))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = open_blob_store(spec)
        return store


def resolve_factory(spec: str) -> Callable[[dict, str], Any]:
    """An engine factory named "module:function", called as f(settings, device)."""
    return resolve(spec)


def run_task(app: App, engine: Any, task: Task, cancel: threading.Event, emit: Emit) -> None:
    """Run one task and emit its progress, logs and exactly one ending."""
    from PIL import Image

    from ccsr.errors import CCSRError, Cancelled, InvalidParameter, OutOfMemory

    rid = task.request_id

    def log(message: str, level: str = "INFO") -> None:
        emit(Log(rid, level, str(message), time.time()))

    def progress(step: int, total: int) -> None:
        emit(Progress(rid, int(step), int(total), time.time()))

    try:
        store = blob_store(task.blob_store)
        with Image.open(io.BytesIO(store.read(task.input_key))) as im:
            image = im.convert("RGB")
        if cancel.is_set():
            raise Cancelled("cancelled before start")
        t0 = time.perf_counter()
        out = app.run(engine, image, task.params, progress=progress, cancel=cancel, log=log)
        elapsed = time.perf_counter() - t0
        info = store.put(task.output_key, out.data, content_type=out.content_type)
        emit(Done(rid, task.output_key, out.content_type, out.extension, info.size, out.fields, elapsed, out.timings))
    except Cancelled:
        emit(Failed(rid, "cancelled", "Request was cancelled."))
    except InvalidParameter as exc:
        emit(Failed(rid, "invalid", exc.message, field=exc.field))
    except OutOfMemory as exc:
        emit(Failed(rid, "oom", app.oom_advice(task.params, str(exc))))
    except CCSRError as exc:
        emit(Failed(rid, "error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - a failure of one request must not end the worker
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError not wrapped by the engine
            emit(Failed(rid, "oom", app.oom_advice(task.params, str(exc).splitlines()[0])))
        else:
            emit(Failed(rid, "error", f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()


def worker_main(conn: Any, settings: dict, device: str, app_ref: str, factory_spec: Optional[str] = None) -> None:
    """Entry point of a spawned worker process: build the app from its ref, its
    engine (``factory_spec`` replaces the app's own factory: tests, benchmarks)."""
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    try:
        app = load_app(app_ref)
        factory = resolve_factory(factory_spec) if factory_spec else app.load_engine
        engine = factory(settings, device)
    except BaseException as exc:  # noqa: BLE001 - report, then exit
        send(("load_failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", {"device": str(getattr(engine, "device", device)), "pid": os.getpid()}))

    tasks: "queue.Queue[Optional[Task]]" = queue.Queue()
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
                tasks.put(msg[1])
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
                tasks.put(None)
                return

    threading.Thread(target=reader, daemon=True, name="ccsr-worker-reader").start()
    while True:
        task = tasks.get()
        if task is None:
            break
        ev = threading.Event()
        with lock:
            current[task.request_id] = ev
            if task.request_id in cancelled_early:
                cancelled_early.discard(task.request_id)
                ev.set()
        try:
            run_task(app, engine, task, ev, lambda e: send(("event", e)))
        finally:
            with lock:
                current.pop(task.request_id, None)
    try:
        conn.close()
    except OSError:
        pass
