"""The model worker as a Ray actor: one per GPU, holding the model once.

:class:`ModelActor` is the Ray counterpart of :func:`ccsr.jobs.worker.worker_main`.
It builds the engine through the same factory ("module:function") and runs a
task with the same :func:`ccsr.jobs.worker.run_task`, so the events a client
sees are identical whichever executor runs the model. Differences:

* A run is a *streaming* actor method: it yields batches of events while the
  engine works, so progress reaches the driver as it happens.
* ``cancel``, ``info`` and ``watch`` live in a separate concurrency group, so
  they answer while a run keeps the default group busy (``ray.cancel`` does
  not interrupt a synchronous actor task, so cancel is a flag the engine
  checks before each network evaluation, as in the local worker).
* Inputs and outputs travel as bytes inside the stream (no path is shared
  between machines). :func:`task_from_payload` and :func:`result_bytes` are the
  only places that know how; the driver side is in
  :mod:`ccsr.jobs.ray_executor`.

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

from ccsr.jobs.executor import Done, Failed, Task
from ccsr.jobs.worker import resolve_factory, run_task

#: Concurrency group of the calls that must answer during a run.
CONTROL = "control"


def task_from_payload(payload: dict, work_dir: str) -> Task:
    """Materialize a driver payload as a local :class:`Task` for :func:`run_task`.

    The input bytes are written to a private temporary directory on this
    node; the output goes next to it and is read back by :func:`result_bytes`.
    (When tasks carry blob keys, this is where the input is read from the
    blob store instead.)
    """
    rid = payload["request_id"]
    input_path = os.path.join(work_dir, "input")
    with open(input_path, "wb") as f:
        f.write(payload["input"])
    return Task(
        request_id=rid,
        input_path=input_path,
        params=payload["params"],
        output_path=os.path.join(work_dir, "output.png"),
        attempt=payload.get("attempt", 1),
        max_output_pixels=payload.get("max_output_pixels", 4096 * 4096),
    )


def result_bytes(task: Task) -> bytes:
    """The encoded result a finished :func:`run_task` wrote."""
    with open(task.output_path, "rb") as f:
        return f.read()


class ModelActor:
    """Loads the engine once; runs one task at a time (the driver never sends two)."""

    def __init__(self, factory_spec: str, settings: dict, device: str):
        self.pid = os.getpid()
        self.engine: Any = None
        self.error = ""
        self.device = device
        self._cancels: dict[str, threading.Event] = {}
        self._cancelled_early: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if device in ("", "auto") and ray.get_gpu_ids():
            self.device = "cuda"  # Ray set CUDA_VISIBLE_DEVICES to this actor's GPU
        try:
            self.engine = resolve_factory(factory_spec)(settings, self.device)
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
        rid = payload["request_id"]
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
        try:
            task = task_from_payload(payload, work_dir)
            runner = threading.Thread(
                target=self._run_one, args=(task, cancel, events), daemon=True, name=f"ccsr-run-{rid}"
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
                if any(isinstance(e, Done) for e in batch):
                    yield ("result", result_bytes(task))
                if batch:
                    yield ("events", batch)
            runner.join()
        finally:
            with self._lock:
                self._cancels.pop(rid, None)
            shutil.rmtree(work_dir, ignore_errors=True)

    def _run_one(self, task: Task, cancel: threading.Event, events: "queue.Queue") -> None:
        try:
            run_task(self.engine, task, cancel, events.put)
        finally:
            events.put(None)


def actor_class(max_control_threads: int = 4) -> Any:
    """``ModelActor`` as a Ray actor class (the control group runs beside a run)."""
    return ray.remote(concurrency_groups={CONTROL: max_control_threads})(ModelActor)
