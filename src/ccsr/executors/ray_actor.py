"""The model worker as a Ray actor: one per GPU, holding the model once.

:class:`ModelActor` is the Ray counterpart of :func:`ccsr.executors.worker.worker_main`.
It builds the engine through the same factory ("module:function") and runs a
task with the same :func:`ccsr.executors.worker.run_task`, so the events a client
sees are identical whichever executor runs the model. Differences:

* A run is a *streaming* actor method: it yields batches of events while the
  engine works, so progress reaches the driver as it happens.
* ``cancel``, ``info`` and ``watch`` live in a separate concurrency group, so
  they answer while a run keeps the default group busy (``ray.cancel`` does
  not interrupt a synchronous actor task, so cancel is a flag the engine
  checks before each network evaluation, as in the local worker).
* The blob store: an actor given a store spec (a shared S3-compatible store)
  opens it once and reads inputs and writes results there itself. Without one
  (the driver's store is a local directory) inputs and outputs travel as bytes
  inside the stream through a private scratch store (:func:`scratch_store`);
  the driver side is in :mod:`ccsr.executors.ray`.

This module imports ``ray``; only the Ray executor imports it.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from typing import Any, Iterator, Optional

import ray

from ccsr.apps.base import load_app
from ccsr.executors.base import Done, Failed, Task
from ccsr.executors.worker import resolve_factory, run_task
from ccsr.storage import BlobStore, LocalBlobStore, open_blob_store

#: Concurrency group of the calls that must answer during a run.
CONTROL = "control"


def scratch_store(payload: dict, scratch: str) -> BlobStore:
    """A private local store under ``scratch`` holding the input bytes the
    driver sent; the result is read back from it and sent to the driver."""
    store = LocalBlobStore(scratch)
    store.put(payload["task"].input_key, payload["input"])
    return store


class ModelActor:
    """Loads the engine once; runs one task at a time (the driver never sends two)."""

    def __init__(self, app_ref: str, factory_spec: Optional[str], settings: dict, device: str,
                 store_spec: Optional[dict]):
        self.pid = os.getpid()
        self.engine: Any = None
        self.blobs: Optional[BlobStore] = None
        self.error = ""
        self.device = device
        self.app: Any = None
        self._cancels: dict[str, threading.Event] = {}
        self._cancelled_early: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if device in ("", "auto") and ray.get_gpu_ids():
            self.device = "cuda"  # Ray set CUDA_VISIBLE_DEVICES to this actor's GPU
        try:
            # The store, when this node reaches it, and the app (from its ref) are
            # opened once, as in a local worker process.
            if store_spec is not None:
                self.blobs = open_blob_store(store_spec)
            self.app = load_app(app_ref)
            factory = resolve_factory(factory_spec) if factory_spec else self.app.load_engine
            self.engine = factory(settings, self.device)
            self.device = str(getattr(self.engine, "device", self.device))
        except BaseException as exc:  # noqa: BLE001 - reported through info(), shown on /readyz
            self.error = f"{type(exc).__name__}: {exc}"

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> dict:
        """Whether the model loaded, and where this actor lives."""
        ctx = ray.get_runtime_context()
        return {
            "ready": self.engine is not None,
            "error": self.error,
            "device": self.device,
            "pid": self.pid,
            "node_id": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
        }

    @ray.method(concurrency_group=CONTROL)
    def watch(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; the driver learns of this actor's
        death (kill, node loss) through the error this call then raises."""
        return self._stop.wait(timeout)

    @ray.method(concurrency_group=CONTROL)
    def cancel(self, request_id: str) -> None:
        with self._lock:
            ev = self._cancels.get(request_id)
            if ev is not None:
                ev.set()
            else:  # the cancel overtook the run call
                self._cancelled_early.add(request_id)

    @ray.method(num_returns="streaming")
    def run(self, payload: dict) -> Iterator[tuple]:
        """Yield ``("events", [Event, ...])`` batches, then, for a success,
        ``("result", png_bytes)`` just before the batch holding ``Done``."""
        rid = payload["task"].request_id
        if self.engine is None:
            yield ("events", [Failed(rid, "error", f"the model is not loaded: {self.error}")])
            return
        cancel = threading.Event()
        with self._lock:
            self._cancels[rid] = cancel
            if rid in self._cancelled_early:
                self._cancelled_early.discard(rid)
                cancel.set()
        work_dir = tempfile.mkdtemp(prefix="ccsr-ray-")
        events: "queue.Queue[Optional[Any]]" = queue.Queue()
        task: Task = payload["task"]
        try:
            sent = payload.get("input") is not None  # the driver sent the bytes and stores the result
            blobs = scratch_store(payload, work_dir) if sent else self.blobs
            runner = threading.Thread(
                target=self._run_one, args=(blobs, task, cancel, events), daemon=True, name=f"ccsr-run-{rid}"
            )
            runner.start()
            finished = False
            while not finished:
                batch = [events.get()]
                while True:  # send what piled up together: fewer stream items
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                if batch[-1] is None:
                    batch.pop()
                    finished = True
                done = next((e for e in batch if isinstance(e, Done)), None)
                if done is not None and sent:
                    yield ("result", (blobs.read(task.output_key), done.content_type))
                if batch:
                    yield ("events", batch)
            runner.join()
        finally:
            with self._lock:
                self._cancels.pop(rid, None)
            shutil.rmtree(work_dir, ignore_errors=True)

    def _run_one(self, blobs: BlobStore, task: Task, cancel: threading.Event, events: "queue.Queue") -> None:
        try:
            run_task(self.app, self.engine, blobs, task, cancel, events.put)
        finally:
            events.put(None)


def actor_class(max_control_threads: int = 4) -> Any:
    """``ModelActor`` as a Ray actor class (the control group runs beside a run)."""
    return ray.remote(concurrency_groups={CONTROL: max_control_threads})(ModelActor)
