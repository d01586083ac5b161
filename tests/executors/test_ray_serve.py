"""``ccsr serve --executor ray --ray-address ADDR`` serves the same API.

A real ``ccsr serve`` process joins the local Ray cluster (head + 2 worker
nodes) as a driver; its model actors run the fake engine on the worker nodes.
The official, unmodified clients talk to it: the Python fal-client (pinned
1.0.3) and the JS @fal-ai/client through the node scenarios of tests/js.
"""

from __future__ import annotations

import json
import time
import types

import httpx
import pytest

from serve_helpers import serve
from ccsr.testing.ray_cluster import TEST_ACTOR_OPTIONS

from test_official_clients import KEY, _js_ready, data_uri, run_js  # noqa: E402

APP = "fal-ai/ccsr"
STEP = 0.05  # tests/conftest.py RAY_FAKE_STEP_SECONDS


def steps_for(seconds: float) -> int:
    return max(6, int(3 * seconds / STEP))


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("ray-serve-cli")
    args = (
        "--executor", "ray",
        "--ray-address", ray_cluster.address,
        "--ray-actor-options", json.dumps(TEST_ACTOR_OPTIONS),
        "--allow-private-urls",
    )
    env = {"CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory", "CCSR_APPS": "fal-ai/ccsr"}
    with serve(data / "unused.safetensors", data, api_keys=[KEY], extra_env=env, extra_args=args,
               ready_timeout=120) as base:
        # Ready once one actor is up: wait for both (one per worker node).
        deadline = time.time() + 60
        while True:
            workers = httpx.get(base + "/readyz", headers={"Authorization": f"Key {KEY}"}).json()["workers"]  # details need a key
            if sum(w["ready"] for w in workers) == 2:
                break
            assert time.time() < deadline, workers
            time.sleep(0.2)
        yield types.SimpleNamespace(base=base, workers=workers, cluster=ray_cluster)


@pytest.fixture
def fal(ray_server, monkeypatch):
    import fal_client
    import fal_client.client as C

    monkeypatch.setattr(C, "RUN_URL_FORMAT", ray_server.base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", ray_server.base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", ray_server.base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", ray_server.base + "/cdn")
    return fal_client.SyncClient(key=KEY)


def test_actors_of_the_serve_process_sit_on_the_worker_nodes(ray_server):
    assert all(w["executor"] == "ray" for w in ray_server.workers)
    assert {w["node_id"] for w in ray_server.workers} == {n.node_id for n in ray_server.cluster.workers}


def test_python_subscribe_with_logs(fal, ray_server):
    import fal_client

    updates = []
    result = fal.subscribe(APP, {"image_url": data_uri(12, 10), "scale": 2, "steps": 12}, with_logs=True,
                           on_queue_update=updates.append)
    assert result["image"]["url"].startswith(ray_server.base + "/files/")
    assert (result["image"]["width"], result["image"]["height"]) == (24, 20)
    assert isinstance(updates[-1], fal_client.Completed)
    assert any(line["message"].startswith("step ") for line in updates[-1].logs)
    assert len(httpx.get(result["image"]["url"]).content) == result["image"]["file_size"]


def test_python_submit_status_result(fal):
    import fal_client

    handle = fal.submit(APP, {"image_url": data_uri(), "steps": 8})
    result = handle.get()
    assert result["image"]["content_type"] == "image/png"
    done = handle.status(with_logs=True)
    assert isinstance(done, fal_client.Completed) and done.metrics.get("inference_time", 0) > 0
    assert fal.result(APP, handle.request_id) == result


def test_python_cancel_queued_and_running(fal):
    import fal_client

    # Two actors: the first two run, the third waits in the server's queue.
    handles = [fal.submit(APP, {"image_url": data_uri(), "steps": steps_for(4)}) for _ in range(3)]
    deadline = time.time() + 20
    while not all(isinstance(h.status(), fal_client.InProgress) for h in handles[:2]):
        assert time.time() < deadline
        time.sleep(0.05)
    assert isinstance(handles[2].status(), fal_client.Queued)
    started = time.time()
    for h in reversed(handles):
        h.cancel()
    for h in handles:
        with pytest.raises(fal_client.client.FalClientHTTPError) as err:
            h.get()
        assert err.value.status_code >= 400
    assert time.time() - started < 2.5  # stopped at the next step, not after 4 s


def test_python_sync_run(fal):
    out = fal.run(APP, {"image_url": data_uri(8, 8), "scale": 1.5, "steps": 6})
    assert (out["image"]["width"], out["image"]["height"]) == (12, 12)


# --- JS @fal-ai/client -------------------------------------------------------------------


@pytest.fixture(scope="module")
def js_env():
    if not _js_ready():
        pytest.fail("The JS client tests need node and `npm ci` in tests/js (the CI setup script runs it).")
    import os

    return {**os.environ}


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_js_subscribe(js_env, ray_server, mode):
    out = run_js(js_env, ray_server, "subscribe", MODE=mode)
    assert out["data"]["image"]["width"] == 24 and "COMPLETED" in out["statuses"] and out["sawLogs"]


def test_js_queue_submit_status_result(js_env, ray_server):
    out = run_js(js_env, ray_server, "queue")
    assert out["status"] == "COMPLETED" and out["requestId"] == out["submittedId"]


def test_js_cancel(js_env, ray_server):
    out = run_js(js_env, ray_server, "cancel", LONG_STEPS=steps_for(3))
    assert out["runningFinal"]["status"] == "COMPLETED" and out["runningFinal"]["error"]
    assert out["queuedFinal"]["status"] == "COMPLETED" and out["queuedFinal"]["error"]
    assert out["runningStoppedWithin"] < 2500
