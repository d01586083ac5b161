"""Queue protocol semantics over real HTTP, with an in-process fake engine.

These check the exact status shapes the official clients rely on, FIFO within
priority, true queue positions, cancel while queued and while running, the
start timeout, the sync run route and the SSE stream.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


@pytest.fixture
def fake_server(tmp_path, request):
    step = getattr(request, "param", 0.02)
    settings = Settings(data_dir=tmp_path, database_url=None)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(step)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield base, client, app


def _submit(client, steps=4, **kw):
    headers = kw.pop("headers", {})
    body = {"image_url": png_data_uri(), "steps": steps, "scale": 2, **kw}
    r = client.post(Q, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_submit_status_result_shapes(fake_server):
    base, client, _ = fake_server
    sub = _submit(client, steps=6)
    rid = sub["request_id"]
    for key in ("response_url", "status_url", "cancel_url"):
        assert sub[key].startswith(base + Q + "/requests/" + rid)
    assert isinstance(sub["queue_position"], int)
    done = wait_status(client, sub["status_url"], "COMPLETED", logs="1")
    assert done["request_id"] == rid and done["queue_position"] is None
    assert done["metrics"]["inference_time"] > 0
    msgs = [l["message"] for l in done["logs"]]
    assert "step 2/2" in msgs
    # the database holds the same lines in the same order (what a restarted server shows)
    _, _, app = fake_server
    assert [l.message for l in app.state.store.logs(rid)] == msgs
    log0 = done["logs"][0]
    assert set(log0) == {"message", "level", "source", "timestamp"} and log0["source"] == "USER"
    assert "+00:00" in log0["timestamp"]
    assert "error" not in done
    # logs=false still carries the key, as null
    for flag in ("0", "false"):
        body = client.get(sub["status_url"], params={"logs": flag}).json()
        assert "logs" in body and body["logs"] is None
    assert client.get(sub["status_url"], params={"logs": "true"}).json()["logs"]
    r = client.get(sub["response_url"])
    assert r.status_code == 200 and r.headers["x-fal-request-id"] == rid
    out = r.json()
    img = out["image"]
    assert img["url"].startswith(base + "/files/") and img["content_type"] == "image/png"
    assert (img["width"], img["height"]) == (32, 32) and isinstance(out["seed"], int)
    f = client.get(img["url"])
    assert f.status_code == 200 and f.content[:8] == b"\x89PNG\r\n\x1a\n" and len(f.content) == img["file_size"]


def test_public_url_setting_makes_urls(tmp_path):
    settings = Settings(data_dir=tmp_path, public_url="https://upscale.example.com/")
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.0)))
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        sub = _submit(client)
        assert sub["status_url"].startswith("https://upscale.example.com/queue/fal-ai/ccsr/requests/")
        wait_status(client, sub["status_url"].replace("https://upscale.example.com", base), "COMPLETED")
        out = client.get(f"{Q}/requests/{sub['request_id']}").json()
        assert out["image"]["url"].startswith("https://upscale.example.com/files/")


def test_invalid_input_is_422_with_detail_list(fake_server):
    _, client, _ = fake_server
    cases = [
        ({}, "image_url"),
        ({"image_url": png_data_uri(), "tile_diffusion": "bogus"}, "tile_diffusion"),
        ({"image_url": png_data_uri(), "steps": "many"}, "steps"),
        ({"image_url": "ftp://x/y.png"}, "image_url"),
        ({"image_url": png_data_uri(), "t_min": 0.7, "t_max": 0.6}, "t_min"),
    ]
    for body, field in cases:
        r = client.post(Q, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/json")
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail[0]["loc"][-1] == field, detail
    r = client.post(Q, content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    r = client.post(Q, json={"image_url": png_data_uri()}, headers={"X-Fal-Queue-Priority": "urgent"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "X-Fal-Queue-Priority"]


def test_bad_image_fails_the_request_with_422_result(fake_server):
    _, client, _ = fake_server
    # A bad data: URI is refused at submit (test_body_limit.py); an uploaded file is only read when it runs.
    up = client.post("/cdn/files/upload", content=b"AAAA", headers={"content-type": "image/png"})
    sub = client.post(Q, json={"image_url": up.json()["access_url"], "steps": 4}).json()
    done = wait_status(client, sub["status_url"], "COMPLETED")
    assert done["error"] and done["error_type"]
    r = client.get(sub["response_url"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_url"]


@pytest.mark.parametrize("fake_server", [0.15], indirect=True)
def test_fifo_within_priority_and_positions(fake_server):
    _, client, _ = fake_server
    first = _submit(client, steps=8)  # occupies the only slot
    wait_status(client, first["status_url"], "IN_PROGRESS")
    low = _submit(client, headers={"X-Fal-Queue-Priority": "low"})
    n1 = _submit(client)
    n2 = _submit(client, headers={"X-Fal-Queue-Priority": "normal"})
    pos = {k: client.get(v["status_url"]).json() for k, v in (("low", low), ("n1", n1), ("n2", n2))}
    assert all(p["status"] == "IN_QUEUE" for p in pos.values())
    assert [pos[k]["queue_position"] for k in ("n1", "n2", "low")] == [0, 1, 2]
    r = client.get(first["status_url"])
    assert r.status_code == 202 and r.json()["status"] == "IN_PROGRESS" and "logs" in r.json()
    started = {}
    deadline = time.time() + 30
    while len(started) < 3 and time.time() < deadline:
        for k, v in (("low", low), ("n1", n1), ("n2", n2)):
            if k not in started and client.get(v["status_url"]).json()["status"] != "IN_QUEUE":
                started[k] = time.time()
        time.sleep(0.01)
    assert sorted(started, key=started.get) == ["n1", "n2", "low"]


@pytest.mark.parametrize("fake_server", [0.2], indirect=True)
def test_cancel_queued_and_running(fake_server):
    _, client, _ = fake_server
    running = _submit(client, steps=30)
    queued = _submit(client)
    wait_status(client, running["status_url"], "IN_PROGRESS")
    r = client.put(queued["cancel_url"])
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    st = client.get(queued["status_url"]).json()
    assert st["status"] == "COMPLETED" and st["error_type"] == "request_cancelled"
    t0 = time.time()
    assert client.put(running["cancel_url"]).status_code == 202
    st = wait_status(client, running["status_url"], "COMPLETED", timeout=5, logs=1)
    assert time.time() - t0 < 2  # stopped at the next step, not after all 10
    assert st["error_type"] == "request_cancelled"
    assert not any(l["message"] == "step 10/10" for l in st["logs"])
    r = client.get(running["response_url"])
    assert r.status_code == 400 and r.json()["error_type"] == "request_cancelled"
    assert client.put(running["cancel_url"]).status_code == 400
    assert client.put(running["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}
    # the cancelled queued request never started
    logs = client.get(queued["status_url"], params={"logs": 1}).json()["logs"]
    assert not any(l["message"].startswith("request started") for l in logs)


def test_unknown_ids_are_404(fake_server):
    _, client, _ = fake_server
    for path in ("/status", "/status/stream", "", "/cancel"):
        method = "PUT" if path == "/cancel" else "GET"
        r = client.request(method, f"{Q}/requests/nope{path}")
        assert r.status_code == 404, path


@pytest.mark.parametrize("fake_server", [0.3], indirect=True)
def test_start_timeout(fake_server):
    _, client, _ = fake_server
    blocker = _submit(client, steps=12)
    late = _submit(client, headers={"X-Fal-Request-Timeout": "0.5"})
    done = wait_status(client, late["status_url"], "COMPLETED", timeout=10)
    assert done["error_type"] == "request_timeout"
    r = client.get(late["response_url"])
    assert r.status_code == 504 and r.headers["x-fal-request-timeout-type"] == "user"
    client.put(blocker["cancel_url"])


def test_sync_run(fake_server):
    base, client, _ = fake_server
    r = client.post("/fal-ai/ccsr", json={"image_url": png_data_uri(8, 8), "steps": 4, "scale": 4, "seed": 7})
    assert r.status_code == 200, r.text
    assert r.headers["x-fal-request-id"]
    out = r.json()
    assert out["seed"] == 7 and out["image"]["width"] == 32 and out["image"]["url"].startswith(base)
    r = client.post("/fal-ai/ccsr", json={"image_url": 5})
    assert r.status_code == 422


def test_sse_stream(fake_server):
    _, client, _ = fake_server
    sub = _submit(client, steps=10)
    events = []
    with client.stream("GET", sub["status_url"] + "/stream", params={"logs": "1"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "COMPLETED" and events[-1]["logs"]
    assert {e["status"] for e in events} <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}


def test_openapi_and_docs(fake_server):
    _, client, _ = fake_server
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["CCSRInput"]["properties"]
    assert schema["steps"]["default"] == 50 and schema["tile_diffusion"]["enum"] == ["none", "mix", "gaussian"]
    assert schema["color_fix_type"]["default"] == "adain" and schema["tile_vae_decoder_size"]["default"] == 226
    assert client.get("/docs").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_stream_run_ends_with_the_output(fake_server):
    base, client, _ = fake_server
    events = []
    with client.stream("POST", "/fal-ai/ccsr/stream", json={"image_url": png_data_uri(), "steps": 6},
                       headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-fal-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert any(e.get("status") == "IN_PROGRESS" for e in events[:-1])
    assert events[-1]["image"]["url"].startswith(base + "/files/")


class _BrokenEngine(FakeEngine):
    def __call__(self, image, params=None, **kw):  # noqa: ANN001
        raise RuntimeError("engine exploded")


def test_a_failed_run_logs_its_error_once(tmp_path):
    """The scheduler logged the engine's error, then _finish logged it again."""
    settings = Settings(data_dir=tmp_path, database_url=None)
    app = create_app(settings, executor=ThreadExecutor(_BrokenEngine()))
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = _submit(client)
        done = wait_status(client, sub["status_url"], "COMPLETED", logs="1")
        assert "engine exploded" in done["error"] and done["error_type"] == "internal_server_error"
        errors = [l["message"] for l in done["logs"] if l["level"] == "ERROR"]
        assert len(errors) == 1 and "engine exploded" in errors[0], errors
        assert client.get(sub["response_url"]).status_code == 500


def test_a_database_error_while_claiming_keeps_the_request_queued(fake_server):
    """A failing claim (database hiccup) must not drop the request from the queue."""
    base, client, app = fake_server
    store = app.state.store
    real_claim = store.claim_next
    failures = []

    def flaky_claim(*args, **kwargs):
        if not failures:
            failures.append(kwargs.get("app_id"))
            raise RuntimeError("database is locked")
        return real_claim(*args, **kwargs)

    store.claim_next = flaky_claim
    try:
        sub = _submit(client)
        done = wait_status(client, sub["status_url"], "COMPLETED", timeout=30)
        assert failures == ["fal-ai/ccsr"]
        assert "error" not in done or not done["error"]
        assert client.get(sub["response_url"]).status_code == 200
    finally:
        store.claim_next = real_claim


def test_a_recovered_request_keeps_its_earlier_log_lines(fake_server):
    """After a restart a requeued request's view starts without logs in memory;
    its first new line must not hide the earlier attempts' lines (in the DB)."""
    base, client, app = fake_server
    sub = _submit(client)
    wait_status(client, sub["status_url"], "COMPLETED", timeout=30)
    scheduler = app.state.scheduler
    scheduler.logs.flush_now()
    earlier = [r.message for r in app.state.store.logs(sub["request_id"])]
    assert earlier
    view = scheduler.cached(sub["request_id"])
    view.logs = None  # as after a restart: not loaded from the database yet
    scheduler.logs.add(view, "INFO", "request started (attempt 2)")
    assert [r.message for r in view.logs] == earlier + ["request started (attempt 2)"]


def test_start_deadlines_are_in_the_databases_time(fake_server):
    """Issue 24, point 3: a start deadline is written on the database's clock
    (every server compares it so), not on this server's, here 30 s ahead."""
    from ccsr.jobs.dbclock import db_now

    _, client, app = fake_server
    clock = app.state.scheduler.db_clock
    real = time.time
    clock.clock = lambda: real() + 30
    clock.measure()
    sub = _submit(client, headers={"X-Fal-Request-Timeout": "5"})
    rec = app.state.store.get(sub["request_id"])
    assert abs(rec.start_deadline - (db_now(app.state.store.engine) + 5)) < 2
    assert "error_type" not in wait_status(client, sub["status_url"], "COMPLETED")
