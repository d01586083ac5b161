"""Results through the official, unmodified clients (issue 23): Python
fal-client 1.0.3 and the JS @fal-ai/client (tests/js, scenario "results"),
against a live server serving both built-in apps on the fake engine, with
the real fixtures: a transparent logo and a Display P3 photo with an EXIF
orientation. output_format, transparency (kept, or flattened for jpeg), the
ICC profile, the orientation, provenance, and sync_mode on the direct and
queue routes with the clear answer to a second ask."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ccsr.apps.registry import default_registry
from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.testing import FakeEngine

from svc_helpers import point_fal_client, serve_app

KEY = "results-key"
IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
JS_DIR = Path(__file__).resolve().parents[1] / "js"
LOGO = (IMAGES / "logo-rgba.png").read_bytes()
PHOTO = (IMAGES / "rocket-p3-rot6.jpg").read_bytes()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("clients-results"), api_keys=[KEY]),
                     registry=default_registry(),
                     executors={a: ThreadExecutor(FakeEngine(0.01)) for a in ("fal-ai/ccsr", "fal-ai/esrgan")})
    with serve_app(app) as base:
        yield base


@pytest.fixture
def fal(live, monkeypatch):
    import fal_client

    point_fal_client(monkeypatch, live)
    return fal_client.SyncClient(key=KEY)


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _bytes_of(url: str) -> bytes:
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    return httpx.get(url, headers={"Authorization": f"Key {KEY}"}).content


def _image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _check_file(image: dict, data: bytes, fmt: str) -> Image.Image:
    """content_type, file_name and file_size describe the bytes."""
    im = _image(data)
    assert im.format == fmt.upper() and image["content_type"] == f"image/{fmt}"
    assert image["file_name"].endswith("." + ("jpg" if fmt == "jpeg" else fmt)) and image["file_size"] == len(data)
    assert (image["width"], image["height"]) == im.size
    return im


# --- Python fal-client -------------------------------------------------------------------
def test_python_output_format_keeps_the_logo_transparent(fal):
    out = fal.subscribe("fal-ai/esrgan", {"image_url": _uri(LOGO, "image/png"), "scale": 2, "output_format": "webp"})
    im = _check_file(out["image"], _bytes_of(out["image"]["url"]), "webp")
    assert im.mode == "RGBA" and im.getpixel((1, 1))[3] == 0 and im.getpixel((36, 40))[3] == 255
    flat = fal.subscribe("fal-ai/ccsr", {"image_url": _uri(LOGO, "image/png"), "steps": 4, "output_format": "jpeg"})
    jpg = _check_file(flat["image"], _bytes_of(flat["image"]["url"]), "jpeg")
    assert jpg.mode == "RGB" and min(jpg.getpixel((1, 1))) >= 245  # flattened onto white


def test_python_photo_profile_orientation_and_provenance(fal):
    out = fal.run("fal-ai/ccsr", {"image_url": _uri(PHOTO, "image/jpeg"), "steps": 4, "seed": 5})
    im = _check_file(out["image"], _bytes_of(out["image"]["url"]), "png")
    assert im.size == (96, 128) and 0x0112 not in im.getexif()  # upright, no orientation tag
    assert im.info["icc_profile"] == _image(PHOTO).info["icc_profile"]
    made = json.loads(im.info["ccsr"])
    assert made["app"] == "fal-ai/ccsr" and made["parameters"]["seed"] == 5 == out["seed"]


def test_python_sync_mode_on_run_and_subscribe(fal):
    import fal_client

    out = fal.run("fal-ai/esrgan", {"image_url": _uri(LOGO, "image/png"), "sync_mode": True})
    assert out["image"]["url"].startswith("data:image/png;base64,")
    assert _check_file(out["image"], _bytes_of(out["image"]["url"]), "png").mode == "RGBA"
    handle = fal.submit("fal-ai/ccsr", {"image_url": _uri(PHOTO, "image/jpeg"), "steps": 4, "sync_mode": True,
                                        "output_format": "webp"})
    got = handle.get()
    assert got["image"]["url"].startswith("data:image/webp;base64,")
    assert _check_file(got["image"], _bytes_of(got["image"]["url"]), "webp").size == (96, 128)
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        fal.result("fal-ai/ccsr", handle.request_id)  # asked again: not kept
    assert err.value.status_code == 410 and "sync_mode" in str(err.value)


# --- JS @fal-ai/client -----------------------------------------------------------------
def _js(live: str, app: str, png: bytes) -> dict:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists():
        pytest.fail("The JS client tests need node and `npm ci` in tests/js (the CI setup script runs it).")
    env = {**os.environ, "CCSR_BASE": live, "CCSR_KEY": KEY, "CCSR_APP": app, "PNG_B64": base64.b64encode(png).decode()}
    proc = subprocess.run([node, str(JS_DIR / "scenarios.mjs"), "results"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"node results failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("app", ["fal-ai/ccsr", "fal-ai/esrgan"])
def test_js_output_format_transparency_and_sync_mode(live, app):
    out = _js(live, app, LOGO)
    webp = _check_file(out["webp"]["image"], base64.b64decode(out["webpBytes"]), "webp")
    assert webp.mode == "RGBA" and webp.getpixel((1, 1))[3] == 0
    assert out["run"]["image"]["url"].startswith("data:image/png;base64,")  # fal.run: the direct route
    assert _check_file(out["run"]["image"], base64.b64decode(out["runBytes"]), "png").mode == "RGBA"
    assert out["sub"]["image"]["url"].startswith("data:image/jpeg;base64,")  # subscribe: the queue
    jpg = _check_file(out["sub"]["image"], base64.b64decode(out["subBytes"]), "jpeg")
    assert min(jpg.getpixel((1, 1))) >= 245
    assert out["again"]["status"] == 410 and "sync_mode" in json.dumps(out["again"]["body"])


def test_js_photo_keeps_its_profile_upright(live):
    out = _js(live, "fal-ai/esrgan", PHOTO)
    for key in ("webpBytes", "runBytes", "subBytes"):
        im = _image(base64.b64decode(out[key]))
        assert im.size == (96, 128) and im.info["icc_profile"] == _image(PHOTO).info["icc_profile"], key
        assert 0x0112 not in im.getexif(), key
