"""Worker crashes: the worker process is killed mid-request; the server keeps
serving, restarts the worker and retries the request once, then fails it
with a clear error. Worker processes are real (spawned) and run a fake engine
so a restart takes a moment, not a model load."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, settled_working_blobs, wait_status

Q = "/queue/fal-ai/ccsr"


@pytest.fixture
def pool_server(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_FAKE_STEP_SECONDS", "0.1")
    app = create_app(Settings(data_dir=tmp_path), worker_factory="ccsr.testing:fake_engine_factory")
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        deadline = time.time() + 60
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        yield client, app


def _kill_worker_running(app, client, rid):
    deadline = time.time() + 30
    while True:
        st = client.get(f"{Q}/requests/{rid}/status", params={"logs": 1}).json()
        running = app.state.executor.running()
        if rid in running and any(l["message"].startswith("step 1/") for l in st["logs"] or []):
            os.kill(running[rid], signal.SIGKILL)
            return running[rid]
        assert time.time() < deadline, st
        time.sleep(0.02)


def test_crash_is_retried_once_then_succeeds(pool_server):
    client, app = pool_server
    rid = client.post(Q, json={"image_url": png_data_uri(), "steps": 30}).json()["request_id"]
    pid = _kill_worker_running(app, client, rid)
    assert client.get("/healthz").status_code == 200  # the API keeps answering meanwhile
    st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=60, logs=1)
    assert "error" not in st, st
    msgs = [l["message"] for l in st["logs"]]
    assert any("died (killed by signal 9)" in m for m in msgs)
    assert "request started (attempt 2)" in msgs
    assert app.state.executor.describe()[0]["pid"] != pid  # a new worker process
    assert client.get(f"{Q}/requests/{rid}").status_code == 200
    # The lost attempt's blobs are gone; the retry's result is a registered file.
    assert settled_working_blobs(app.state.blobs) == []


def test_second_crash_fails_with_clear_error(pool_server):
    client, app = pool_server
    rid = client.post(Q, json={"image_url": png_data_uri(), "steps": 30}).json()["request_id"]
    _kill_worker_running(app, client, rid)
    deadline = time.time() + 30
    while "request started (attempt 2)" not in [
        l["message"] for l in client.get(f"{Q}/requests/{rid}/status", params={"logs": 1}).json()["logs"] or []
    ]:
        assert time.time() < deadline
        time.sleep(0.02)
    _kill_worker_running(app, client, rid)
    st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=30)
    assert st["error_type"] == "internal_server_error"
    assert "died" in st["error"] and "tried 2 times" in st["error"]
    r = client.get(f"{Q}/requests/{rid}")
    assert r.status_code == 500 and "tried 2 times" in r.json()["detail"]
    # and the restarted worker serves the next request
    nxt = client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json()
    assert "error" not in wait_status(client, nxt["status_url"], "COMPLETED", timeout=60)
