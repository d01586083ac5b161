"""The model worker: one process per device holding the model once.

It speaks a tiny message protocol over a ``multiprocessing`` pipe:

    parent -> worker: ("run", Task) | ("cancel", request_id) | ("stop",)
    worker -> parent: ("ready", info) | ("load_failed", message) | ("event", Event)

Tasks run one after another on the main thread; a reader thread keeps
listening so a cancel arrives while a task runs and sets that task's
``threading.Event``, which the engine checks before each network evaluation.
The worker writes the result image itself, so only small messages cross the pipe.

:func:`run_task` is the whole job of a worker for one task, shared with the
in-process :class:`ccsr.jobs.local.ThreadExecutor` used by quick tests.
"""

from __future__ import annotations

import importlib
import os
import queue
import threading
import time
import traceback
from typing import Any, Callable, Optional

from ccsr.jobs.executor import Done, Emit, Failed, Log, Progress, Task

#: Builds the engine in the worker: "module:function" called as f(settings_dict, device).
DEFAULT_ENGINE_FACTORY = "ccsr.jobs.worker:load_upscaler"


def load_upscaler(settings: dict, device: str) -> Any:
    """The real engine: CCSRUpscaler from the configured checkpoint."""
    from ccsr.pipeline.upscaler import CCSRUpscaler

    dtype = settings.get("dtype")
    return CCSRUpscaler.from_checkpoint(
        settings.get("weights"),
        config=settings.get("config"),
        device=device,
        dtype=None if dtype in (None, "auto") else dtype,
        tile_batch_size=int(settings.get("tile_batch_size") or 4),
        max_output_pixels=int(settings.get("max_output_pixels") or 4096 * 4096),
    )


def resolve_factory(spec: str) -> Callable[[dict, str], Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _oom_message(params: Any, detail: str) -> str:
    return (
        f"The device ran out of memory ({detail}). Lower the memory need: set tile_vae=true "
        f"(with smaller tile_vae_decoder_size/tile_vae_encoder_size, now {params.tile_vae_decoder_size}/"
        f"{params.tile_vae_encoder_size}), use tile_diffusion='mix' or 'gaussian' with a smaller "
        f"tile_diffusion_size (now {params.tile_diffusion_size}), lower scale (now {params.scale}) "
        f"or send a smaller image; on the server, lower tile_batch_size or use dtype fp16."
    )


def run_task(engine: Any, task: Task, cancel: threading.Event, emit: Emit) -> None:
    """Run one task and emit its progress, logs and exactly one ending."""
    from PIL import Image

    from ccsr.errors import CCSRError, Cancelled, InvalidParameter, OutOfMemory
    from ccsr.params import UpscaleParams, check_request

    rid = task.request_id

    def log(message: str, level: str = "INFO") -> None:
        emit(Log(rid, level, str(message), time.time()))

    def progress(step: int, total: int) -> None:
        emit(Progress(rid, int(step), int(total), time.time()))

    try:
        params = UpscaleParams(**task.params)
        with Image.open(task.input_path) as im:
            image = im.convert("RGB")
        check_request(params, image.width, image.height, task.max_output_pixels)
        if cancel.is_set():
            raise Cancelled("cancelled before start")
        t0 = time.perf_counter()
        try:
            result = engine(image, params, progress=progress, cancel=cancel, log=log)
        except OutOfMemory as exc:
            if params.tile_vae:
                raise
            # Decoding the full image at once is the usual culprit: tiled VAE may fit.
            log(f"out of memory ({exc}); retrying with tile_vae=true", "WARN")
            params = params.model_copy(update={"tile_vae": True})
            result = engine(image, params, progress=progress, cancel=cancel, log=log)
        elapsed = time.perf_counter() - t0
        out = result.image
        tmp = task.output_path + ".part"
        os.makedirs(os.path.dirname(task.output_path), exist_ok=True)
        try:
            from ccsr.pipeline.preprocess import encode_image

            data = encode_image(out, "png")
            with open(tmp, "wb") as f:
                f.write(data)
        except ImportError:  # pragma: no cover - engine without the fast encoder
            out.save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, task.output_path)
        emit(
            Done(
                rid,
                seed=int(result.seed),
                width=out.width,
                height=out.height,
                file_size=os.path.getsize(task.output_path),
                inference_time=elapsed,
                timings=dict(getattr(result, "timings", {}) or {}),
            )
        )
    except Cancelled:
        emit(Failed(rid, "cancelled", "Request was cancelled."))
    except InvalidParameter as exc:
        emit(Failed(rid, "invalid", exc.message, field=exc.field))
    except OutOfMemory as exc:
        emit(Failed(rid, "oom", _oom_message(params, str(exc))))
    except CCSRError as exc:
        emit(Failed(rid, "error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - a failure of one request must not end the worker
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError not wrapped by the engine
            emit(Failed(rid, "oom", _oom_message(params, str(exc).splitlines()[0])))
        else:
            emit(Failed(rid, "error", f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()


def worker_main(conn: Any, settings: dict, device: str, factory_spec: str) -> None:
    """Entry point of a spawned worker process."""
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    try:
        engine = resolve_factory(factory_spec)(settings, device)
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
            run_task(engine, task, ev, lambda e: send(("event", e)))
        finally:
            with lock:
                current.pop(task.request_id, None)
    try:
        conn.close()
    except OSError:
        pass
