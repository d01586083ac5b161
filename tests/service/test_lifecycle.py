"""Server lifecycle: a graceful stop hands running requests back to the queue
(uncounted) and the next start runs them; the queue on PostgreSQL as on
SQLite; several workers run requests side by side; ``ccsr serve`` refuses a
public bind without API keys."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


def test_graceful_stop_requeues_running_and_restart_runs_it(tmp_path, any_db_url):
    settings = Settings(data_dir=tmp_path, database_url=any_db_url)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.1)))
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        long = client.post(Q, json={"image_url": png_data_uri(), "steps": 60}).json()
        queued = client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json()
        wait_status(client, long["status_url"], "IN_PROGRESS")
        cancelled = client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json()
        client.put(cancelled["cancel_url"])
    rec = app.state.store.get(long["request_id"])
    assert rec.status == "queued" and rec.attempts == 0
    assert app.state.store.get(queued["request_id"]).status == "queued"

    app2 = create_app(settings, executor=ThreadExecutor(FakeEngine(0.0)))
    with serve_app(app2) as base, httpx.Client(base_url=base) as client:
        st = wait_status(client, f"{Q}/requests/{long['request_id']}/status", "COMPLETED", logs=1)
        assert "error" not in st
        assert not any("attempt 2" in l["message"] for l in st["logs"])
        assert "error" not in wait_status(client, f"{Q}/requests/{queued['request_id']}/status", "COMPLETED")
        assert client.get(f"{Q}/requests/{cancelled['request_id']}").status_code == 400  # stays cancelled


APP_ID = "fal-ai/ccsr"


def test_two_workers_run_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.1")
    app = create_app(Settings(data_dir=tmp_path, workers="cpu,cpu"), worker_factory="ccsr.testing:fake_engine_factory")
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        deadline = time.time() + 60
        while sum(w["ready"] for w in client.get("/readyz").json()["workers"] if w["app"] == APP_ID) < 2:
            assert time.time() < deadline
            time.sleep(0.05)
        subs = [client.post(Q, json={"image_url": png_data_uri(), "steps": 30}).json() for _ in range(3)]
        deadline = time.time() + 30
        while True:
            states = [client.get(s["status_url"]).json() for s in subs]
            if [s["status"] for s in states[:2]] == ["IN_PROGRESS", "IN_PROGRESS"]:
                break
            assert time.time() < deadline, states
            time.sleep(0.02)
        assert states[2]["status"] == "IN_QUEUE" and states[2]["queue_position"] == 0
        pids = {w["pid"] for w in client.get("/readyz").json()["workers"] if w["app"] == APP_ID}  # this app's two
        assert len(pids) == 2
        for s in subs:
            client.put(s["cancel_url"])


def test_serve_refuses_public_bind_without_keys(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ccsr.cli", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without API keys" in r.stderr and "127.0.0.1" in r.stderr


_NO_TORCH_SCRIPT = r"""
import sys, time, base64, io
from fastapi.testclient import TestClient
from PIL import Image
from ccsr.service.app import create_app
from ccsr.settings import Settings
import ccsr.cli  # everything `ccsr serve` imports
buf = io.BytesIO(); Image.new("RGB", (32, 32)).save(buf, format="PNG")
uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
app = create_app(Settings(data_dir=sys.argv[1], weights=sys.argv[2], config=sys.argv[3], device="cpu"))
with TestClient(app) as c:
    while c.get("/readyz").status_code != 200:
        time.sleep(0.2)
    sub = c.post("/queue/fal-ai/ccsr", json={"image_url": uri, "steps": 4, "tile_diffusion": "gaussian",
                                             "tile_diffusion_size": 64, "tile_diffusion_stride": 64}).json()
    while (st := c.get(sub["status_url"]).json())["status"] != "COMPLETED":
        time.sleep(0.1)
    assert "error" not in st, st
print("TORCH_IMPORTED" if "torch" in sys.modules else "NO_TORCH")
"""


def test_http_process_never_imports_torch(tmp_path, tiny_checkpoint, tiny_config_path):
    r = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, str(tmp_path), str(tiny_checkpoint), str(tiny_config_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("NO_TORCH"), r.stdout  # the worker ran the model; the HTTP process never loaded torch
