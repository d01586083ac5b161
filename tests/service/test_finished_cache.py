"""Finished requests stay in the scheduler's in-memory cache without their
log lines and parameters (they are reloaded when asked for), so the cache
costs less per request; status and result still answer in full."""

from __future__ import annotations

import httpx

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


def test_a_finished_request_is_cached_without_logs_and_params(tmp_path):
    app = create_app(Settings(data_dir=tmp_path), executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = client.post(Q, json={"image_url": png_data_uri(), "steps": 6}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        view = app.state.scheduler.live.finished[sub["request_id"]]
        assert view.logs is None and view.params is None
        status = client.get(sub["status_url"], params={"logs": 1}).json()
        assert any("fake engine" in line["message"] for line in status["logs"])  # reloaded from the database
        assert client.get(sub["response_url"]).status_code == 200
