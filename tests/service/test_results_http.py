"""Results as users want them, through the HTTP API (issue 23): output_format
on every app, transparency, grey and 16-bit inputs, the ICC profile and the
EXIF orientation of a photo, sync_mode (inline once, then a clear 410; no copy
kept; its size limit), and the provenance chunk. Both built-in apps run on the
fake engine here (the plumbing is under test; tests/models/esrgan has the real
network's alpha); the fixtures are real images."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from ccsr.apps.registry import default_registry
from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.testing import FakeEngine

from svc_helpers import Receiver, serve_app, settled_working_blobs, wait_status, working_blobs

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
APPS = ("fal-ai/ccsr", "fal-ai/esrgan")
MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}
SYNC_LIMIT = 40_000  # max_sync_mode_bytes here: the small images fit, a noisy one does not


def _server(tmp_path, **settings):
    settings.setdefault("allow_private_urls", True)  # the webhook receiver is on 127.0.0.1
    app = create_app(Settings(data_dir=tmp_path, max_sync_mode_bytes=SYNC_LIMIT, **settings),
                     registry=default_registry(),
                     executors={a: ThreadExecutor(FakeEngine(0.0)) for a in APPS}, sweep_interval=0.2)
    return app, serve_app(app)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    app, ctx = _server(tmp_path_factory.mktemp("results"))
    with ctx as base, httpx.Client(base_url=base, timeout=60) as client:
        yield app, client


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _fixture_uri(name: str) -> str:
    return _uri((IMAGES / name).read_bytes(), "image/jpeg" if name.endswith(".jpg") else "image/png")


def _run(client, app_id: str, **body) -> dict:
    r = client.post(f"/{app_id}", json={"scale": 2, **({"steps": 4} if app_id == "fal-ai/ccsr" else {}), **body})
    assert r.status_code == 200, r.text
    return r.json()


def _download(client, image: dict) -> tuple[bytes, Image.Image]:
    url = image["url"]
    data = base64.b64decode(url.split(",", 1)[1]) if url.startswith("data:") else client.get(url).content
    im = Image.open(io.BytesIO(data))
    im.load()
    return data, im


@pytest.mark.parametrize("app_id", APPS)
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_format_on_every_app(live, app_id, fmt):
    _, client = live
    img = _run(client, app_id, image_url=_uri(_png(Image.new("RGB", (10, 8), (200, 30, 40)))), output_format=fmt)["image"]
    data, im = _download(client, img)
    assert data.startswith(MAGIC[fmt]) and im.format == fmt.upper()
    assert img["content_type"] == f"image/{fmt}" and img["file_name"].endswith("." + ("jpg" if fmt == "jpeg" else fmt))
    assert img["file_size"] == len(data) and (img["width"], img["height"]) == im.size == (20, 16)


def test_the_schema_offers_the_output_fields(live):
    _, client = live
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("CCSRInput", "ESRGANInput"):
        props = schemas[name]["properties"]
        assert props["output_format"]["enum"] == ["png", "jpeg", "webp"] and props["output_format"]["default"] == "png"
        assert props["sync_mode"]["type"] == "boolean" and props["sync_mode"]["default"] is False
    r = client.post("/fal-ai/ccsr", json={"image_url": _fixture_uri("logo-rgba.png"), "output_format": "gif"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "output_format"]


def test_a_transparent_logo_keeps_its_alpha_and_jpeg_is_flattened(live):
    _, client = live
    logo = Image.open(IMAGES / "logo-rgba.png")
    sub = client.post("/queue/fal-ai/esrgan", json={"image_url": _fixture_uri("logo-rgba.png"), "scale": 2}).json()
    wait_status(client, sub["status_url"], "COMPLETED")
    _, im = _download(client, client.get(sub["response_url"]).json()["image"])
    assert im.mode == "RGBA" and im.size == (96, 80)
    alpha = np.asarray(im.getchannel("A")).astype(int)
    want = np.asarray(logo.getchannel("A").resize((96, 80), Image.BICUBIC)).astype(int)
    assert np.abs(alpha - want).max() <= 1  # the fake engine cannot upscale alpha: bicubic
    sub = client.post("/queue/fal-ai/ccsr", json={"image_url": _fixture_uri("logo-rgba.png"), "steps": 4,
                                                 "output_format": "jpeg"}).json()
    done = wait_status(client, sub["status_url"], "COMPLETED", logs="1")
    assert any(l["level"] == "WARN" and "flattened onto white" in l["message"] for l in done["logs"]), done["logs"]
    _, jpg = _download(client, client.get(sub["response_url"]).json()["image"])
    assert jpg.mode == "RGB" and min(jpg.getpixel((1, 1))) >= 245  # transparent: white
    r, g, b = jpg.getpixel((36, 40))
    assert b > 180 and r < 80  # the disc


def test_a_photo_keeps_its_profile_and_comes_upright(live):
    _, client = live
    src = Image.open(IMAGES / "rocket-p3-rot6.jpg")
    icc = src.info["icc_profile"]
    upright = np.asarray(src.transpose(Image.ROTATE_270).convert("RGB")).astype(int)  # what viewers show (48x64)
    for fmt in ("png", "jpeg", "webp"):
        img = _run(client, "fal-ai/esrgan", image_url=_fixture_uri("rocket-p3-rot6.jpg"), output_format=fmt)["image"]
        _, im = _download(client, img)
        assert im.size == (96, 128), fmt  # the orientation applied before upscaling
        assert im.info.get("icc_profile") == icc, fmt
        assert 0x0112 not in im.getexif(), fmt  # no stale orientation tag
        back = np.asarray(im.convert("RGB").resize((48, 64), Image.BICUBIC)).astype(int)
        assert np.abs(back - upright).mean() < 8, fmt  # the right way up, not just the right size


def test_grey_and_16_bit_inputs(live):
    _, client = live
    grey = Image.new("L", (8, 8), 90)
    img = _run(client, "fal-ai/ccsr", image_url=_uri(_png(grey)))["image"]
    assert _download(client, img)[1].mode == "L"
    ramp = Image.fromarray(np.linspace(0, 65535, 64).astype(np.uint16)[None, :].repeat(8, 0))  # a 16-bit grey PNG
    assert ramp.mode == "I;16"
    _, im = _download(client, _run(client, "fal-ai/esrgan", image_url=_uri(_png(ramp)))["image"])
    assert im.mode == "L"
    row = np.asarray(im)[4].astype(int)
    assert row[0] < 10 and 110 < row[64] < 145 and row[-1] > 245  # scaled to 8 bits, not clipped to white


def test_provenance_in_png_results(tmp_path, live):
    _, client = live
    img = _run(client, "fal-ai/ccsr", image_url=_uri(_png(Image.new("RGB", (8, 8)))), seed=11, steps=6)["image"]
    made = json.loads(_download(client, img)[1].info["ccsr"])
    assert made["app"] == "fal-ai/ccsr" and made["parameters"]["seed"] == 11 and made["parameters"]["steps"] == 6
    app, ctx = _server(tmp_path, provenance=False)
    with ctx as base, httpx.Client(base_url=base, timeout=60) as other:
        img = _run(other, "fal-ai/ccsr", image_url=_uri(_png(Image.new("RGB", (8, 8)))), seed=11)["image"]
        assert "ccsr" not in _download(other, img)[1].info


def test_sync_mode_on_the_queue_inline_once_then_410(live):
    app, client = live
    receiver = Receiver()
    try:
        sub = client.post("/queue/fal-ai/ccsr", params={"fal_webhook": receiver.url},
                          json={"image_url": _fixture_uri("logo-rgba.png"), "steps": 4, "sync_mode": True,
                                "output_format": "webp"}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        rid = sub["request_id"]
        row = app.state.store.get(rid)
        assert "base64" not in json.dumps(row.result)  # the database never holds the image
        first = client.get(sub["response_url"])
        assert first.status_code == 200
        img = first.json()["image"]
        assert img["url"].startswith("data:image/webp;base64,")
        data, im = _download(client, img)
        assert img["file_size"] == len(data) and im.mode == "RGBA" and img["file_name"].endswith(".webp")
        assert working_blobs(app.state.blobs) == [] and not any(rid in k for k in app.state.blobs.keys())
        assert not [k for k in app.state.blobs.keys() if k.startswith("files/") and not k.endswith(".json")
                    and app.state.blobs.read(k) == data]  # no copy kept
        later = client.get(sub["response_url"])
        assert later.status_code == 410
        body = later.json()
        assert "sync_mode" in body["detail"] and body["sync_mode"] is True
        assert body["result"]["image"]["url"] is None and body["result"]["image"]["file_size"] == len(data)
        assert receiver.event.wait(30), "no webhook arrived"
        hook = json.loads(receiver.got[0][1])
        assert hook["payload"]["image"]["url"] is None and hook["payload"]["image"]["width"] == img["width"]
    finally:
        receiver.close()


def test_sync_mode_on_the_direct_and_stream_routes(live):
    _, client = live
    out = _run(client, "fal-ai/esrgan", image_url=_fixture_uri("logo-rgba.png"), sync_mode=True)
    assert out["image"]["url"].startswith("data:image/png;base64,")
    assert _download(client, out["image"])[1].size == (96, 80)
    with client.stream("POST", "/fal-ai/ccsr/stream", json={"image_url": _fixture_uri("logo-rgba.png"), "steps": 4,
                                                           "sync_mode": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["image"]["url"].startswith("data:image/png;base64,")


def test_sync_mode_over_its_limit_is_refused_and_leaves_nothing(live):
    app, client = live
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    r = client.post("/fal-ai/ccsr", json={"image_url": _uri(_png(noise)), "steps": 4, "sync_mode": True})
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "sync_mode"] and "max_sync_mode_bytes" in err["msg"] and str(SYNC_LIMIT) in err["msg"]
    # The refused result's blob is dropped after the answer (the request's leftovers
    # go asynchronously once it has ended): gone within moments, not kept.
    assert settled_working_blobs(app.state.blobs) == []
    # The same request without sync_mode gets its file; the other limits hold with sync_mode as without.
    assert _run(client, "fal-ai/ccsr", image_url=_uri(_png(noise)))["image"]["url"].startswith("http")
    big = _uri(_png(Image.new("RGB", (2048, 2048))))
    r = client.post("/fal-ai/ccsr", json={"image_url": big, "scale": 4, "sync_mode": True})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"]  # max_output_pixels


def test_an_inline_result_never_asked_for_expires_with_its_request(tmp_path):
    app, ctx = _server(tmp_path, result_ttl=0.5)
    with ctx as base, httpx.Client(base_url=base, timeout=60) as client:
        sub = client.post("/queue/fal-ai/esrgan", json={"image_url": _fixture_uri("logo-rgba.png"),
                                                       "sync_mode": True}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        assert [k for k in app.state.blobs.keys() if k.startswith("files/")]  # held until asked for
        deadline = time.time() + 10
        while app.state.store.get(sub["request_id"]) is not None:  # retention removes the request (never asked)...
            assert time.time() < deadline
            time.sleep(0.1)
        assert not [k for k in app.state.blobs.keys() if k.startswith("files/")]  # ... and the image it held
        assert client.get(sub["response_url"]).status_code == 404
