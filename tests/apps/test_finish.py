"""The output stage every app gets (ccsr.apps.finish, issue 23): the worker's
run_task and run_tasks write the file the request asks for, whatever the app:
format, alpha (the app's hook or bicubic), grey, ICC profile, provenance."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ccsr.apps.base import App, Produced, encode_png, image_input_model
from ccsr.apps.finish import PROVENANCE_KEY, run_one, source_of
from ccsr.apps.output import OutputSpec
from ccsr.engine.images import resize_alpha
from ccsr.executors.base import Done, Log, Task
from ccsr.executors.worker import run_task, run_tasks
from ccsr.storage import LocalBlobStore


class DoubleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(None)
    tint: int = Field(0, ge=0, le=255)


class Double:
    """An engine that doubles the size (nearest: any change to alpha is the stage's)
    and adds ``tint`` to red; it records what it saw."""

    def __init__(self):
        self.seen: list = []

    def __call__(self, image, params):
        self.seen.append(image.mode)
        a = np.asarray(image.resize((image.width * 2, image.height * 2), Image.NEAREST)).copy()
        a[..., 0] = np.minimum(a[..., 0].astype(int) + params.tint, 255)
        return Image.fromarray(a)


class DoubleApp(App):
    app_id = "ccsr-tests/double"
    name = "double"
    Params = DoubleParams
    Input = image_input_model("DoubleInput", DoubleParams, "Input of ccsr-tests/double.", "https://example.com/a.png")
    Output = BaseModel

    def run(self, engine, image, params, *, progress, cancel, log):  # noqa: ANN001
        out = engine(image, params)
        return Produced.of_image(out, {"seed": 7 if params.seed is None else params.seed})

    def batch_key(self, params, width, height):  # noqa: ANN001
        return (width, height)

    def run_batch(self, engine, images, params, *, progress, cancel, log):  # noqa: ANN001
        return [self.run(engine, im, p, progress=progress, cancel=cancel, log=log) for im, p in zip(images, params)]


class AlphaByModel(DoubleApp):
    """An app whose model upscales alpha itself (as Real-ESRGAN's does): here, inverted, to see it was used."""

    def upscale_alpha(self, engine, alpha, size, params, *, cancel, log):  # noqa: ANN001
        return Image.eval(alpha.resize(size, Image.NEAREST), lambda v: 255 - v)


class BytesApp(DoubleApp):
    """An app that encodes its result itself (PNG bytes), as apps did before."""

    def run(self, engine, image, params, *, progress, cancel, log):  # noqa: ANN001
        out = engine(image, params)
        return Produced(encode_png(out), "image/png", "png", {"seed": 1})


def _logo(fixtures_dir) -> Image.Image:
    with Image.open(fixtures_dir / "images" / "logo-rgba.png") as im:
        im.load()
        return im


def _run(app, image, spec=OutputSpec(), params=None, logs=None):
    out = run_one(app, Double(), image, params or DoubleParams(), spec, progress=lambda *a: None,
                  cancel=threading.Event(), log=lambda m, level="INFO": (logs if logs is not None else []).append((level, m)))
    return out, Image.open(io.BytesIO(out.data))


@pytest.mark.parametrize("fmt, magic, mime, ext", [("png", b"\x89PNG", "image/png", "png"),
                                                   ("jpeg", b"\xff\xd8\xff", "image/jpeg", "jpg"),
                                                   ("webp", b"RIFF", "image/webp", "webp")])
def test_the_requested_format_and_its_description(fmt, magic, mime, ext):
    out, im = _run(DoubleApp(), Image.new("RGB", (6, 4), (10, 20, 30)), OutputSpec(fmt))
    assert out.data.startswith(magic) and (out.content_type, out.extension) == (mime, ext)
    assert im.size == (12, 8) and out.fields == {"seed": 7, "width": 12, "height": 8}


def test_transparency_goes_around_the_model_and_back(fixtures_dir):
    logo = _logo(fixtures_dir)
    engine = Double()
    out = run_one(DoubleApp(), engine, logo, DoubleParams(), OutputSpec("png"), progress=lambda *a: None,
                  cancel=threading.Event(), log=lambda *a: None)
    im = Image.open(io.BytesIO(out.data))
    assert engine.seen == ["RGB"]  # the model sees colour only
    assert im.mode == "RGBA" and im.size == (96, 80)
    want = np.asarray(resize_alpha(logo.getchannel("A"), (96, 80)))
    assert np.array_equal(np.asarray(im.getchannel("A")), want)  # bicubic, as documented
    webp = Image.open(io.BytesIO(_run(DoubleApp(), logo, OutputSpec("webp"))[0].data))
    assert webp.mode == "RGBA" and np.array_equal(np.asarray(webp.getchannel("A")), want)


def test_an_app_that_can_upscales_the_alpha_itself(fixtures_dir):
    logo = _logo(fixtures_dir)
    _, im = _run(AlphaByModel(), logo)
    inverted = 255 - np.asarray(logo.getchannel("A").resize((96, 80), Image.NEAREST))
    assert np.array_equal(np.asarray(im.getchannel("A")), inverted)


def test_jpeg_of_a_transparent_input_is_flattened_onto_white_and_says_so(fixtures_dir):
    logo = _logo(fixtures_dir)
    logs: list = []
    out, im = _run(DoubleApp(), logo, OutputSpec("jpeg"), logs=logs)
    assert im.mode == "RGB"
    a = np.asarray(im).astype(int)
    assert (a[1, 1] >= 250).all()  # a fully transparent corner: white
    assert a[40, 36, 2] > 180 and a[40, 36, 0] < 60  # the opaque disc: blue
    assert any(level == "WARN" and "flattened onto white" in m and "png or webp" in m for level, m in logs)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_grey_comes_back_grey(fmt):
    _, im = _run(DoubleApp(), Image.new("L", (5, 5), 99), OutputSpec(fmt))
    assert im.mode == "L" and abs(im.getpixel((2, 2)) - 99) <= 2
    _, la = _run(DoubleApp(), Image.new("LA", (5, 5), (99, 128)), OutputSpec("png"))
    assert la.mode == "LA" and la.getpixel((2, 2)) == (99, 128)


def test_the_icc_profile_is_carried(fixtures_dir):
    from ccsr.engine.normalize import normalize_image

    with Image.open(fixtures_dir / "images" / "rocket-p3-rot6.jpg") as src:
        src.load()
        photo = normalize_image(src)
    for fmt in ("png", "jpeg", "webp"):
        _, im = _run(DoubleApp(), photo, OutputSpec(fmt))
        assert im.info.get("icc_profile") == photo.info["icc_profile"], fmt
        assert im.size == (96, 128) and 0x0112 not in im.getexif(), fmt  # upright, no orientation tag


def test_provenance_in_png_only_and_off_by_setting():
    params = DoubleParams(tint=40)
    _, im = _run(DoubleApp(), Image.new("RGB", (4, 4)), OutputSpec("png"), params)
    got = json.loads(im.info[PROVENANCE_KEY])
    assert got["app"] == "ccsr-tests/double" and got["model"] == "double" and got["version"]
    assert got["parameters"] == {"seed": 7, "tint": 40}  # the seed the run used, not the request's null
    _, off = _run(DoubleApp(), Image.new("RGB", (4, 4)), OutputSpec("png", provenance=False), params)
    assert PROVENANCE_KEY not in off.info
    # ... and the parameters reproduce the picture.
    _, again = _run(DoubleApp(), Image.new("RGB", (4, 4)), OutputSpec("png"), DoubleParams(**got["parameters"]))
    assert np.array_equal(np.asarray(again), np.asarray(im))


def test_an_app_returning_bytes_gets_the_same_stage(fixtures_dir):
    out, im = _run(BytesApp(), _logo(fixtures_dir), OutputSpec("webp"))
    assert out.content_type == "image/webp" and im.mode == "RGBA" and im.size == (96, 80)


def test_an_app_making_its_own_transparency_keeps_it():
    class Cutout(DoubleApp):
        def run(self, engine, image, params, *, progress, cancel, log):  # noqa: ANN001
            return Produced.of_image(Image.new("RGBA", (4, 4), (1, 2, 3, 60)), {})

    assert _run(Cutout(), Image.new("RGB", (2, 2)))[1].getpixel((0, 0)) == (1, 2, 3, 60)


def test_source_of_splits_for_the_model():
    src = source_of(Image.new("LA", (3, 3), (50, 70)), OutputSpec("png"))
    assert src.colour.mode == "RGB" and src.grey and src.alpha.getpixel((0, 0)) == 70


def _store_task(tmp_path, image: Image.Image, rid: str, output: dict) -> tuple[LocalBlobStore, Task]:
    store = LocalBlobStore(tmp_path / "blobs")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    store.put(f"inputs/{rid}", buf.getvalue())
    return store, Task(rid, DoubleApp.app_id, DoubleParams(), f"inputs/{rid}", f"out/{rid}", output=output)


def test_the_worker_writes_what_the_task_asks(tmp_path, fixtures_dir):
    store, task = _store_task(tmp_path, _logo(fixtures_dir), "a", {"format": "webp", "provenance": True})
    events: list = []
    run_task(DoubleApp(), Double(), store, task, threading.Event(), events.append)
    done = events[-1]
    assert isinstance(done, Done) and done.content_type == "image/webp" and done.extension == "webp"
    im = Image.open(io.BytesIO(store.read("out/a")))
    assert im.format == "WEBP" and im.mode == "RGBA" and done.file_size == len(store.read("out/a"))


def test_a_batch_writes_each_request_its_own_way(tmp_path, fixtures_dir):
    """Requests batched through the network (one batch_key) still get their own
    format and transparency."""
    store, a = _store_task(tmp_path, _logo(fixtures_dir), "a", {"format": "png"})
    _, b = _store_task(tmp_path, _logo(fixtures_dir), "b", {"format": "jpeg"})
    events: list[Any] = []
    run_tasks(DoubleApp(), Double(), store, [a, b], {"a": threading.Event(), "b": threading.Event()}, events.append)
    done = {e.request_id: e for e in events if isinstance(e, Done)}
    assert done["a"].content_type == "image/png" and Image.open(io.BytesIO(store.read("out/a"))).mode == "RGBA"
    assert done["b"].content_type == "image/jpeg" and Image.open(io.BytesIO(store.read("out/b"))).mode == "RGB"
    assert any(isinstance(e, Log) and e.request_id == "b" and "flattened" in e.message for e in events)
