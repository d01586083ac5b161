"""The official Python fal-client against a real `ccsr serve` running the tiny
random checkpoint in its model worker (test_official_clients.py covers the
whole protocol with a fast fake engine; this file proves the same calls work
when real inference, with its real step logs and cancellation, is behind them)."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from PIL import Image

from serve_helpers import serve
from ccsr.service.webhooks import verify_webhook

from svc_helpers import Receiver

KEY = "real-engine-key"
APP = "fal-ai/ccsr"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, tiny_config_path):
    data = tmp_path_factory.mktemp("real-serve")
    with serve(tiny_checkpoint, data, config=tiny_config_path, api_keys=[KEY],
               extra_env={"CCSR_ALLOW_PRIVATE_URLS": "1"}) as base:  # the webhook receiver is on 127.0.0.1
        yield base


@pytest.fixture
def fal(server, monkeypatch):
    import fal_client
    import fal_client.client as C

    monkeypatch.setattr(C, "RUN_URL_FORMAT", server + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", server + "/queue/")
    monkeypatch.setattr(C, "REST_URL", server + "/rest")
    monkeypatch.setattr(C, "CDN_URL", server + "/cdn")
    return fal_client.SyncClient(key=KEY)


def _photo_uri(fixtures_dir, size=(64, 48)) -> str:
    import fal_client

    with Image.open(fixtures_dir / "images" / "chelsea.png") as im:
        return fal_client.encode_image(im.convert("RGB").resize(size), format="png")


def test_subscribe_with_real_step_logs_then_webhook(fal, server, fixtures_dir):
    import fal_client

    updates = []
    receiver = Receiver()
    try:
        handle = fal.submit(APP, {"image_url": _photo_uri(fixtures_dir), "steps": 4, "seed": 9}, webhook_url=receiver.url)
        for update in handle.iter_events(with_logs=True, interval=0.1):
            updates.append(update)
        result = handle.get()
        assert result["seed"] == 9
        assert (result["image"]["width"], result["image"]["height"]) == (128, 96)
        png = httpx.get(result["image"]["url"]).content
        assert Image.open(io.BytesIO(png)).size == (128, 96)
        final = handle.status(with_logs=True)
        assert isinstance(final, fal_client.Completed) and final.metrics["inference_time"] > 0
        messages = [log["message"] for log in final.logs]
        assert [m for m in messages if m.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
        assert receiver.event.wait(30), "no webhook arrived"
        headers, body = receiver.got[0]
        assert json.loads(body)["payload"] == result
        jwks = httpx.get(server + "/.well-known/jwks.json").json()
        assert verify_webhook(jwks, request_id=headers["x-fal-webhook-request-id"], user_id=headers["x-fal-webhook-user-id"],
                              timestamp=headers["x-fal-webhook-timestamp"], body=body,
                              signature_hex=headers["x-fal-webhook-signature"])
    finally:
        receiver.close()


def test_cancel_while_running_stops_real_inference(fal, fixtures_dir):
    import fal_client

    handle = fal.submit(APP, {"image_url": _photo_uri(fixtures_dir), "steps": 200})  # 67 evaluations
    deadline = time.time() + 120
    while True:
        status = handle.status(with_logs=True)
        if isinstance(status, fal_client.InProgress) and any(l["message"].startswith("step ") for l in status.logs or []):
            break
        assert time.time() < deadline, status
        time.sleep(0.1)
    handle.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get()
    assert err.value.status_code == 400
    final = handle.status(with_logs=True)
    assert isinstance(final, fal_client.Completed)
    steps = [l["message"] for l in final.logs if l["message"].startswith("step ")]
    assert steps and steps[-1] != "step 67/67"  # it stopped early
