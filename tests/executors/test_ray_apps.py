"""Several apps on one Ray cluster: each app's actors are its share of the
cluster, set per app (count, GPUs, custom resources), and a request for an
app whose actors cannot be placed fails its start timeout saying why. Last,
the Ray head is lost and comes back while the server runs.

A real local Ray cluster (a head and two worker nodes on loopback, each with
one ``ccsr_worker`` standing in for a GPU, as the conftest's ``ray_cluster``)
and the real service over HTTP with ``executor="ray"``; the actors of both
apps run the fake engine. Tests run in file order on one module-wide cluster;
the last two share one server.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import httpx
import pytest

from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.testing.ray_cluster import TEST_ACTOR_OPTIONS, WORKER_RESOURCE

from svc_helpers import png_data_uri, serve_app, wait_status  # noqa: E402

FAKE = "ccsr.testing:fake_engine_factory"
BOTH = {"fal-ai/ccsr": FAKE, "fal-ai/esrgan": FAKE}
STEP = 0.05  # tests/conftest.py RAY_FAKE_STEP_SECONDS


def wait_for(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def settings_for(cluster, tmp_path, **extra) -> Settings:
    """Both built-in apps (no ``apps`` setting: the default) on ``cluster``."""
    return Settings(data_dir=tmp_path, executor="ray", ray_address=cluster.address,
                    ray_actor_options=TEST_ACTOR_OPTIONS, **extra)


def actors_by_app(app) -> dict[str, list[dict]]:
    return {app_id: ex.describe() for app_id, ex in app.state.executors.items()}


def all_ready(client: httpx.Client) -> dict:
    r = client.get("/readyz")
    return r.status_code == 200 and r.json()


def run_one(client: httpx.Client, app_id: str, **body) -> dict:
    r = client.post(f"/queue/{app_id}", json={"image_url": png_data_uri(12, 10), **body})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    st = wait_status(client, f"/queue/{app_id}/requests/{rid}/status", "COMPLETED", timeout=30)
    assert "error" not in st, st
    return client.get(f"/queue/{app_id}/requests/{rid}").json()


def test_per_app_counts_and_fractional_resources(ray_cluster, tmp_path):
    """Per-app settings: Real-ESRGAN's actor takes a quarter of a slot and is
    fixed at one; CCSR's take three quarters each and share what is left (two:
    one beside the ESRGAN actor on its node). Three actors on two slots."""
    settings = settings_for(ray_cluster, tmp_path, ray_resources={WORKER_RESOURCE: 0.75},
                            esrgan_ray_resources={WORKER_RESOURCE: 0.25}, esrgan_ray_actors=1)
    app = create_app(settings, worker_factory=BOTH)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        wait_for(lambda: all_ready(client) and sum(w["ready"] for w in all_ready(client)["workers"]) == 3, 60,
                 "three ready actors")
        actors = actors_by_app(app)
        assert {k: len(v) for k, v in actors.items()} == {"fal-ai/ccsr": 2, "fal-ai/esrgan": 1}
        per_node = Counter(w["node_id"] for ws in actors.values() for w in ws)
        assert sorted(per_node.values()) == [1, 2]  # the ESRGAN actor shares a node with a CCSR one
        assert run_one(client, "fal-ai/esrgan", scale=2)["image"]["height"] == 20


def test_an_app_with_no_placeable_actor_fails_its_start_timeout_saying_why(ray_cluster, tmp_path):
    """Real-ESRGAN's actors ask for a resource no node has: CCSR serves, an
    ESRGAN request with a start timeout ends with an error naming the app and
    what its actor waits for (not a silent wait for ever)."""
    settings = settings_for(ray_cluster, tmp_path, esrgan_ray_resources={"esrgan_gpu": 1})
    app = create_app(settings, worker_factory=BOTH)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        wait_for(lambda: app.state.executors["fal-ai/ccsr"].ready, 60, "a CCSR actor")
        body = client.get("/readyz").json()
        assert body["status"] == "loading"
        waiting = [w for w in body["workers"] if w["app"] == "fal-ai/esrgan"]
        assert len(waiting) == 1 and "esrgan_gpu:1" in waiting[0]["waiting_for"], waiting
        r = client.post("/queue/fal-ai/esrgan", json={"image_url": png_data_uri(12, 10)},
                        headers={"X-Fal-Request-Timeout": "1"})
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        st = wait_status(client, f"/queue/fal-ai/esrgan/requests/{rid}/status", "COMPLETED", timeout=10)
        err = st["error"]
        assert "start timeout" in err and "fal-ai/esrgan" in err and "esrgan_gpu:1" in err, err
        assert run_one(client, "fal-ai/ccsr", steps=6, scale=2)["image"]["width"] == 24


@pytest.fixture(scope="module")
def default_server(ray_cluster, tmp_path_factory):
    """Both apps with the default settings, for the last two tests (the
    tests before them make servers of their own on the same cluster)."""
    app = create_app(settings_for(ray_cluster, tmp_path_factory.mktemp("ray-apps")), worker_factory=BOTH)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client, app


def test_both_apps_by_default_share_a_two_slot_cluster_and_serve(default_server, ray_cluster):
    """The default (every app, no counts): the two ``ccsr_worker`` slots are
    split, one actor per app, so /readyz turns 200 and both apps answer.
    (Sized to the whole cluster each, the apps would ask for four actors and
    the two left over would wait for ever: /readyz 503, requests queued.)"""
    client, app = default_server
    wait_for(lambda: all_ready(client), 60, "/readyz 200 with both apps")
    actors = actors_by_app(app)
    assert {k: len(v) for k, v in actors.items()} == {"fal-ai/ccsr": 1, "fal-ai/esrgan": 1}
    assert {w["node_id"] for ws in actors.values() for w in ws} == {n.node_id for n in ray_cluster.workers}
    assert run_one(client, "fal-ai/esrgan", scale=2)["image"]["width"] == 24
    assert run_one(client, "fal-ai/ccsr", scale=2, steps=6)["image"]["width"] == 24


def logs_of(client: httpx.Client, app_id: str, rid: str) -> list[str]:
    body = client.get(f"/queue/{app_id}/requests/{rid}/status", params={"logs": 1}).json()
    return [line["message"] for line in body.get("logs") or []]


def test_losing_the_ray_head_requeues_running_work_and_the_server_reconnects(default_server, ray_cluster):
    """What is real: the head's processes (its GCS and raylet) are killed
    with SIGKILL while a CCSR request runs on a worker node; then a new head
    starts on the same GCS port with two new worker nodes (the old nodes'
    raylets do not outlive their head), as a restarted ``ray start --head
    --port`` would. The server is the real app over HTTP; its Ray driver is a
    real child process, killed on the loss and started again when the head
    answers. Last, that driver process is killed with SIGKILL (as Ray does to
    a driver whose head stays away): the server starts another. Nothing is
    simulated; the nodes are processes on one machine."""
    client, app = default_server
    q = "fal-ai/ccsr"
    wait_for(lambda: all_ready(client), 60, "/readyz 200 with both apps")
    r = client.post(f"/queue/{q}", json={"image_url": png_data_uri(12, 10), "steps": int(3 * 3.0 / STEP)})
    rid = r.json()["request_id"]
    wait_for(lambda: any(m.startswith("step 1/") for m in logs_of(client, q, rid)), 30, "the run to start")

    ray_cluster.kill_head()
    lost_at = time.time()
    wait_for(lambda: client.get("/readyz").status_code == 503, 5, "/readyz 503")
    assert time.time() - lost_at < 3  # "at once": two missed probes of the GCS port
    body = client.get("/readyz").json()
    assert {w["state"] for w in body["workers"]} == {"disconnected"}, body
    assert all("reconnecting" in w["error"] for w in body["workers"])
    # The running request goes back to the queue; the lost run is not counted.
    st = wait_status(client, f"/queue/{q}/requests/{rid}/status", "IN_QUEUE", timeout=5)
    assert "error" not in st
    assert app.state.store.get(rid).attempts == 0

    ray_cluster.restart_head()
    wait_for(lambda: all_ready(client), 60, "/readyz 200 after the head came back")
    assert {w["node_id"] for ws in actors_by_app(app).values() for w in ws} == {
        n.node_id for n in ray_cluster.workers}  # new actors, on the new nodes
    st = wait_status(client, f"/queue/{q}/requests/{rid}/status", "COMPLETED", timeout=30, logs=1)
    assert "error" not in st, st
    assert app.state.store.get(rid).attempts == 1
    messages = [line["message"] for line in st["logs"]]
    assert any("Ray cluster was lost" in m and "back to the queue" in m for m in messages), messages
    assert not any("attempt 2" in m for m in messages)

    link = app.state.executor._link
    driver = link.driver_pid
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: client.get("/readyz").status_code == 503, 5, "/readyz 503 without a driver")
    wait_for(lambda: all_ready(client), 60, "/readyz 200 with a new driver")
    assert link.driver_pid not in (None, driver)
    assert run_one(client, "fal-ai/esrgan", scale=2)["image"]["width"] == 24
