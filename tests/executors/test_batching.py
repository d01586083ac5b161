"""Queued requests batched through the network: the worker's grouping
(run_tasks), its endings, cancels and out-of-memory fallback, and the local
pool gathering a batch from the scheduler's hand-overs."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
from PIL import Image

from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.storage import LocalBlobStore
from ccsr.errors import OutOfMemory
from ccsr.executors.base import Done, Failed, Log, Progress, Task, WorkerState
from ccsr.executors.pool import WorkerPool
from ccsr.testing import FakeEngine
from ccsr.executors.worker import run_task, run_tasks
from ccsr.models.ccsr_v1.params import UpscaleParams

APP = CCSRApp()


def _tasks(tmp_path, specs) -> tuple[LocalBlobStore, list[Task]]:
    """Tasks as the scheduler makes them; ``specs``: (request id, (w, h), params) each."""
    store = LocalBlobStore(tmp_path / "blobs")
    out = []
    for rid, size, params in specs:
        buf = io.BytesIO()
        Image.new("RGB", size, (120, 60, 200)).save(buf, format="PNG")
        store.put(f"inputs/{rid}", buf.getvalue(), content_type="image/png")
        out.append(Task(rid, APP.app_id, params, f"inputs/{rid}", f"results/{rid}.1"))
    return store, out


def _endings(events) -> dict[str, list]:
    ends: dict[str, list] = {}
    for e in events:
        if isinstance(e, (Done, Failed)):
            ends.setdefault(e.request_id, []).append(e)
    return ends


def test_same_shape_requests_share_one_batch_and_the_others_run_alone(tmp_path):
    engine = FakeEngine(0.0)
    same = UpscaleParams(steps=6)
    store, tasks = _tasks(tmp_path, [("a", (8, 8), same.model_copy(update={"seed": 1})),
                                     ("odd-size", (8, 6), same.model_copy(update={"seed": 2})),
                                     ("b", (8, 8), same.model_copy(update={"seed": 3})),
                                     ("odd-steps", (8, 8), UpscaleParams(steps=9, seed=4)),
                                     ("c", (8, 8), same.model_copy(update={"seed": 5}))])
    events: list = []
    run_tasks(APP, engine, store, tasks, {t.request_id: threading.Event() for t in tasks}, events.append)
    assert engine.batches == [3, 1, 1]  # a, b, c together (the first group first), then the others
    ends = _endings(events)
    assert sorted(ends) == ["a", "b", "c", "odd-size", "odd-steps"]
    assert all(len(v) == 1 and isinstance(v[0], Done) for v in ends.values())
    assert [ends[r][0].fields["seed"] for r in ("a", "b", "c")] == [1, 3, 5]
    for rid in ("a", "b", "c"):
        assert store.stat(f"results/{rid}.1").size == ends[rid][0].file_size
        logs = [e.message for e in events if isinstance(e, Log) and e.request_id == rid]
        assert "running 3 queued requests batched through the network" in logs
        assert [e.step for e in events if isinstance(e, Progress) and e.request_id == rid] == [1, 2]
    assert not any("batched" in e.message for e in events if isinstance(e, Log) and e.request_id == "odd-size")


def test_a_request_cancelled_inside_a_batch_ends_alone_and_at_once(tmp_path):
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=12, seed=i)) for i, r in enumerate("abc")])
    cancels = {t.request_id: threading.Event() for t in tasks}
    events: list = []

    def emit(e) -> None:
        events.append(e)
        if isinstance(e, Progress) and e.request_id == "a" and e.step == 1:
            cancels["b"].set()

    run_tasks(APP, FakeEngine(0.0), store, tasks, cancels, emit)
    ends = _endings(events)
    assert [type(ends[r][0]).__name__ for r in "abc"] == ["Done", "Failed", "Done"]
    assert all(len(ends[r]) == 1 for r in "abc")
    assert ends["b"][0].kind == "cancelled"
    # b ended after the first step, before the batch finished, and got no progress after it
    b_end = events.index(ends["b"][0])
    assert b_end < events.index(ends["a"][0])
    assert not any(isinstance(e, Progress) and e.request_id == "b" for e in events[b_end:])


def test_a_batch_whose_every_request_is_cancelled_stops(tmp_path):
    engine = FakeEngine(0.0)
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=12, seed=i)) for i, r in enumerate("ab")])
    cancels = {t.request_id: threading.Event() for t in tasks}
    cancels["a"].set()
    cancels["b"].set()
    events: list = []
    run_tasks(APP, engine, store, tasks, cancels, events.append)
    assert engine.batches == []  # never started
    assert {r: [e.kind for e in v] for r, v in _endings(events).items()} == {"a": ["cancelled"], "b": ["cancelled"]}


class OomWhenBatched(FakeEngine):
    def run_batch(self, images, params, **kw):
        if len(images) > 1:
            raise OutOfMemory("CUDA out of memory. Tried to allocate 8.00 GiB")
        return super().run_batch(images, params, **kw)


def test_a_batch_out_of_memory_runs_its_requests_one_by_one(tmp_path):
    engine = OomWhenBatched(0.0)
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=6, seed=i)) for i, r in enumerate("abc")])
    events: list = []
    run_tasks(APP, engine, store, tasks, {t.request_id: threading.Event() for t in tasks}, events.append)
    assert engine.batches == [1, 1, 1]
    ends = _endings(events)
    assert all(len(ends[r]) == 1 and isinstance(ends[r][0], Done) for r in "abc")
    assert any(isinstance(e, Log) and e.level == "WARN" and "one by one" in e.message for e in events)


def test_an_unreadable_input_fails_alone(tmp_path):
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=6, seed=i)) for i, r in enumerate("abc")])
    store.put("inputs/b", b"not a png", content_type="image/png")
    events: list = []
    run_tasks(APP, FakeEngine(0.0), store, tasks, {t.request_id: threading.Event() for t in tasks}, events.append)
    ends = _endings(events)
    assert [type(ends[r][0]).__name__ for r in "abc"] == ["Done", "Failed", "Done"]
    assert ends["b"][0].kind == "error"



def test_queued_requests_batched_give_the_pictures_they_give_alone(small, tiny_model, tmp_path):
    """The real engine: three queued requests with their own seeds, batched by
    the worker, give the PNGs each gives when run by itself."""
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    calls: list[int] = []
    engine = CCSRUpscaler(tiny_model, batch_size=4, auto_memory=False)
    run_batch = engine.run_batch
    engine.run_batch = lambda images, *a, **k: calls.append(len(images)) or run_batch(images, *a, **k)
    params = [UpscaleParams(steps=4, scale=2, seed=s) for s in (11, 12, 13)]
    store, tasks = _tasks(tmp_path, [(f"r{i}", (48, 40), p) for i, p in enumerate(params)])
    events: list = []
    run_tasks(APP, engine, store, tasks, {t.request_id: threading.Event() for t in tasks}, events.append)
    assert calls == [3]
    batched = {e.request_id: store.read(e.output_key) for e in events if isinstance(e, Done)}
    assert len(batched) == 3
    for task in tasks:
        alone: list = []
        run_task(APP, engine, store, task, threading.Event(), alone.append)
        single = [e for e in alone if isinstance(e, Done)][0]
        assert single.fields["seed"] == task.params.seed
        a = np.asarray(Image.open(io.BytesIO(batched[task.request_id])), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(store.read(single.output_key))), dtype=np.int16)
        assert a.shape == b.shape == (80, 96, 3)
        assert np.abs(a - b).max() <= 1  # uint8 rounding of batched-kernel float differences
    assert calls == [3, 1, 1, 1]


# --- the pool: real worker processes with the fake engine ------------------------------
FAKE = "ccsr.testing:fake_engine_factory"


async def _pool_run(pool: WorkerPool, store: LocalBlobStore, steps):
    """Start the pool over ``store``, wait for its worker, then run ``steps(pool, events)``."""
    events: list = []
    await pool.start(events.append, store)
    for _ in range(600):
        if any(isinstance(e, WorkerState) and e.ready for e in events):
            break
        await asyncio.sleep(0.05)
    try:
        return await steps(pool, events)
    finally:
        await pool.close()


async def _wait(holds, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if holds():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _until(events, rids, timeout=30.0):
    await _wait(lambda: all(r in _endings(events) for r in rids), f"the endings of {rids}", timeout)
    return _endings(events)


def _logs(events, rid):
    return [e.message for e in events if isinstance(e, Log) and e.request_id == rid]


def test_the_pool_gathers_a_batch_until_flushed_then_runs_it_in_one_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.05")
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=12, seed=i)) for i, r in enumerate("abcdef")])

    async def steps(pool, events):
        assert pool.idle_slots() == 4
        for t in tasks[:3]:
            pool.submit(t)
        assert pool.idle_slots() == 1 and pool.running() == {}  # gathering: nothing sent yet
        pool.flush()
        assert pool.idle_slots() == 0 and set(pool.running()) == {"a", "b", "c"}
        pool.submit(tasks[3])  # the worker is busy: kept for its next batch
        pool.submit(Task("x", APP.app_id, UpscaleParams(steps=12, seed=7), "inputs/a", "results/x.1"))
        assert pool.idle_slots() == 0
        pool.cancel("x")  # cancelled while kept: it ends without running
        ends = await _until(events, ["a", "b", "c", "d", "x"])
        assert ends["x"][0].kind == "cancelled" and "x" not in pool.running()
        assert all(isinstance(ends[r][0], Done) for r in "abcd")
        for r in "abc":
            assert "fake engine: 4 steps, batch of 3" in _logs(events, r)
        assert not any("batch of" in m for m in _logs(events, "d"))  # it ran as the next batch, alone
        assert pool.idle_slots() == 4
        # a full batch goes at once, without a flush
        for t in tasks[4:]:
            pool.submit(t)
        pool.submit(Task("g", APP.app_id, UpscaleParams(steps=12, seed=9), "inputs/a", "results/g.1"))
        pool.submit(Task("h", APP.app_id, UpscaleParams(steps=12, seed=10), "inputs/a", "results/h.1"))
        assert set(pool.running()) == {"e", "f", "g", "h"}
        await _until(events, "efgh")
        assert "fake engine: 4 steps, batch of 4" in _logs(events, "h")

    asyncio.run(_pool_run(WorkerPool({}, ["cpu"], app_ref=APP.ref, factory=FAKE, batch_size=4, batch_wait=30), store, steps))


def test_a_gathered_batch_leaves_after_batch_wait(tmp_path):
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=6, seed=i)) for i, r in enumerate("ab")])

    async def steps(pool, events):
        for t in tasks:
            pool.submit(t)
        assert pool.running() == {}
        ends = await _until(events, "ab", timeout=10)  # no flush: the 0.2 s timer sends it
        assert all(isinstance(ends[r][0], Done) for r in "ab")
        assert "fake engine: 2 steps, batch of 2" in _logs(events, "a")

    asyncio.run(_pool_run(WorkerPool({}, ["cpu"], app_ref=APP.ref, factory=FAKE, batch_size=4, batch_wait=0.2), store, steps))


def test_a_worker_killed_mid_batch_reports_every_request_lost(tmp_path, monkeypatch):
    import os
    import signal

    from ccsr.executors.base import WorkerLost

    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.5")
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=60, seed=i)) for i, r in enumerate("abc")])

    async def steps(pool, events):
        for t in tasks:
            pool.submit(t)
        pool.flush()
        await _wait(lambda: any(isinstance(e, Progress) for e in events), "the batch's first step")
        os.kill(pool.running()["a"], signal.SIGKILL)
        await _wait(lambda: {e.request_id for e in events if isinstance(e, WorkerLost)} == {"a", "b", "c"},
                    "every request of the batch reported lost")
        assert pool.running() == {}

    asyncio.run(_pool_run(WorkerPool({}, ["cpu"], app_ref=APP.ref, factory=FAKE, batch_size=4), store, steps))


def test_cancelling_a_request_still_gathering_ends_it_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.02")
    store, tasks = _tasks(tmp_path, [(r, (8, 8), UpscaleParams(steps=12, seed=i)) for i, r in enumerate("ab")])

    async def steps(pool, events):
        for t in tasks:
            pool.submit(t)
        pool.cancel("a")  # sends the gathered batch; the worker ends a before it starts
        ends = await _until(events, "ab")
        assert ends["a"][0].kind == "cancelled" and isinstance(ends["b"][0], Done)
        assert not any("batch" in m for m in _logs(events, "b"))  # it ran by itself

    asyncio.run(_pool_run(WorkerPool({}, ["cpu"], app_ref=APP.ref, factory=FAKE, batch_size=4, batch_wait=30), store, steps))
