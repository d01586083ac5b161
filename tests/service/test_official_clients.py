"""The official, unmodified clients against a live server: Python fal-client
(pinned 1.0.3) here, and the JS @fal-ai/client (pinned in tests/js) through
node scripts. The engine is the in-process fake (queue semantics, not
pictures, are under test); the server is the real app on uvicorn.

Python is pointed at the server by setting the module's URL constants, as
docs/fal-protocol.md ("Pointing the official clients") describes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.service.webhooks import verify_webhook
from ccsr.settings import Settings

from svc_helpers import Receiver

KEY = "official-client-key"
APP = "fal-ai/ccsr"
JS_DIR = Path(__file__).resolve().parents[1] / "js"
STEP_SECONDS = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """create_app() on uvicorn in a thread, with the fake engine."""

    def __init__(self, data_dir: Path, **settings):
        settings.setdefault("api_keys", [KEY])
        settings.setdefault("allow_private_urls", True)  # the webhook receivers listen on 127.0.0.1
        self.settings = Settings(data_dir=data_dir, **settings)
        self.app = create_app(self.settings, executor=ThreadExecutor(FakeEngine(STEP_SECONDS)))
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("live"))
    yield server
    server.close()


@pytest.fixture
def fal(live, monkeypatch):
    import fal_client
    import fal_client.client as C

    monkeypatch.setattr(C, "RUN_URL_FORMAT", live.base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", live.base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", live.base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", live.base + "/cdn")
    return fal_client.SyncClient(key=KEY)


def png(w=12, h=10, color=(30, 120, 200)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def data_uri(w=12, h=10) -> str:
    import fal_client

    return fal_client.encode_image(png(w, h), format="png")


def long_steps(seconds: float) -> int:
    """``steps`` making the fake engine run about ``seconds`` (a third of steps run)."""
    return max(6, int(3 * seconds / STEP_SECONDS))


# --- Python fal-client -------------------------------------------------------------------


def test_python_subscribe_with_logs_and_queue_updates(fal, live):
    import fal_client

    updates = []
    enqueued = []
    result = fal.subscribe(
        APP,
        {"image_url": data_uri(12, 10), "scale": 2, "steps": 12},
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert result["image"]["url"].startswith(live.base + "/files/")
    assert (result["image"]["width"], result["image"]["height"]) == (24, 20)
    assert isinstance(result["seed"], int)
    assert len(enqueued) == 1
    assert isinstance(updates[-1], fal_client.Completed)
    assert any(isinstance(u, fal_client.InProgress) for u in updates) or updates[-1].logs
    assert any(log["message"] for log in updates[-1].logs)
    img = Image.open(io.BytesIO(httpx.get(result["image"]["url"]).content))
    assert img.size == (24, 20)


def test_python_submit_status_result(fal, live):
    import fal_client

    handle = fal.submit(APP, {"image_url": data_uri(), "steps": 8})
    assert handle.request_id
    status = handle.status(with_logs=True)
    assert isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
    result = handle.get()
    assert result["image"]["content_type"] == "image/png"
    done = handle.status(with_logs=True)
    assert isinstance(done, fal_client.Completed) and done.metrics.get("inference_time", 0) > 0
    # The module-level helpers rebuild the URLs from the request id.
    assert isinstance(fal.status(APP, handle.request_id), fal_client.Completed)
    assert fal.result(APP, handle.request_id) == result


def test_python_sync_run(fal):
    out = fal.run(APP, {"image_url": data_uri(8, 8), "scale": 1.5, "steps": 6})
    assert (out["image"]["width"], out["image"]["height"]) == (12, 12)


def test_python_cancel_queued_and_running(fal, live):
    import fal_client

    running = fal.submit(APP, {"image_url": data_uri(), "steps": long_steps(3)})
    queued = fal.submit(APP, {"image_url": data_uri(), "steps": long_steps(3)})
    deadline = time.time() + 10
    while not isinstance(running.status(), fal_client.InProgress):
        assert time.time() < deadline
        time.sleep(0.05)
    assert isinstance(queued.status(), fal_client.Queued)
    queued.cancel()
    started = time.time()
    running.cancel()
    for handle in (queued, running):
        with pytest.raises(fal_client.client.FalClientHTTPError) as err:
            handle.get()
        assert err.value.status_code >= 400
        final = handle.status()
        assert isinstance(final, fal_client.Completed)
    assert time.time() - started < 2.5  # stopped at the next step, not after 3 s
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        running.cancel()  # already finished
    assert err.value.status_code == 400


def test_python_upload_then_run(fal, live, tmp_path):
    path = tmp_path / "in.png"
    png(9, 7).save(path)
    url = fal.upload_file(path)
    assert url.startswith(live.base + "/files/")
    out = fal.subscribe(APP, {"image_url": url, "steps": 6, "scale": 2})
    assert (out["image"]["width"], out["image"]["height"]) == (18, 14)
    url2 = fal.upload_image(png(5, 5), format="png")
    out2 = fal.run(APP, {"image_url": url2, "steps": 6, "scale": 2})
    assert out2["image"]["width"] == 10


def test_python_data_uri_input(fal):
    import fal_client

    uri = fal_client.encode_image(png(6, 4), format="jpeg")
    assert uri.startswith("data:image/jpeg;base64,")
    out = fal.subscribe(APP, {"image_url": uri, "steps": 6, "scale": 3})
    assert (out["image"]["width"], out["image"]["height"]) == (18, 12)


def test_python_webhook_delivery_signed(fal, live):
    receiver = Receiver()
    try:
        handle = fal.submit(APP, {"image_url": data_uri(), "steps": 6}, webhook_url=receiver.url)
        result = handle.get()
        assert receiver.event.wait(15), "no webhook arrived"
        headers, body = receiver.got[0]
        payload = json.loads(body)
        assert payload["request_id"] == handle.request_id and payload["status"] == "OK"
        assert payload["payload"] == result
        jwks = httpx.get(live.base + "/.well-known/jwks.json").json()
        assert verify_webhook(
            jwks,
            request_id=headers["x-fal-webhook-request-id"],
            user_id=headers["x-fal-webhook-user-id"],
            timestamp=headers["x-fal-webhook-timestamp"],
            body=body,
            signature_hex=headers["x-fal-webhook-signature"],
        )
    finally:
        receiver.close()


def test_python_validation_error_is_422(fal):
    import fal_client

    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        fal.subscribe(APP, {"image_url": data_uri(), "scale": 1000})
    assert err.value.status_code == 422
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        fal.run(APP, {"steps": 6})  # image_url missing
    assert err.value.status_code == 422


def test_python_bad_image_is_422_naming_the_field(fal):
    import fal_client

    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        fal.subscribe(APP, {"image_url": "data:image/png;base64,aGVsbG8=", "steps": 6})
    assert err.value.status_code == 422
    assert "image_url" in json.dumps(err.value.response.json())


def test_python_wrong_key_is_401(live, monkeypatch):
    import fal_client
    import fal_client.client as C

    monkeypatch.setattr(C, "RUN_URL_FORMAT", live.base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", live.base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", live.base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", live.base + "/cdn")
    bad = fal_client.SyncClient(key="not-the-key")
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        bad.submit(APP, {"image_url": data_uri()})
    assert err.value.status_code == 401
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        bad.run(APP, {"image_url": data_uri()})
    assert err.value.status_code == 401


def test_python_async_client(live, monkeypatch):
    import fal_client
    import fal_client.client as C

    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", live.base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", live.base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", live.base + "/cdn")

    async def go():
        client = fal_client.AsyncClient(key=KEY)
        url = await client.upload(b"".join([_png_bytes()]), "image/png", file_name="a.png")
        handle = await client.submit(APP, {"image_url": url, "steps": 6})
        events = [e async for e in handle.iter_events(with_logs=True, interval=0.05)]
        assert isinstance(events[-1], fal_client.Completed)
        return await handle.get()

    out = asyncio.run(go())
    assert out["image"]["width"] == 24


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    png().save(buf, format="PNG")
    return buf.getvalue()


# --- JS @fal-ai/client -------------------------------------------------------------------

NODE = shutil.which("node")


def _js_ready() -> bool:
    return NODE is not None and (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists()


@pytest.fixture(scope="module")
def js_env():
    if not _js_ready():
        pytest.fail(
            "The JS client tests need node and `npm ci` in tests/js (the CI setup script runs it)."
        )
    return {**os.environ}


def run_js(js_env, live, scenario: str, timeout: float = 60, **extra) -> dict:
    env = {
        **js_env,
        "CCSR_BASE": live.base,
        "CCSR_KEY": KEY,
        "PNG_B64": base64.b64encode(_png_bytes()).decode(),
        **{k: str(v) for k, v in extra.items()},
    }
    proc = subprocess.run(
        [NODE, str(JS_DIR / "scenarios.mjs"), scenario], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"node {scenario} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_js_subscribe_with_logs(js_env, live, mode):
    out = run_js(js_env, live, "subscribe", MODE=mode)
    assert out["requestId"] and out["data"]["image"]["url"].startswith(live.base + "/files/")
    assert out["data"]["image"]["width"] == 24
    assert "COMPLETED" in out["statuses"]
    assert out["sawLogs"]


def test_js_queue_submit_status_result(js_env, live):
    out = run_js(js_env, live, "queue")
    assert out["status"] == "COMPLETED" and out["requestId"] == out["submittedId"]
    assert out["data"]["image"]["content_type"] == "image/png"


def test_js_stream_status(js_env, live):
    out = run_js(js_env, live, "streamStatus")
    assert out["last"] == "COMPLETED" and len(out["events"]) >= 1


def test_js_cancel_queued_and_running(js_env, live):
    out = run_js(js_env, live, "cancel", LONG_STEPS=long_steps(3))
    assert out["queuedFinal"]["status"] == "COMPLETED" and out["queuedFinal"]["error"]
    assert out["runningFinal"]["status"] == "COMPLETED" and out["runningFinal"]["error"]
    assert out["runningStoppedWithin"] < 2500
    assert out["resultErrorStatus"] >= 400


def test_js_upload_then_run(js_env, live):
    out = run_js(js_env, live, "upload")
    assert out["uploadedUrl"].startswith(live.base + "/files/")
    assert out["fetchedBytes"] == out["blobBytes"]
    assert out["data"]["image"]["width"] == 24
    assert out["autoUpload"]["image"]["width"] == 24  # Blob in the input, uploaded by the client


def test_js_data_uri_input(js_env, live):
    out = run_js(js_env, live, "dataUri")
    assert out["data"]["image"]["width"] == 24


def test_js_webhook_signature(js_env, live):
    out = run_js(js_env, live, "webhook")
    assert out["verified"] is True and out["payload"]["status"] == "OK"
    assert out["payload"]["request_id"] == out["requestId"]


def test_js_validation_error(js_env, live):
    out = run_js(js_env, live, "validation")
    assert out["name"] == "ValidationError" and out["status"] == 422
    assert any("scale" in json.dumps(e) for e in out["fieldErrors"])


def test_js_unauthorized(js_env, live):
    out = run_js(js_env, live, "unauthorized")
    assert out["status"] == 401


def test_js_through_proxy(js_env, live):
    out = run_js(js_env, live, "proxy")
    assert out["requestId"] and out["data"]["image"]["width"] == 24
    assert out["uploadedUrl"].startswith(live.base + "/files/")
