"""ccsr/v2 served by a real `ccsr serve` (tiny random weights in its model
worker), through the HTTP API and both official clients: the Python
fal-client (subscribe with logs, webhook, upload, cancel) and the JS
@fal-ai/client (subscribe, queue, upload, cancel); the app list and the
OpenAPI schema the playground builds its form from."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "service"))
from serve_helpers import serve  # noqa: E402
from svc_helpers import Receiver, point_fal_client  # noqa: E402

KEY = "v2-key"
APP = "ccsr/v2"
JS_DIR = Path(__file__).resolve().parents[2] / "js"
SMALL = {"process_size": 64}


def _png(w=32, h=24) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _uri() -> str:
    return "data:image/png;base64," + base64.b64encode(_png()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, v2_weights):
    data = tmp_path_factory.mktemp("v2-serve")
    env = {"CCSR_APPS": APP, "CCSR_V2_WEIGHTS": str(v2_weights), "CCSR_ALLOW_PRIVATE_URLS": "1",
           "CCSR_DTYPE": "fp32"}
    with serve(v2_weights, data, api_keys=[KEY], extra_env=env) as base:
        yield base


@pytest.fixture
def fal(server, monkeypatch):
    import fal_client

    point_fal_client(monkeypatch, server)
    return fal_client.SyncClient(key=KEY)


def test_app_list_schema_and_random_weights_are_said(server):
    h = {"Authorization": f"Key {KEY}"}
    apps = httpx.get(server + "/api/apps", headers=h).json()["apps"]
    assert [a["id"] for a in apps] == [APP]
    ready = httpx.get(server + "/readyz").json()
    assert ready["random_weights"] is True
    schema = httpx.get(server + "/openapi.json").json()["components"]["schemas"]["CCSRv2Input"]["properties"]
    for field in ("prompt", "negative_prompt", "guidance_scale", "steps", "t_max", "t_min", "start_point",
                  "color_fix_type", "process_size", "scale", "seed", "tile_diffusion", "tile_diffusion_size",
                  "tile_diffusion_stride", "tile_vae", "tile_vae_decoder_size", "output_format", "sync_mode"):
        assert field in schema, field
    assert schema["steps"]["default"] == 1 and schema["scale"]["default"] == 4


def test_python_subscribe_two_step_with_pass_logs_then_webhook(fal):
    import fal_client

    receiver = Receiver()
    try:
        handle = fal.submit(APP, {"image_url": _uri(), "seed": 9, "steps": 6, "t_min": 0.5, "guidance_scale": 4.5,
                                  "scale": 2, **SMALL}, webhook_url=receiver.url)
        list(handle.iter_events(with_logs=True, interval=0.1))
        result = handle.get()
        assert result["seed"] == 9 and (result["image"]["width"], result["image"]["height"]) == (64, 48)
        assert Image.open(io.BytesIO(httpx.get(result["image"]["url"]).content)).size == (64, 48)
        final = handle.status(with_logs=True)
        assert isinstance(final, fal_client.Completed)
        assert [m["message"] for m in final.logs if m["message"].startswith("step ")] == ["step 1/2", "step 2/2"]
        assert receiver.event.wait(30), "no webhook arrived"
        assert json.loads(receiver.got[0][1])["payload"] == result
    finally:
        receiver.close()


def test_python_upload_then_run_and_bad_input_names_the_field(fal):
    import fal_client

    url = fal.upload(_png(), "image/png")
    out = fal.run(APP, {"image_url": url, "seed": 1, **SMALL})
    assert (out["image"]["width"], out["image"]["height"]) == (128, 96)
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        fal.submit(APP, {"image_url": url, "steps": 1, "t_min": 0.5})
    assert err.value.status_code == 422 and "t_min" in str(err.value)


def test_python_cancel_between_passes(fal):
    import fal_client

    handle = fal.submit(APP, {"image_url": _uri(), "steps": 600, "t_max": 1.0, **SMALL})  # 600 passes
    deadline = time.time() + 60
    while True:
        status = handle.status(with_logs=True)
        if isinstance(status, fal_client.InProgress) and any(l["message"].startswith("step ") for l in status.logs or []):
            break
        assert time.time() < deadline, status
        time.sleep(0.05)
    handle.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get()
    assert err.value.status_code == 400
    steps = [l["message"] for l in handle.status(with_logs=True).logs if l["message"].startswith("step ")]
    assert steps and steps[-1] != "step 600/600"


def _node(server: str, scenario: str, **env) -> dict:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@fal-ai" / "client").exists():
        pytest.fail("the JS client tests need node and `npm ci` in tests/js (scripts/test.sh runs it)")
    full = {**os.environ, "CCSR_BASE": server, "CCSR_KEY": KEY, "CCSR_APP": APP,
            "PNG_B64": base64.b64encode(_png()).decode(), "CCSR_INPUT": json.dumps(SMALL),
            **{k: str(v) for k, v in env.items()}}
    proc = subprocess.run([node, str(JS_DIR / "scenarios.mjs"), scenario], env=full, capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, f"node {scenario} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_js_subscribe_queue_and_upload(server):
    out = _node(server, "subscribe", MODE="streaming")
    assert out["data"]["image"]["width"] == 64 and "COMPLETED" in out["statuses"] and out["sawLogs"]
    out = _node(server, "queue")
    assert out["status"] == "COMPLETED" and out["data"]["image"]["url"].startswith(server + "/files/")
    out = _node(server, "upload")
    assert out["data"]["image"]["width"] == 64 and out["fetchedBytes"] == out["blobBytes"]


def test_js_cancel(server):
    out = _node(server, "cancel", LONG_STEPS=900)
    assert out["queuedFinal"]["status"] == "COMPLETED" and out["queuedFinal"]["error"]
    assert out["runningFinal"]["status"] == "COMPLETED" and out["resultErrorStatus"] >= 400
