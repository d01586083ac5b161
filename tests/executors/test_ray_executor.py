"""The Ray executor on a real local multi-node Ray cluster (head + 2 worker
nodes on loopback, each offering one ``ccsr_worker`` in place of a GPU).

The service is the real app over HTTP with ``executor="ray"``; the actors run
the fake engine (queue and failure semantics are under test, not pictures),
except the last tests, which load the tiny model in an actor and a model that
fails to load. Tests run in file order on one module-wide cluster and change
it as they go (a node is removed, others join).
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from ccsr.testing.ray_cluster import TEST_ACTOR_OPTIONS
from ccsr.service.app import create_app
from ccsr.settings import Settings

from s3_server import s3_server  # noqa: F401 - the session fixture
from svc_helpers import png_data_uri, serve_app, wait_status  # noqa: E402

Q = "/queue/fal-ai/ccsr"
FAKE = "ccsr.testing:fake_engine_factory"
STEP = 0.05  # tests/conftest.py RAY_FAKE_STEP_SECONDS


def steps_for(seconds: float) -> int:
    """``steps`` making the fake engine run about ``seconds`` (a third of the steps run)."""
    return max(6, int(3 * seconds / STEP))


def wait_for(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def logs_of(client: httpx.Client, rid: str) -> list[str]:
    body = client.get(f"{Q}/requests/{rid}/status", params={"logs": 1}).json()
    return [line["message"] for line in body.get("logs") or []]


def ready_actors(app) -> list[dict]:
    return [w for w in app.state.executor.describe() if w["ready"]]


def worker_node_ids(cluster) -> set[str]:
    return {n.node_id for n in cluster.workers}


@pytest.fixture(scope="module")
def server(ray_cluster, tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ray-serve"),
        executor="ray",
        ray_address=ray_cluster.address,
        ray_actor_options=TEST_ACTOR_OPTIONS,
        apps="fal-ai/ccsr",  # one actor per node: the cluster's two ccsr_worker slots are this app's
    )
    app = create_app(settings, worker_factory=FAKE)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200 and len(ready_actors(app)) == 2, 90, "two actors")
        yield client, app, ray_cluster


def submit(client: httpx.Client, **body) -> str:
    r = client.post(Q, json={"image_url": png_data_uri(12, 10), **body})
    assert r.status_code == 200, r.text
    return r.json()["request_id"]


def wait_running(app, client, rid: str, min_step: int = 1) -> None:
    """Until ``rid`` runs on an actor and has logged step ``min_step``."""
    wait_for(
        lambda: rid in app.state.executor.running()
        and any(m.startswith(f"step {min_step}/") for m in logs_of(client, rid)),
        30, f"{rid} at step {min_step}",
    )


def test_two_actors_land_on_two_nodes_and_run_at_once(server):
    client, app, cluster = server
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and len(body["workers"]) == 2
    assert {w["node_id"] for w in body["workers"]} == worker_node_ids(cluster)  # one per worker node, none on the head
    ex = app.state.executor
    rids = [submit(client, steps=steps_for(1.0), scale=2) for _ in range(4)]
    # Both actors busy with one job each; the rest waits in our queue, not in Ray.
    wait_for(lambda: len(ex.running()) == 2, 30, "two jobs running")
    running = dict(ex.running())
    assert ex.idle_slots() == 0
    assert {ex.node_running(r) for r in running} == worker_node_ids(cluster)
    queued = [r for r in rids if r not in running]
    assert all(client.get(f"{Q}/requests/{r}/status").json()["status"] == "IN_QUEUE" for r in queued)
    for rid in rids:
        st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=60)
        assert "error" not in st, st
        image = client.get(f"{Q}/requests/{rid}").json()["image"]
        assert (image["width"], image["height"]) == (24, 20)
        from PIL import Image
        import io

        png = client.get(image["url"]).content  # the bytes the actor sent, stored by this server
        assert len(png) == image["file_size"] and Image.open(io.BytesIO(png)).size == (24, 20)


def test_cancel_while_running_stops_within_a_step_and_the_actor_survives(server):
    client, app, _ = server
    pids = {w["pid"] for w in ready_actors(app)}
    rid = submit(client, steps=steps_for(10))  # 200 steps, about 10 s
    wait_running(app, client, rid, min_step=3)
    at_cancel = max(int(m.split()[1].split("/")[0]) for m in logs_of(client, rid) if m.startswith("step "))
    t0 = time.time()
    assert client.put(f"{Q}/requests/{rid}/cancel").status_code == 202
    st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=10, logs=1)
    elapsed = time.time() - t0
    assert "cancelled" in st["error"].lower()
    last = max(int(line["message"].split()[1].split("/")[0]) for line in st["logs"] if line["message"].startswith("step "))
    # The engine stops at its next step check once the cancel reaches the actor
    # (through the control group, while run() is busy): not after 200 steps.
    assert elapsed < 2.0, elapsed
    assert last - at_cancel <= int(elapsed / STEP) + 2, (at_cancel, last, elapsed)
    assert last < 100
    # Same actor processes, and they take the next job.
    assert {w["pid"] for w in ready_actors(app)} == pids
    nxt = submit(client, steps=6)
    assert "error" not in wait_status(client, f"{Q}/requests/{nxt}/status", "COMPLETED", timeout=30)


def _assert_exactly_once(client: httpx.Client, rids: list[str]) -> None:
    urls = set()
    for rid in rids:
        st = wait_status(client, f"{Q}/requests/{rid}/status", "COMPLETED", timeout=90, logs=1)
        assert "error" not in st, st
        done = [line for line in st["logs"] if line["message"].startswith("done in")]
        assert len(done) == 1, st["logs"]  # finished once: not lost, not run to the end twice
        urls.add(client.get(f"{Q}/requests/{rid}").json()["image"]["url"])
    assert len(urls) == len(rids)


def test_actor_killed_mid_job_is_retried_once_and_replaced(server):
    client, app, cluster = server
    rids = [submit(client, steps=steps_for(1.5)) for _ in range(4)]
    victim = rids[0]
    wait_running(app, client, victim)
    pid = app.state.executor.running()[victim]
    os.kill(pid, signal.SIGKILL)  # the actor's process, on its (simulated) node
    _assert_exactly_once(client, rids)
    msgs = logs_of(client, victim)
    assert any("model actor" in m and "lost" in m for m in msgs), msgs
    assert "request started (attempt 2)" in msgs
    assert app.state.store.get(victim).attempts == 2
    assert all(app.state.store.get(r).attempts == 1 for r in rids[1:])
    # A replacement actor, a new process on the same node.
    wait_for(lambda: len(ready_actors(app)) == 2, 60, "a replacement actor")
    assert pid not in {w["pid"] for w in ready_actors(app)}
    assert {w["node_id"] for w in ready_actors(app)} == worker_node_ids(cluster)


def test_node_removed_mid_job_is_retried_on_the_other_node(server):
    client, app, cluster = server
    ex = app.state.executor
    rids = [submit(client, steps=steps_for(2.0)) for _ in range(3)]
    victim = rids[0]
    wait_running(app, client, victim)
    lost_node = ex.node_running(victim)
    cluster.remove_node(cluster.node_by_id(lost_node))
    seen_nodes = []

    def finished() -> bool:
        node = ex.node_running(victim)
        if node:
            seen_nodes.append(node)
        return client.get(f"{Q}/requests/{victim}/status").json()["status"] == "COMPLETED"

    wait_for(finished, 90, "the job to finish after the node loss")
    _assert_exactly_once(client, rids)
    assert "request started (attempt 2)" in logs_of(client, victim)
    assert seen_nodes and seen_nodes[-1] != lost_node  # the second attempt ran elsewhere
    assert lost_node not in {w["node_id"] for w in ready_actors(app)}
    # The lost actor's replacement waits for a node with a free ccsr_worker: a new node gets it.
    assert len(ready_actors(app)) == 1
    cluster.add_node()
    wait_for(lambda: len(ready_actors(app)) == 2, 60, "an actor on the new node")
    assert {w["node_id"] for w in ready_actors(app)} == worker_node_ids(cluster)


def test_a_node_that_joins_later_gets_an_actor(server):
    client, app, cluster = server
    before = {w["node_id"] for w in ready_actors(app)}
    new = cluster.add_node()
    # No --ray-workers: the executor follows the cluster's ccsr_worker count.
    wait_for(lambda: len(ready_actors(app)) == 3, 60, "a third actor")
    assert {w["node_id"] for w in ready_actors(app)} == before | {new.node_id}
    rids = [submit(client, steps=steps_for(1.0)) for _ in range(3)]
    wait_for(lambda: len(app.state.executor.running()) == 3, 30, "three jobs at once")
    _assert_exactly_once(client, rids)


def test_model_that_fails_to_load_shows_on_readyz(server, tmp_path):
    """A second app on the same cluster whose actors cannot load their weights."""
    _, _, cluster = server
    settings = Settings(
        data_dir=tmp_path,
        executor="ray",
        ray_address=cluster.address,
        ray_workers=1,
        ray_actor_options={"num_gpus": 0, "num_cpus": 0},  # any node: the ccsr_worker units are taken
        weights=tmp_path / "missing.safetensors",
        apps="fal-ai/ccsr",
        device="cpu",
    )
    app = create_app(settings)  # the real engine factory
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        def failed():
            r = client.get("/readyz")
            workers = r.json().get("workers") or [{}]  # empty while the actor is still being placed
            return r.status_code == 503 and workers[0].get("error") and r.json()
        body = wait_for(failed, 90, "the load failure on /readyz")
        assert body["status"] == "loading"
        assert body["workers"][0]["state"] == "failed"
        assert "missing.safetensors" in body["workers"][0]["error"]


def run_on_one_actor(cluster, store, task, wsettings: dict, app_ref: str, factory=None, timeout: float = 90) -> list:
    """Run ``task`` on a fresh one-actor RayExecutor started over ``store``
    (placed on any node: the ccsr_worker units are taken); its events."""
    import asyncio

    from ccsr.executors.base import Done, Failed
    from ccsr.executors.ray import RayExecutor

    async def run() -> list:
        events: list = []
        ex = RayExecutor(wsettings, address=cluster.address, workers=1, app_ref=app_ref, factory=factory,
                         actor_options={"num_gpus": 0, "num_cpus": 0})
        await ex.start(events.append, store)
        try:
            deadline = time.time() + timeout
            while ex.idle_slots() == 0:
                assert time.time() < deadline, ex.describe()
                await asyncio.sleep(0.1)
            ex.submit(task)
            while not any(isinstance(e, (Done, Failed)) for e in events):
                assert time.time() < deadline, events
                await asyncio.sleep(0.05)
        finally:
            await ex.close()
        return events

    return asyncio.run(run())


def test_actors_open_a_shared_store_once_and_use_it_themselves(server, s3_server):
    """With an S3-compatible store the actor gets the store's spec when it is
    made (a task carries none) and reads the input and writes the result in
    the bucket itself: the driver neither reads nor writes a byte."""
    import base64

    from ccsr.executors.base import Done, Failed, Task
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.storage import Storage, keys

    _, _, cluster = server
    app = CCSRApp()
    store = s3_server.store()
    store.put(keys.run_input("s3", "t1"), base64.b64decode(png_data_uri(12, 10).split(",", 1)[1]), content_type="image/png")
    out = Storage.new_result_key()
    driver: list[str] = []
    read, put = store.read, store.put
    store.read = lambda key: driver.append(f"read {key}") or read(key)
    store.put = lambda key, *a, **kw: driver.append(f"put {key}") or put(key, *a, **kw)

    task = Task("s3", app.app_id, app.Params(steps=6, scale=2, seed=5), keys.run_input("s3", "t1"), out)
    events = run_on_one_actor(cluster, store, task, {}, app.ref, factory=FAKE)
    done = [e for e in events if isinstance(e, (Done, Failed))]
    assert len(done) == 1 and isinstance(done[0], Done), done
    assert driver == []  # the actor read the input and wrote the result in the bucket
    assert read(out)[:8] == b"\x89PNG\r\n\x1a\n" and store.stat(out).size == done[0].file_size
    assert (done[0].fields["width"], done[0].fields["height"], done[0].fields["seed"]) == (24, 20, 5)


def test_tiny_model_in_an_actor_matches_the_in_process_run(server, tiny_checkpoint, tiny_config_path, fixtures_dir, tmp_path):
    """The real engine (random tiny checkpoint) loaded once in a Ray actor gives
    the picture the same engine gives in this process: bytes in, bytes out."""
    import io
    import threading

    import numpy as np
    from PIL import Image

    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.storage.local import LocalBlobStore
    from ccsr.executors.base import Done, Failed, Progress, Task
    from ccsr.executors.worker import run_task

    _, _, cluster = server
    photo = sorted((fixtures_dir / "images").glob("*.png"))[0]
    Image.open(photo).convert("RGB").resize((32, 32)).save(tmp_path / "in.png")
    app = CCSRApp()
    wsettings = app.worker_settings(Settings(weights=tiny_checkpoint, config=tiny_config_path, device="cpu", dtype="fp32"))
    params = app.Params(steps=6, scale=2, seed=7, tile_diffusion="gaussian", tile_diffusion_size=64,
                        tile_diffusion_stride=64)
    # A local store the actor's node does not share: the input travels as bytes
    # and the result comes back into this store at output_key.
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("in.png", (tmp_path / "in.png").read_bytes())

    ray_events = run_on_one_actor(cluster, store, Task("tiny", app.app_id, params, "in.png", "ray.png"), wsettings,
                                  app.ref, timeout=120)
    done = [e for e in ray_events if isinstance(e, (Done, Failed))]
    assert len(done) == 1 and isinstance(done[0], Done), done
    assert (done[0].fields["width"], done[0].fields["height"], done[0].fields["seed"]) == (64, 64, 7)
    assert any(isinstance(e, Progress) for e in ray_events)
    local: list = []
    run_task(app, app.load_engine(wsettings, "cpu"), store, Task("tiny", app.app_id, params, "in.png", "local.png"),
             threading.Event(), local.append)
    assert isinstance(local[-1], Done), local[-1]
    a = np.asarray(Image.open(io.BytesIO(store.read("ray.png"))), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(store.read("local.png"))), dtype=np.int16)
    assert a.shape == b.shape == (64, 64, 3)
    # Same weights, seed and noise; only the CPU thread count may differ (float sums).
    assert np.abs(a - b).max() <= 2, np.abs(a - b).max()
    assert done[0].file_size == len(store.read("ray.png"))


def test_tiny_v2_model_in_an_actor_matches_the_in_process_run(server, v2_weights, fixtures_dir, tmp_path):
    """CCSR-v2 (tiny random folder) in a Ray actor: the picture the same engine
    makes in this process, with per-pass progress."""
    import io
    import threading

    import numpy as np
    from PIL import Image

    from ccsr.executors.base import Done, Failed, Progress, Task
    from ccsr.executors.worker import run_task
    from ccsr.models.ccsr_v2.app import V2App
    from ccsr.storage.local import LocalBlobStore

    _, _, cluster = server
    photo = sorted((fixtures_dir / "images").glob("*.png"))[0]
    Image.open(photo).convert("RGB").resize((24, 16)).save(tmp_path / "in.png")
    app = V2App()
    wsettings = app.worker_settings(Settings(models={"ccsr-v2": {"weights": v2_weights}}, device="cpu", dtype="fp32"))
    params = app.Params(steps=6, t_min=0.5, guidance_scale=4.5, scale=2, seed=3, process_size=64)
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("in.png", (tmp_path / "in.png").read_bytes())
    events = run_on_one_actor(cluster, store, Task("v2", app.app_id, params, "in.png", "ray.png"), wsettings,
                              app.ref, timeout=120)
    done = [e for e in events if isinstance(e, (Done, Failed))]
    assert len(done) == 1 and isinstance(done[0], Done), done
    assert [(e.step, e.total) for e in events if isinstance(e, Progress)][-1] == (2, 2)
    local: list = []
    run_task(app, app.load_engine(wsettings, "cpu"), store, Task("v2", app.app_id, params, "in.png", "local.png"),
             threading.Event(), local.append)
    a = np.asarray(Image.open(io.BytesIO(store.read("ray.png"))), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(store.read("local.png"))), dtype=np.int16)
    assert a.shape == b.shape == (32, 48, 3) and np.abs(a - b).max() <= 2
