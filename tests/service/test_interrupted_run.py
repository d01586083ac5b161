"""A run an executor reports :class:`Interrupted` (the Ray executor does when
the Ray head is lost, tests/executors/test_ray_apps.py) goes back to the
queue and is not counted as an attempt; it runs again once a slot is free. The executor here is the in-process one with the fake engine,
whose first run is cut short by hand."""

from __future__ import annotations

import httpx

from ccsr.executors.base import Interrupted, Task
from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.testing import FakeEngine

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


class InterruptFirst(ThreadExecutor):
    """Ends the first task it is given with Interrupted (no slot held), then
    runs tasks as ThreadExecutor does."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.interrupted: list[str] = []

    def submit(self, task: Task) -> None:
        if not self.interrupted:
            self.interrupted.append(task.request_id)
            self._loop.call_later(0.2, self._emit, Interrupted(task.request_id, "the cluster was lost; back to the queue"))
            return
        super().submit(task)


def test_an_interrupted_run_is_queued_again_uncounted_and_runs_once(tmp_path):
    ex = InterruptFirst(FakeEngine(0.0))
    app = create_app(Settings(data_dir=tmp_path), executor=ex)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        rid = client.post(Q, json={"image_url": png_data_uri(12, 10), "steps": 6}).json()["request_id"]
        st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=15, logs=1)
        assert "error" not in st, st
        assert ex.interrupted == [rid]
        messages = [line["message"] for line in st["logs"]]
        assert messages.count("the cluster was lost; back to the queue") == 1, messages
        assert sum(m.startswith("done in") for m in messages) == 1
        assert not any("attempt 2" in m for m in messages), messages
        assert app.state.store.get(rid).attempts == 1
        assert client.get(f"{Q}/requests/{rid}").json()["image"]["width"] == 24
