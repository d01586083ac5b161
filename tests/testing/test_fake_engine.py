"""The fake engine works from whatever schema an app declares: steps from a
``steps`` field (a fixed count without one), the output size from ``scale``,
the seed from ``seed``; it stands in for both built-in apps' engines and for
an app it has never heard of, and serves ``--engine-factory`` for benchmarks."""

from __future__ import annotations

import io
import threading
from typing import Literal, Optional

from PIL import Image
from pydantic import BaseModel

from ccsr.executors.base import Done, Log, Progress, Task
from ccsr.executors.worker import run_task
from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.models.esrgan.app import ESRGANApp
from ccsr.storage import LocalBlobStore
from ccsr.testing import DEFAULT_STEPS, FakeEngine, fake_engine_factory


class Plain(BaseModel):
    """A schema with none of the fields the fake engine looks for."""

    mode: Literal["a", "b"] = "a"


class Stepped(BaseModel):
    steps: int = 7
    scale: float = 1.5
    seed: Optional[int] = None


def _image(w=8, h=6) -> Image.Image:
    return Image.new("RGB", (w, h), (10, 20, 30))


def _progress_of(params) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    FakeEngine(0.0)(_image(), params, progress=lambda s, t: seen.append((s, t)))
    return seen


def test_steps_come_from_the_schema_or_a_fixed_count():
    assert _progress_of(Stepped()) == [(i, 7) for i in range(1, 8)]
    assert _progress_of(Plain()) == [(i, DEFAULT_STEPS) for i in range(1, DEFAULT_STEPS + 1)]
    assert _progress_of(None) == [(i, DEFAULT_STEPS) for i in range(1, DEFAULT_STEPS + 1)]


def test_a_sampled_window_runs_only_its_part():
    """CCSR's schema samples t_min..t_max of its schedule: a third of the steps."""
    p = CCSRApp.Params(steps=12)
    assert _progress_of(p)[-1] == (4, 4)


def test_size_from_scale_and_seed_from_seed():
    engine = FakeEngine(0.0)
    r = engine(_image(8, 6), Stepped(scale=1.5, seed=42))
    assert (r.image.size, r.seed) == ((12, 9), 42)
    plain = engine(_image(8, 6), Plain())
    assert plain.image.size == (8, 6) and isinstance(plain.seed, int)


def _run(app, params, tmp_path, output=None):
    store = LocalBlobStore(tmp_path / "blobs")
    buf = io.BytesIO()
    _image(8, 6).save(buf, format="PNG")
    store.put("in", buf.getvalue())
    events: list = []
    task = Task("r", app.app_id, params, "in", "out", output=output or {})
    run_task(app, FakeEngine(0.0), store, task, threading.Event(), events.append)
    assert isinstance(events[-1], Done), events[-1]
    return events, Image.open(io.BytesIO(store.read("out")))


def test_it_stands_in_for_the_ccsr_engine(tmp_path):
    events, out = _run(CCSRApp(), CCSRApp.Params(steps=6, scale=2, seed=3), tmp_path)
    assert out.size == (16, 12) and events[-1].fields == {"seed": 3, "width": 16, "height": 12}
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2]


def test_it_stands_in_for_the_esrgan_engine(tmp_path):
    app = ESRGANApp()
    events, out = _run(app, app.Params(scale=3, model="RealESRGAN_x2plus"), tmp_path, {"format": "jpeg"})
    assert out.format == "JPEG" and out.size == (24, 18)
    assert events[-1].fields["model"] == "RealESRGAN_x2plus" and events[-1].fields["width"] == 24
    assert any(isinstance(e, Log) and e.message.startswith("tile ") for e in events)  # the app's own progress logs


def test_the_engine_factory_reads_its_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.125")
    monkeypatch.setenv("CCSR_FAKE_RUN_LOG", str(tmp_path / "runs.log"))
    engine = fake_engine_factory({}, "cpu")
    assert (engine.step_seconds, engine.device) == (0.125, "cpu")
    engine.step_seconds = 0.0
    engine(_image(), Stepped(seed=9))
    assert (tmp_path / "runs.log").read_text().split()[0] == "9"
