"""run_task, the worker's whole job for one request: out-of-memory handling
(retry with tiled VAE, then an error naming the settings) and error mapping."""

from __future__ import annotations

import threading

from PIL import Image

import io

from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.storage import LocalBlobStore
from ccsr.errors import InvalidParameter, OutOfMemory
from ccsr.executors.base import Done, Failed, Log, Task
from ccsr.testing import FakeEngine
from ccsr.executors.worker import run_task
from ccsr.models.ccsr_v1.params import UpscaleParams

APP = CCSRApp()


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


def _task(tmp_path, rid="r1", **params):
    """A task as the scheduler makes it: the input PNG in a blob store, blob keys only."""
    store = LocalBlobStore(tmp_path / "blobs")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    store.put(f"inputs/{rid}", buf.getvalue(), content_type="image/png")
    return store, Task(rid, APP.app_id, UpscaleParams(steps=4, **params), f"inputs/{rid}", f"results/{rid}.1")


def _run(engine, tmp_path, **params):
    events = []
    store, task = _task(tmp_path, **params)
    run_task(APP, engine, store, task, threading.Event(), events.append)
    return store, events


def test_the_task_names_blobs_never_paths():
    import dataclasses

    names = {f.name for f in dataclasses.fields(Task)}
    assert not any("path" in n for n in names), names


def test_the_task_carries_no_store():
    """The store (a local root, S3 credentials) goes to the executor once when
    it starts, never inside each task."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(Task)}
    # output: how the result file is written (format, provenance), plain values only.
    assert names == {"request_id", "app_id", "params", "input_key", "output_key", "attempt", "output"}, names


def test_oom_retries_with_tiled_vae(tmp_path):
    store, events = _run(OomUnlessTiled(0.0), tmp_path)
    assert isinstance(events[-1], Done) and events[-1].fields["width"] == 16
    assert any(isinstance(e, Log) and e.level == "WARN" and "tile_vae=true" in e.message for e in events)
    out = store.read(events[-1].output_key)
    assert out[:8] == b"\x89PNG\r\n\x1a\n" and len(out) == events[-1].file_size


def test_oom_that_persists_names_the_settings(tmp_path):
    end = _run(AlwaysOom(0.0), tmp_path)[1][-1]
    assert isinstance(end, Failed) and end.kind == "oom"
    for setting in ("tile_vae", "tile_diffusion", "tile_diffusion_size", "scale", "tile_batch_size"):
        assert setting in end.message


def test_invalid_parameter_and_cancel(tmp_path):
    end = _run(Invalid(0.0), tmp_path)[1][-1]
    assert isinstance(end, Failed) and end.kind == "invalid" and end.field == "scale"
    ev = threading.Event()
    ev.set()
    events = []
    store, task = _task(tmp_path, "r2")
    run_task(APP, FakeEngine(0.0), store, task, ev, events.append)
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"


def test_a_store_that_does_not_answer_fails_the_run_not_the_request(tmp_path):
    """The worker reports a store outage as its own kind (the scheduler queues
    the request again, uncounted), with a text that names no key; a store's
    refusal is an error with its own safe text."""
    from ccsr.storage import StoreRefused, StoreUnavailable

    store, task = _task(tmp_path)
    for exc, kind in ((StoreUnavailable(), Failed.UNAVAILABLE), (StoreRefused(), "error")):
        events = []

        def refuse(key, *a, _exc=exc, **kw):
            raise _exc

        store.put = refuse  # writing the result
        run_task(APP, FakeEngine(0.0), store, task, threading.Event(), events.append)
        ending = events[-1]
        assert isinstance(ending, Failed) and ending.kind == kind, ending
        assert task.output_key not in ending.message and "inputs/" not in ending.message


def test_an_input_gone_from_the_store_is_said_without_its_key(tmp_path):
    """Another server ended the request (a cancel) and removed its input while
    this run started: the ending says so and names no blob key (found by
    benchmarks/soak_cluster.py, which saw "BlobNotFound: 'inputs/<id>'")."""
    store, task = _task(tmp_path)
    store.delete(task.input_key)
    events = []
    run_task(APP, FakeEngine(0.0), store, task, threading.Event(), events.append)
    ending = events[-1]
    assert isinstance(ending, Failed) and "no longer in the blob store" in ending.message
    assert task.input_key not in ending.message and "BlobNotFound" not in ending.message
