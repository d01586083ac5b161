"""The app seam: a test-only app (tests/apps/mirror_app.py, its own id, schema
and trivial engine) runs through the whole queue protocol beside fal-ai/ccsr,
on the real app over real HTTP, with our helpers and the official Python
fal-client. Nothing in ccsr.service or ccsr.jobs names either app."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ccsr.apps.registry import default_registry
from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.storage import keys

from mirror_app import MAX_SIDE, MirrorApp, MirrorEngine
from svc_helpers import png_data_uri, serve_app, settled_working_blobs, wait_status

MIRROR = "ccsr-tests/mirror"
Q = f"/queue/{MIRROR}"
SRC = Path(__file__).resolve().parents[2] / "src" / "ccsr"


def _two_apps(tmp_path, ccsr_step=0.02, **settings):
    registry = default_registry().with_app(MirrorApp())
    executors = {"fal-ai/ccsr": ThreadExecutor(FakeEngine(ccsr_step)),
                 MIRROR: ThreadExecutor(MirrorEngine(), app=MirrorApp())}
    return create_app(Settings(data_dir=tmp_path, **settings), registry=registry, executors=executors)


@pytest.fixture
def server(tmp_path):
    app = _two_apps(tmp_path, ccsr_step=0.1)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield base, client, app


def _pattern(w=6, h=4) -> Image.Image:
    """An image whose left and right halves differ, so mirroring shows."""
    im = Image.new("RGB", (w, h), (0, 0, 255))
    for y in range(h):
        im.putpixel((0, y), (255, 0, 0))
    return im


def _uri(im: Image.Image) -> str:
    import base64

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_test_app_runs_the_queue_protocol_beside_ccsr(server):
    base, client, _ = server
    ccsr = client.post("/queue/fal-ai/ccsr", json={"image_url": png_data_uri(), "steps": 300}).json()
    sub = client.post(Q, json={"image_url": _uri(_pattern()), "pad": 2, "steps": 3})
    assert sub.status_code == 200, sub.text
    sub = sub.json()
    assert sub["status_url"] == f"{base}{Q}/requests/{sub['request_id']}/status"
    done = wait_status(client, sub["status_url"], "COMPLETED", logs="1")
    # its own executor: the long ccsr request does not hold it up
    assert client.get(ccsr["status_url"]).json()["status"] != "COMPLETED"
    msgs = [l["message"] for l in done["logs"]]
    assert "mirroring 6x4 about the horizontal axis" in msgs and "step 3/3" in msgs
    assert any(m.startswith("done in") and "output 10x8" in m for m in msgs)
    out = client.get(sub["response_url"]).json()
    assert set(out) == {"image", "axis"} and out["axis"] == "horizontal"
    img = out["image"]
    assert (img["width"], img["height"]) == (10, 8) and img["url"].startswith(base + "/files/")
    got = Image.open(io.BytesIO(client.get(img["url"]).content)).convert("RGB")
    assert got.getpixel((2 + 5, 2)) == (255, 0, 0) and got.getpixel((2, 2)) == (0, 0, 255)  # mirrored
    assert got.getpixel((0, 0)) == (0, 0, 0)  # the pad
    client.put(ccsr["cancel_url"])
    ccsr_done = wait_status(client, ccsr["status_url"], "COMPLETED")
    assert ccsr_done["error_type"] == "request_cancelled"
    # Inputs and results went through the blob store by key; no working blob is
    # left there: files/ holds only registered files (the results published in
    # place), not the cancelled run's unpublished result.
    blobs = server[2].state.blobs
    assert settled_working_blobs(blobs) == []


def test_the_test_app_streams_status_and_runs_sync(server):
    base, client, _ = server
    sub = client.post(Q, json={"image_url": _uri(_pattern()), "steps": 5, "step_seconds": 0.05}).json()
    events = []
    with client.stream("GET", sub["status_url"] + "/stream", params={"logs": "1"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "COMPLETED" and events[-1]["logs"]
    assert {e["status"] for e in events} <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    r = client.post(f"/{MIRROR}", json={"image_url": _uri(_pattern()), "axis": "vertical"})
    assert r.status_code == 200 and r.headers["x-fal-request-id"]
    assert r.json()["axis"] == "vertical" and r.json()["image"]["width"] == 6
    # An app picks its own output format: the stored file follows it.
    img = client.post(f"/{MIRROR}", json={"image_url": _uri(_pattern()), "output_format": "jpeg"}).json()["image"]
    assert img["content_type"] == "image/jpeg" and img["file_name"].endswith(".jpg")
    f = client.get(img["url"])
    assert f.content[:3] == b"\xff\xd8\xff" and f.headers["content-type"] == "image/jpeg"
    with client.stream("POST", f"/{MIRROR}/stream", json={"image_url": _uri(_pattern()), "steps": 4}) as r:
        streamed = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert streamed[-1]["axis"] == "horizontal" and streamed[-1]["image"]["url"].startswith(base)


def test_the_test_app_cancels_queued_and_running(server):
    _, client, _ = server
    body = {"image_url": _uri(_pattern()), "steps": 40, "step_seconds": 0.2}
    running = client.post(Q, json=body).json()
    queued = client.post(Q, json=body).json()
    wait_status(client, running["status_url"], "IN_PROGRESS")
    assert client.get(queued["status_url"]).json()["queue_position"] == 0
    # The running task's input is a blob (PNG) under a key; the worker read it there.
    blobs = server[2].state.blobs
    deadline = time.time() + 5
    while not (run_inputs := list(blobs.keys(keys.run_inputs(running["request_id"])))) and time.time() < deadline:
        time.sleep(0.02)
    assert len(run_inputs) == 1, run_inputs
    info = blobs.stat(run_inputs[0])
    assert info is not None and info.content_type == "image/png"
    assert client.put(queued["cancel_url"]).json() == {"status": "CANCELLATION_REQUESTED"}
    assert client.get(queued["status_url"]).json()["error_type"] == "request_cancelled"
    t0 = time.time()
    assert client.put(running["cancel_url"]).status_code == 202
    done = wait_status(client, running["status_url"], "COMPLETED", timeout=5)
    assert done["error_type"] == "request_cancelled" and time.time() - t0 < 2
    r = client.get(running["response_url"])
    assert r.status_code == 400 and r.json()["error_type"] == "request_cancelled"


def test_the_test_app_checks_at_both_boundaries(server):
    base, client, app = server
    # At submit: its own cross-field rule and its own enum, FastAPI's 422 naming the field.
    for body, field in (({"image_url": _uri(_pattern()), "pad_color": "red"}, "pad_color"),
                        ({"image_url": _uri(_pattern()), "axis": "diagonal"}, "axis")):
        r = client.post(Q, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", field]
    # A data URI's size is read from its header at submit: its own size limit, a 422 at once.
    r = client.post(Q, json={"image_url": png_data_uri(MAX_SIDE + 1, 4)})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_url"], r.text
    # A URL is fetched later: the same limit once the image is known, as the result (422 naming image_url).
    stored = app.state.files.save(base64.b64decode(png_data_uri(MAX_SIDE + 1, 4).split(",", 1)[1]), "image/png", "big.png")
    sub = client.post(Q, json={"image_url": base + stored.url_path}).json()
    done = wait_status(client, sub["status_url"], "COMPLETED")
    assert done["error_type"] == "validation_error"
    r = client.get(sub["response_url"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_url"]
    assert "at most 256 px" in r.json()["detail"][0]["msg"]


def test_a_request_belongs_to_its_app(server):
    _, client, _ = server
    sub = client.post(Q, json={"image_url": _uri(_pattern())}).json()
    wait_status(client, sub["status_url"], "COMPLETED")
    rid = sub["request_id"]
    for path in ("/status", ""):
        assert client.get(f"/queue/fal-ai/ccsr/requests/{rid}{path}").status_code == 404
    assert client.put(f"/queue/fal-ai/ccsr/requests/{rid}/cancel").status_code == 404


def test_app_list_and_openapi_come_from_the_registry(server):
    _, client, _ = server
    apps = client.get("/api/apps").json()["apps"]
    assert [a["id"] for a in apps] == ["fal-ai/ccsr", "fal-ai/esrgan", MIRROR]
    mirror = apps[-1]
    assert mirror["queue_url"] == Q and mirror["run_url"] == f"/{MIRROR}" and mirror["input_schema"] == "MirrorInput"
    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["MirrorInput"]["properties"]
    assert props["axis"]["enum"] == ["horizontal", "vertical"] and "image_url" in props
    assert "CCSRInput" in spec["components"]["schemas"]
    for path in (Q, f"/{MIRROR}", f"{Q}/requests/{{request_id}}/status", "/queue/fal-ai/ccsr"):
        assert path in spec["paths"], path
    result_schema = spec["paths"][f"{Q}/requests/{{request_id}}"]["get"]["responses"]["200"]["content"]
    assert result_schema["application/json"]["schema"]["$ref"].endswith("/MirrorOutput")


def test_the_official_python_client_runs_the_test_app(server, monkeypatch):
    import fal_client
    import fal_client.client as C

    base, _, _ = server
    monkeypatch.setattr(C, "RUN_URL_FORMAT", base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", base + "/cdn")
    fal = fal_client.SyncClient(key="unused")  # no API keys configured: loopback is open
    updates = []
    out = fal.subscribe(MIRROR, {"image_url": _uri(_pattern()), "pad": 1, "steps": 4}, with_logs=True,
                        on_queue_update=updates.append)
    assert out["axis"] == "horizontal" and out["image"]["width"] == 8
    assert isinstance(updates[-1], fal_client.Completed)
    assert any("mirroring" in log["message"] for log in updates[-1].logs)
    handle = fal.submit(MIRROR, {"image_url": _uri(_pattern()), "steps": 50, "step_seconds": 0.1})
    handle.cancel()  # at once: it may still be preparing its input
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get()
    assert err.value.status_code == 400
    assert fal.run(MIRROR, {"image_url": _uri(_pattern()), "axis": "vertical"})["axis"] == "vertical"


def _node(base: str, scenario: str, **env) -> dict:
    import base64
    import shutil
    import subprocess

    js_dir = Path(__file__).resolve().parents[1] / "js"
    node = shutil.which("node")
    if node is None or not (js_dir / "node_modules" / "@fal-ai" / "client").exists():
        pytest.fail("the JS client tests need node and `npm ci` in tests/js (scripts/test.sh runs it)")
    buf = io.BytesIO()
    _pattern().save(buf, format="PNG")
    full = {**os.environ, "CCSR_BASE": base, "CCSR_KEY": "unused", "CCSR_APP": MIRROR,
            "PNG_B64": base64.b64encode(buf.getvalue()).decode(), **{k: str(v) for k, v in env.items()}}
    proc = subprocess.run([node, str(js_dir / "scenarios.mjs"), scenario], env=full, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"node {scenario} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_official_js_client_runs_the_test_app(server):
    base, _, _ = server
    out = _node(base, "subscribe", MODE="streaming", CCSR_INPUT=json.dumps({"pad": 1}))
    assert out["data"]["axis"] == "horizontal" and out["data"]["image"]["width"] == 8
    assert "COMPLETED" in out["statuses"] and out["sawLogs"]
    out = _node(base, "cancel", LONG_STEPS=40, CCSR_INPUT=json.dumps({"step_seconds": 0.1}))
    assert out["queuedFinal"]["status"] == "COMPLETED" and out["queuedFinal"]["error"]
    assert out["runningFinal"]["status"] == "COMPLETED" and out["runningStoppedWithin"] < 2500
    assert out["resultErrorStatus"] >= 400


def test_the_test_app_runs_in_its_own_worker_process(tmp_path):
    """No executor given for the mirror app: it gets the default, a spawned
    worker process that rebuilds the app from its ref and builds its engine."""
    registry = default_registry().with_app(MirrorApp())
    app = create_app(Settings(data_dir=tmp_path), registry=registry,
                     executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.0))})
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        deadline = time.time() + 60
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline, client.get("/readyz").json()
            time.sleep(0.1)
        workers = [w for w in client.get("/readyz").json()["workers"] if w["app"] == MIRROR]
        assert len(workers) == 1 and workers[0]["pid"] not in (None, os.getpid())
        sub = client.post(Q, json={"image_url": _uri(_pattern()), "pad": 1}).json()
        done = wait_status(client, sub["status_url"], "COMPLETED", timeout=30)
        assert "error" not in done or not done["error"]
        assert client.get(sub["response_url"]).json()["image"]["width"] == 8


def test_no_app_is_named_in_the_service_or_the_jobs():
    """Adding an app touches no file of service/ or jobs/: no code there names
    one (an app id as a string literal, an app module, its models)."""
    pattern = re.compile(r"[\"']fal-ai/ccsr[\"']|CCSRApp|ccsr\.apps\.ccsr|ccsr\.params|UpscaleParams|CCSRInput|CCSROutput")
    offenders = []
    for folder in ("service", "jobs"):
        for path in sorted((SRC / folder).rglob("*.py")):
            if path.name in ("testing.py", "models.py", "store.py"):
                continue  # test engines; the column default of rows written before app ids were routed
            offenders += [f"{path.name}: {m}" for m in pattern.findall(path.read_text())]
    assert not offenders, offenders
