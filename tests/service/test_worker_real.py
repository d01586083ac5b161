"""End to end with the real engine: ``create_app`` with its default worker
pool (a spawned process holding CCSRUpscaler on a random tiny checkpoint),
over real HTTP. Small inputs, 4 steps and 64 px diffusion tiles keep it quick."""

from __future__ import annotations

import time

import httpx
import pytest

from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"
FAST = {"steps": 4, "tile_diffusion": "gaussian", "tile_diffusion_size": 64, "tile_diffusion_stride": 64}


@pytest.fixture(scope="module")
def real_server(tmp_path_factory, tiny_checkpoint, tiny_config_path):
    data = tmp_path_factory.mktemp("serve")
    settings = Settings(data_dir=data, weights=tiny_checkpoint, config=tiny_config_path, device="cpu")
    app = create_app(settings)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        deadline = time.time() + 180
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline, client.get("/readyz").json()
            time.sleep(0.2)
        yield base, client, app


def test_readyz_reports_the_loaded_worker(real_server):
    _, client, _ = real_server
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["workers"][0]["ready"] and body["workers"][0]["device"] == "cpu"


def test_submit_status_result_with_tiny_model(real_server):
    base, client, app = real_server
    r = client.post(Q, json={"image_url": png_data_uri(64, 48), "scale": 2, "seed": 3, **FAST})
    sub = r.json()
    seen = set()
    deadline = time.time() + 120
    while True:
        st = client.get(sub["status_url"], params={"logs": 1}).json()
        seen.add(st["status"])
        if st["status"] == "COMPLETED":
            break
        assert time.time() < deadline
        time.sleep(0.05)
    assert "error" not in st, st
    msgs = [l["message"] for l in st["logs"]]
    assert any(m.startswith("step 1/") for m in msgs) and any(m.startswith("done in") for m in msgs)
    assert st["metrics"]["inference_time"] > 0 and st["progress"] == 1.0
    out = client.get(sub["response_url"]).json()
    assert out["seed"] == 3 and (out["image"]["width"], out["image"]["height"]) == (128, 96)
    png = client.get(out["image"]["url"]).content
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(png)).size == (128, 96)
    text = client.get("/metrics").text
    assert "ccsr_inference_seconds_count 1.0" in text and 'ccsr_requests_finished_total{outcome="completed"} 1.0' in text
    assert "ccsr_step_seconds_count" in text


def test_cancel_while_running_stops_at_next_step(real_server):
    _, client, _ = real_server
    body = {"image_url": png_data_uri(64, 64), "scale": 2, **FAST, "steps": 60}  # 20 evaluations
    sub = client.post(Q, json=body).json()
    deadline = time.time() + 120
    while True:
        st = client.get(sub["status_url"], params={"logs": 1}).json()
        if any(l["message"].startswith("step 1/") for l in st["logs"] or []):
            break
        assert time.time() < deadline and st["status"] != "COMPLETED", st
        time.sleep(0.05)
    assert client.put(sub["cancel_url"]).json() == {"status": "CANCELLATION_REQUESTED"}
    st = wait_status(client, sub["status_url"], "COMPLETED", timeout=60, logs=1)
    assert st["error_type"] == "request_cancelled"
    steps = [l["message"] for l in st["logs"] if l["message"].startswith("step ")]
    assert len(steps) < 20, steps
    assert client.get(sub["response_url"]).status_code == 400


def test_engine_side_validation_is_422(real_server):
    _, client, _ = real_server
    # Cross-field rules fail at submit...
    r = client.post(Q, json={"image_url": png_data_uri(64, 64), **FAST, "tile_diffusion_stride": 72})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tile_diffusion_stride"]
    # ...and so do size rules, read from a data URI's header: a 4x1000 image is enlarged to a
    # 512 px short side (512 x 128000 px), over max_output_pixels.
    r = client.post(Q, json={"image_url": png_data_uri(4, 1000), "scale": 1, "steps": 4})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"], r.text
    assert "max_output_pixels" in r.json()["detail"][0]["msg"]
