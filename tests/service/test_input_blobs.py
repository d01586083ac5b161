"""A ``data:`` image_url is stored in the blob store at submit, not in the job
row: the row keeps a short reference, the run reads the bytes back, and the
blob is deleted when the request ends (done, cancelled, failed) or, as a
backstop, by retention."""

from __future__ import annotations

import base64
import io
import os
import time

import httpx
from PIL import Image
from sqlalchemy import func, select

from ccsr.executors.thread import ThreadExecutor
from ccsr.jobs.models import Job
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.storage import keys

from svc_helpers import png_claiming, png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


def _server(tmp_path, db_url=None, step=0.01, **settings):
    if db_url:
        settings["database_url"] = db_url
    app = create_app(Settings(data_dir=tmp_path, **settings), executor=ThreadExecutor(FakeEngine(step)),
                     sweep_interval=0.2)
    return app, serve_app(app)


def _noise_png(side: int) -> bytes:
    """A PNG of random pixels (does not compress): side=1120 is about 3.8 MB,
    a data URI of about 5 MB."""
    im = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _stored_input_length(app, request_id: str) -> int:
    """Length of the input column of the request's row, as the database holds it."""
    with app.state.store.session() as s:
        return s.scalar(select(func.length(Job.input_json)).where(Job.request_id == request_id))


def _blob_key(request_id: str) -> str:
    return keys.submitted_input(request_id)


def _wait_gone(blobs, key: str, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while blobs.stat(key) is not None:
        assert time.time() < deadline, f"blob {key} was not deleted"
        time.sleep(0.05)


def test_a_large_data_uri_is_kept_out_of_the_job_row(tmp_path, any_db_url):
    png = _noise_png(1120)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert len(uri) > 5_000_000
    # 3 steps of 0.5 s: the request is still open while the row and the blob are inspected
    app, ctx = _server(tmp_path, any_db_url, step=0.5, result_ttl=5.0)
    blobs = app.state.blobs
    with ctx as base, httpx.Client(base_url=base, timeout=60) as client:
        sub = client.post(Q, json={"image_url": uri, "scale": 1, "steps": 9})
        assert sub.status_code == 200, sub.text
        rid = sub.json()["request_id"]
        assert _stored_input_length(app, rid) < 1024  # the row holds a reference, not 5 MB
        assert app.state.store.get(rid).input["image_url"] == f"blob:{_blob_key(rid)}"
        assert blobs.read(_blob_key(rid)) == png  # the decoded bytes, in the blob store

        wait_status(client, sub.json()["status_url"], "COMPLETED", timeout=60)
        result = client.get(sub.json()["response_url"])
        assert result.status_code == 200, result.text
        out = client.get(result.json()["image"]["url"])
        assert out.status_code == 200
        # scale 1 with the fake engine: the output is the submitted image itself
        assert Image.open(io.BytesIO(out.content)).convert("RGB").tobytes() == Image.open(io.BytesIO(png)).tobytes()
        _wait_gone(blobs, _blob_key(rid))  # the request ended: its input is deleted

        # retention removes the row; a blob left behind (a crash between the end and
        # the deletion) goes with it
        blobs.put(_blob_key(rid), b"left behind")
        deadline = time.time() + 15
        while app.state.store.get(rid) is not None:
            assert time.time() < deadline, "retention did not delete the request"
            time.sleep(0.1)
        _wait_gone(blobs, _blob_key(rid))


def test_the_submitted_blob_is_deleted_when_a_request_is_cancelled_or_fails(tmp_path):
    app, ctx = _server(tmp_path, step=0.2)
    blobs = app.state.blobs
    with ctx as base, httpx.Client(base_url=base, timeout=30) as client:
        running = client.post(Q, json={"image_url": png_data_uri(), "steps": 300}).json()
        queued = client.post(Q, json={"image_url": png_data_uri(), "steps": 300}).json()
        for sub in (running, queued):
            assert blobs.stat(_blob_key(sub["request_id"])) is not None
        wait_status(client, running["status_url"], "IN_PROGRESS")
        for sub in (queued, running):
            assert client.put(sub["cancel_url"]).status_code == 202
        for sub in (running, queued):
            wait_status(client, sub["status_url"], "COMPLETED")
            assert client.get(sub["response_url"]).status_code == 400  # cancelled
            _wait_gone(blobs, _blob_key(sub["request_id"]))

        # a header that passes the submit check but pixels that do not decode: the run fails
        broken = "data:image/png;base64," + base64.b64encode(png_claiming(32, 32)).decode()
        sub = client.post(Q, json={"image_url": broken, "steps": 4}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        assert client.get(sub["response_url"]).status_code == 422
        _wait_gone(blobs, _blob_key(sub["request_id"]))


def test_a_refused_data_uri_leaves_no_blob(tmp_path):
    app, ctx = _server(tmp_path)
    blobs = app.state.blobs
    with ctx as base, httpx.Client(base_url=base, timeout=30) as client:
        r = client.post(Q, json={"image_url": png_data_uri(), "steps": 4, "scale": 17})
        assert r.status_code == 422
        r = client.post(Q, json={"image_url": "data:image/png;base64,@@@@", "steps": 4})
        assert r.status_code == 422
    assert list(blobs.keys(keys.SUBMITTED)) == []
