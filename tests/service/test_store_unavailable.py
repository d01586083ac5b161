"""Each place a run meets the blob store, failing once as an S3 store fails
after its retry window (StoreUnavailable, the store marked down): the run
goes back to the queue uncounted and the request completes; while the store
is down nothing is claimed, readiness says so, and a submit that must store
its input is a 503 with Retry-After. Faults are injected into a local store,
so every path is taken every time (tests/service/test_store_faults.py does
the same against a real SeaweedFS)."""

from __future__ import annotations

import time

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.storage import StoreUnavailable
from ccsr.testing import FakeEngine

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"
QUICK = {"steps": 3, "scale": 2}


def _app(tmp_path, run_log):
    # max_attempts=1: a run the store failed must not use up the request's only attempt
    settings = Settings(data_dir=tmp_path, store_check_interval=0.2, max_attempts=1)
    return create_app(settings, executor=ThreadExecutor(FakeEngine(0.0, run_log=str(run_log))))


def _fail_once(blobs, method: str, prefix: str) -> list[str]:
    """Make the first ``method`` call on a key under ``prefix`` fail as an
    unreachable S3 store does; returns the keys it failed."""
    failed: list[str] = []
    real = getattr(blobs, method)

    def flaky(key, *args, **kwargs):
        if key.startswith(prefix) and not failed:
            failed.append(key)
            blobs.health.down("injected")
            raise StoreUnavailable()
        return real(key, *args, **kwargs)

    setattr(blobs, method, flaky)
    return failed


@pytest.mark.parametrize("method,prefix,runs", [
    ("read", "submitted/", 1),  # preparing: the submitted data URI
    ("put", "inputs/", 1),  # storing the run's prepared input
    ("read", "inputs/", 1),  # the worker reading it
    ("put", "files/", 2),  # the worker writing the result (the bytes blob of a new file)
], ids=["kept-input", "run-input", "worker-read", "worker-write"])
def test_a_run_the_store_fails_goes_back_to_the_queue_uncounted(tmp_path, method, prefix, runs):
    run_log = tmp_path / "runs.txt"
    app = _app(tmp_path, run_log)
    failed = _fail_once(app.state.blobs, method, prefix)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = client.post(Q, json={"image_url": png_data_uri(), "seed": 7, **QUICK}).json()
        st = wait_status(client, sub["status_url"], "COMPLETED", timeout=30, logs=1)
        assert "error" not in st, st
        assert failed, "the fault was not reached"
        assert any("back to the queue" in line["message"] for line in st["logs"]), st["logs"]
        assert client.get(sub["response_url"]).status_code == 200
    assert len(run_log.read_text().splitlines()) == runs  # the engine ran again only when its result was lost


def test_a_result_that_cannot_be_registered_is_computed_again(tmp_path):
    run_log = tmp_path / "runs.txt"
    app = _app(tmp_path, run_log)
    blobs = app.state.blobs
    failed: list[str] = []
    real = blobs.put

    def flaky(key, *args, **kwargs):
        if key.endswith(".json") and key.startswith("files/") and not failed:  # the result's metadata
            failed.append(key)
            blobs.health.down("injected")
            raise StoreUnavailable()
        return real(key, *args, **kwargs)

    blobs.put = flaky
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sub = client.post(Q, json={"image_url": png_data_uri(), "seed": 8, **QUICK}).json()
        st = wait_status(client, sub["status_url"], "COMPLETED", timeout=30)
        assert "error" not in st and failed, st
        image = client.get(client.get(sub["response_url"]).json()["image"]["url"])
        assert image.status_code == 200
    assert run_log.read_text().split()[::2] == ["8", "8"]  # the run, and the run again


def test_while_the_store_is_down_nothing_is_claimed_and_storing_submits_are_503(tmp_path):
    app = _app(tmp_path, tmp_path / "runs.txt")
    blobs = app.state.blobs
    down = [False]
    real_probe = blobs.probe

    def probe(key):
        if down[0]:
            raise StoreUnavailable()
        return real_probe(key)

    blobs.probe = probe
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        upload = client.post("/cdn/files/upload", content=_png(), headers={"content-type": "image/png"}).json()
        down[0] = True
        blobs.health.down("injected")
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "store_unavailable", ready.json()
        refused = client.post(Q, json={"image_url": png_data_uri(), **QUICK})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.headers
        assert refused.json() == {"detail": "The blob store is unavailable; try again later.",
                                  "error_type": "service_unavailable"}
        assert client.post("/cdn/files/upload", content=_png()).status_code == 503
        assert client.get(upload["access_url"]).status_code == 503
        # a URL input needs no store at submit: accepted, and it waits (nothing is claimed)
        sub = client.post(Q, json={"image_url": upload["access_url"], **QUICK})
        assert sub.status_code == 200, sub.text
        time.sleep(1.0)  # five store checks
        assert client.get(sub.json()["status_url"]).json()["status"] == "IN_QUEUE"
        assert app.state.scheduler.cached(sub.json()["request_id"]).logs == []  # never even started
        down[0] = False  # the next check passes: ready, and the job runs
        st = wait_status(client, sub.json()["status_url"], "COMPLETED", timeout=10)
        assert "error" not in st, st
        assert client.get("/readyz").status_code == 200


def _png() -> bytes:
    import base64

    return base64.b64decode(png_data_uri(20, 20).split(",", 1)[1])
