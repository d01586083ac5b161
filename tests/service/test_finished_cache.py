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


def test_logs_polled_after_the_end_are_not_kept_and_the_cache_is_bounded_by_bytes(tmp_path):
    """A status poll with logs after completion reads the lines from the database
    and keeps neither them nor the rendered body; the finished cache stays under
    finished_cache_bytes (oldest dropped first), each request still answering."""
    settings = Settings(data_dir=tmp_path, finished_cache_bytes=2**20)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.0)))
    live = app.state.scheduler.live
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = client.post(Q, json={"image_url": png_data_uri(), "steps": 40}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        for _ in range(3):
            status = client.get(sub["status_url"], params={"logs": 1}).json()
            assert len(status["logs"]) > 10
        view = live.finished[sub["request_id"]]
        assert view.logs is None and True not in view.status_cache
        before = live.finished_bytes
        live.cache_bytes = before + 3000  # room for about one more
        subs = [client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json() for _ in range(4)]
        for s in subs:
            wait_status(client, s["status_url"], "COMPLETED")
        assert live.finished_bytes <= live.cache_bytes
        assert len(live.finished) < 5 and sub["request_id"] not in live.finished  # the oldest went first
        assert client.get(sub["response_url"]).status_code == 200  # from the database
