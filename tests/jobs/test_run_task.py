"""run_task, the worker's whole job for one request: out-of-memory handling
(retry with tiled VAE, then an error naming the settings) and error mapping."""

from __future__ import annotations

import threading

from PIL import Image

from ccsr.errors import InvalidParameter, OutOfMemory
from ccsr.jobs.executor import Done, Failed, Log, Task
from ccsr.jobs.testing import FakeEngine
from ccsr.jobs.worker import run_task


class OomUnlessTiled(FakeEngine):
    def __call__(self, image, params=None, **kw):
        if not params.tile_vae:
            raise OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(image, params, **kw)


class AlwaysOom(FakeEngine):
    def __call__(self, image, params=None, **kw):
        raise OutOfMemory("CUDA out of memory")


class Invalid(FakeEngine):
    def __call__(self, image, params=None, **kw):
        raise InvalidParameter("scale", "too big")


def _run(engine, tmp_path, **params):
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    events = []
    task = Task("r1", str(src), {"steps": 4, **params}, str(tmp_path / "out" / "r1.png"))
    run_task(engine, task, threading.Event(), events.append)
    return events


def test_oom_retries_with_tiled_vae(tmp_path):
    events = _run(OomUnlessTiled(0.0), tmp_path)
    assert isinstance(events[-1], Done) and events[-1].width == 16
    assert any(isinstance(e, Log) and e.level == "WARN" and "tile_vae=true" in e.message for e in events)
    assert (tmp_path / "out" / "r1.png").exists()


def test_oom_that_persists_names_the_settings(tmp_path):
    end = _run(AlwaysOom(0.0), tmp_path)[-1]
    assert isinstance(end, Failed) and end.kind == "oom"
    for setting in ("tile_vae", "tile_diffusion", "tile_diffusion_size", "scale", "tile_batch_size"):
        assert setting in end.message


def test_invalid_parameter_and_cancel(tmp_path):
    end = _run(Invalid(0.0), tmp_path)[-1]
    assert isinstance(end, Failed) and end.kind == "invalid" and end.field == "scale"
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    ev = threading.Event()
    ev.set()
    events = []
    run_task(FakeEngine(0.0), Task("r2", str(src), {"steps": 4}, str(tmp_path / "o.png")), ev, events.append)
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"
