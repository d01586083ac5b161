"""batch_size through the whole service: requests waiting in the queue with one
shape and settings are taken by the idle worker together and go through the
network as one batch; one of another size, taken with them, runs by itself."""

from __future__ import annotations

import time

import httpx

from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"
BATCHED = "running 3 queued requests batched through the network"


def _running(client: httpx.Client, status_url: str) -> None:
    """Until the worker has started the request (IN_PROGRESS begins at the claim,
    while the worker may still be gathering its batch)."""
    deadline = time.time() + 30
    while not any(l["message"].startswith("fake engine") for l in client.get(status_url, params={"logs": 1}).json().get("logs") or []):
        assert time.time() < deadline
        time.sleep(0.02)


def _ready(client: httpx.Client) -> None:
    deadline = time.time() + 60
    while client.get("/readyz").status_code != 200:
        assert time.time() < deadline
        time.sleep(0.05)


def test_waiting_requests_of_one_shape_run_as_one_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.05")
    app = create_app(Settings(data_dir=tmp_path, batch_size=4), worker_factory="ccsr.testing:fake_engine_factory")
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        _ready(client)
        first = client.post(Q, json={"image_url": png_data_uri(), "steps": 60, "seed": 1}).json()
        _running(client, first["status_url"])
        same = [client.post(Q, json={"image_url": png_data_uri(), "steps": 12, "seed": s}).json() for s in (21, 22, 23)]
        other = client.post(Q, json={"image_url": png_data_uri(16, 12), "steps": 12, "seed": 30}).json()
        queued = [client.get(s["status_url"]).json() for s in [*same, other]]
        assert [q["status"] for q in queued] == ["IN_QUEUE"] * 4
        assert [q["queue_position"] for q in queued] == [0, 1, 2, 3]

        first_done = wait_status(client, first["status_url"], "COMPLETED", logs=1)
        assert not any("batched" in l["message"] for l in first_done["logs"])  # it ran alone: nothing waited
        for s, seed in zip(same, (21, 22, 23)):
            st = wait_status(client, s["status_url"], "COMPLETED", logs=1)
            messages = [l["message"] for l in st["logs"]]
            assert BATCHED in messages, messages
            assert "fake engine: 4 steps, batch of 3" in messages
            assert client.get(s["response_url"]).json()["seed"] == seed
        st = wait_status(client, other["status_url"], "COMPLETED", logs=1)
        assert not any("batch" in l["message"] for l in st["logs"])
        out = client.get(other["response_url"]).json()
        assert out["seed"] == 30 and (out["image"]["width"], out["image"]["height"]) == (32, 24)


def test_batch_size_one_takes_one_request_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.05")
    app = create_app(Settings(data_dir=tmp_path), worker_factory="ccsr.testing:fake_engine_factory")
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        _ready(client)
        first = client.post(Q, json={"image_url": png_data_uri(), "steps": 30, "seed": 1}).json()
        _running(client, first["status_url"])
        subs = [client.post(Q, json={"image_url": png_data_uri(), "steps": 12, "seed": s}).json() for s in (2, 3)]
        wait_status(client, first["status_url"], "COMPLETED")
        st = wait_status(client, subs[0]["status_url"], "IN_PROGRESS")
        assert client.get(subs[1]["status_url"]).json()["status"] == "IN_QUEUE"  # not taken with it
        for s in subs:
            st = wait_status(client, s["status_url"], "COMPLETED", logs=1)
            assert not any("batch" in l["message"] for l in st["logs"])
