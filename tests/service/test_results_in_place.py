"""A run's result is registered in place: the worker writes it once, to the
blob of a new stored file, and publishing only adds the file's metadata (no
copy, no delete). Checked through the whole service, on the local store and
on S3 with presigned URLs."""

from __future__ import annotations

import time

import httpx

from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.storage import keys
from ccsr.testing import FakeEngine

from s3_server import s3_server  # noqa: F401 - the session fixture
from svc_helpers import png_data_uri, serve_app, wait_status, working_blobs

Q = "/queue/fal-ai/ccsr"


def _spy(app) -> tuple[list[str], list[str]]:
    """Record every put and delete on the server's blob store (the scheduler,
    the routes and the in-process executor share the one object)."""
    blobs = app.state.blobs
    puts: list[str] = []
    deletes: list[str] = []
    put, delete = blobs.put, blobs.delete
    blobs.put = lambda key, *a, **kw: puts.append(key) or put(key, *a, **kw)
    blobs.delete = lambda key: deletes.append(key) or delete(key)
    return puts, deletes


def _run(client) -> tuple[dict, dict]:
    """One request from a data URI to its result's image."""
    sub = client.post(Q, json={"image_url": png_data_uri(12, 10), "steps": 4, "scale": 2}).json()
    wait_status(client, sub["status_url"], "COMPLETED")
    result = client.get(sub["response_url"])
    assert result.status_code == 200, result.text
    return sub, result.json()["image"]


def _assert_written_once_in_place(app, puts: list[str], deletes: list[str], sub: dict, image: dict) -> str:
    rid = sub["request_id"]
    file_key = app.state.files.key_from_url(image["url"])
    data = keys.file_bytes(file_key)
    deadline = time.time() + 5
    # the run's input goes right after, the submitted data URI once the request is done (both asynchronously)
    while (working_blobs(app.state.blobs) or keys.submitted_input(rid) not in deletes) and time.time() < deadline:
        time.sleep(0.02)
    assert working_blobs(app.state.blobs) == []
    # Every write of the request, in order: the submitted data URI, the run's
    # prepared input, the result (by the worker, into the file's own blob),
    # the file's metadata. No copy of the result, and it is never deleted.
    # (The server's own marker, written at start, is no write of the request.)
    puts = [k for k in puts if not k.startswith(keys.SERVERS)]
    run_input = puts[1] if len(puts) > 1 else None  # the run's own key (one per run)
    assert run_input and run_input.startswith(keys.run_inputs(rid)), puts
    assert puts == [keys.submitted_input(rid), run_input, data, keys.file_meta(file_key)], puts
    assert set(deletes) == {keys.submitted_input(rid), run_input}, deletes
    assert app.state.blobs.stat(data).size == image["file_size"]
    return file_key


def test_the_result_blob_becomes_the_stored_file(tmp_path):
    app = create_app(Settings(data_dir=tmp_path), executor=ThreadExecutor(FakeEngine(0.0)))
    puts, deletes = _spy(app)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub, image = _run(client)
        file_key = _assert_written_once_in_place(app, puts, deletes, sub, image)
        stored = app.state.files.get(file_key)
        assert stored.path == app.state.blobs.root / keys.file_bytes(file_key)  # the worker's own file, served
        got = client.get(image["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert len(got.content) == image["file_size"] and (image["width"], image["height"]) == (24, 20)


def test_a_result_registered_in_place_on_s3_is_served_by_a_presigned_url(s3_server, tmp_path):
    settings = Settings(data_dir=tmp_path, s3_presign_urls=True, **s3_server.settings())
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.0)))
    puts, deletes = _spy(app)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub, image = _run(client)
        file_key = _assert_written_once_in_place(app, puts, deletes, sub, image)
        r = client.get(image["url"], follow_redirects=False)
        assert r.status_code == 307 and "X-Amz-Signature=" in r.headers["location"]
        assert keys.file_bytes(file_key) in r.headers["location"]  # the worker's blob, straight from the bucket
        got = httpx.get(r.headers["location"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert len(got.content) == image["file_size"]


def test_a_result_registered_in_place_is_forgotten_after_delivery_with_store_io_0(tmp_path):
    app = create_app(Settings(data_dir=tmp_path), executor=ThreadExecutor(FakeEngine(0.0)), sweep_interval=0.2)
    app.state.scheduler.config.store_io_grace = 0.3
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = client.post(Q, json={"image_url": png_data_uri(), "steps": 4},
                          headers={"X-Fal-Store-IO": "0"}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        url = client.get(sub["response_url"]).json()["image"]["url"]
        data = keys.file_bytes(app.state.files.key_from_url(url))
        assert app.state.blobs.stat(data) is not None
        deadline = time.time() + 10
        while app.state.blobs.stat(data) is not None:  # retention deletes the registered blob itself
            assert time.time() < deadline, "the result's blob outlived its grace"
            time.sleep(0.05)
        assert client.get(url).status_code == 404
