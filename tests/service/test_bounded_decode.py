"""Input images: header checked before any decode, pixels decoded in a
memory-bounded child process, first frame of multi-frame inputs (issue 11,
point 3)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.service.decode_proc import decode_to_png
from ccsr.service.images import InputError
from ccsr.settings import Settings

from svc_helpers import png_claiming, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"
MB = 1024 * 1024


def _png(w, h, color=(9, 9, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()




def _frames(fmt: str) -> bytes:
    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    frames = [Image.new("RGB", (20, 10), c) for c in colors]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG", "WEBP"])
def test_multi_frame_inputs_give_their_first_frame(tmp_path, fmt):
    data = _frames(fmt)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    dest = str(tmp_path / "in.png")
    assert decode_to_png(data, dest, max_pixels=10**6, memory_bytes=512 * MB, timeout=30) == (20, 10)
    r, g, b = Image.open(dest).getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def test_decoding_is_bounded_in_memory(tmp_path):
    data = _png(8000, 8000)  # 200 KB of PNG, 192 MB of pixels
    with pytest.raises(InputError) as info:
        decode_to_png(data, str(tmp_path / "x.png"), max_pixels=10**8, memory_bytes=160 * MB, timeout=60)
    assert "decode_memory_bytes" in info.value.message


def test_a_corrupt_image_is_named(tmp_path):
    with pytest.raises(InputError) as info:
        decode_to_png(_png(40, 40)[:80], str(tmp_path / "x.png"), max_pixels=10**6, memory_bytes=512 * MB, timeout=30)
    assert "corrupt" in info.value.message


@pytest.fixture
def server(tmp_path):
    settings = Settings(data_dir=tmp_path, max_input_pixels=10**8, max_output_pixels=8000 * 8000,
                        decode_memory_bytes=160 * MB)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def _submit_upload(client, data: bytes, **params) -> dict:
    up = client.post("/cdn/files/upload", content=data, headers={"content-type": "image/png"}).json()
    r = client.post(Q, json={"image_url": up["access_url"], "steps": 4, **params})
    assert r.status_code == 200, r.text
    done = wait_status(client, r.json()["status_url"], "COMPLETED", timeout=60)
    return client.get(done["response_url"]).json() | {"_status": done}


def test_output_size_is_refused_from_the_header_before_decoding(server):
    """A 69-byte PNG claiming 6324x6324 (40 MP): refused on its output size
    from the header, not decoded (decoding it would fail on image_url)."""
    out = _submit_upload(server, png_claiming(6324, 6324), scale=2)
    detail = out["detail"][0]
    assert detail["loc"] == ["body", "scale"] and "max_output_pixels" in detail["msg"], detail


def test_an_input_too_big_to_decode_in_the_budget_fails_with_the_limit(server):
    out = _submit_upload(server, _png(8000, 8000), scale=1)
    detail = out["detail"][0]
    assert detail["loc"] == ["body", "image_url"] and "decode_memory_bytes" in detail["msg"], detail


def test_a_normal_input_still_runs(server):
    out = _submit_upload(server, _png(30, 20), scale=2)
    assert out["image"]["width"] == 60 and out["image"]["height"] == 40, out
