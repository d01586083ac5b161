"""Retention (result_ttl, x-fal-object-lifecycle-preference), X-Fal-Store-IO: 0,
per-key isolation of requests, and the Prometheus metrics."""

from __future__ import annotations

import json
import time

import httpx

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


def _server(tmp_path, step=0.01, **settings):
    app = create_app(Settings(data_dir=tmp_path, **settings), executor=ThreadExecutor(FakeEngine(step)),
                     sweep_interval=0.2)
    return app, serve_app(app)


def _done(client, headers=None, **body):
    sub = client.post(Q, json={"image_url": png_data_uri(), "steps": 4, **body}, headers=headers or {}).json()
    wait_status(client, sub["status_url"], "COMPLETED")
    return sub


def test_results_and_files_expire_unless_the_request_asks_longer(tmp_path):
    app, ctx = _server(tmp_path, result_ttl=1.0)
    with ctx as base, httpx.Client(base_url=base) as client:
        short = _done(client)
        keep = _done(client, headers={"x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": 3600})})
        short_url = client.get(short["response_url"]).json()["image"]["url"]
        keep_url = client.get(keep["response_url"]).json()["image"]["url"]
        assert client.get(short_url).status_code == 200
        deadline = time.time() + 10
        while client.get(short["response_url"]).status_code != 404:
            assert time.time() < deadline
            time.sleep(0.1)
        assert client.get(short["status_url"]).status_code == 404
        assert client.get(short_url).status_code == 404  # the file is gone too
        assert app.state.store.get(short["request_id"]) is None
        assert client.get(keep["response_url"]).status_code == 200
        assert client.get(keep_url).status_code == 200


def test_store_io_0_forgets_input_and_output_after_delivery(tmp_path):
    app, ctx = _server(tmp_path)
    app.state.scheduler.config.store_io_grace = 0.5
    with ctx as base, httpx.Client(base_url=base) as client:
        sub = _done(client, headers={"X-Fal-Store-IO": "0"})
        normal = _done(client)
        rid = sub["request_id"]
        assert app.state.store.get(rid).input == {}  # input not kept
        assert app.state.store.get(normal["request_id"]).input["image_url"].startswith("blob:")  # a data URI: the row keeps a reference
        out = client.get(sub["response_url"])
        assert out.status_code == 200
        url = out.json()["image"]["url"]
        assert client.get(url).status_code == 200  # still downloadable right after delivery
        deadline = time.time() + 10
        while client.get(url).status_code != 404:
            assert time.time() < deadline
            time.sleep(0.1)
        assert client.get(sub["response_url"]).status_code == 404
        assert client.get(normal["response_url"]).status_code == 200


def test_each_key_sees_only_its_own_requests(tmp_path):
    app, ctx = _server(tmp_path, step=0.2, api_keys=["key-a", "key-b"])
    with ctx as base:
        a = httpx.Client(base_url=base, headers={"Authorization": "Key key-a"})
        b = httpx.Client(base_url=base, headers={"Authorization": "Key key-b"})
        anon = httpx.Client(base_url=base)
        assert anon.post(Q, json={"image_url": png_data_uri()}).status_code == 401
        sub = a.post(Q, json={"image_url": png_data_uri(), "steps": 8}).json()
        for method, url in (("GET", sub["status_url"]), ("GET", sub["response_url"]), ("PUT", sub["cancel_url"]),
                            ("GET", sub["status_url"] + "/stream")):
            r = b.request(method, url)
            assert r.status_code == 404 and r.json() == b.request(method, url.replace(sub["request_id"], "unknown")).json()
            assert anon.request(method, url).status_code == 401
        assert a.get(sub["status_url"]).status_code in (200, 202)
        wait_status(a, sub["status_url"], "COMPLETED")
        assert a.get(sub["response_url"]).status_code == 200
        for c in (a, b, anon):
            c.close()


def test_prometheus_metrics(tmp_path):
    app, ctx = _server(tmp_path, step=0.3)
    with ctx as base, httpx.Client(base_url=base) as client:
        running = client.post(Q, json={"image_url": png_data_uri(), "steps": 12}).json()
        queued = [client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json() for _ in range(2)]
        wait_status(client, running["status_url"], "IN_PROGRESS")
        text = client.get("/metrics").text
        assert "ccsr_queue_depth 2.0" in text and "ccsr_requests_running 1.0" in text
        client.put(queued[0]["cancel_url"])
        wait_status(client, queued[1]["status_url"], "COMPLETED", timeout=30)
        # An uploaded non-image fails when it runs (a bad data: URI is refused at submit).
        up = client.post("/cdn/files/upload", content=b"AAAA", headers={"content-type": "image/png"}).json()
        bad = client.post(Q, json={"image_url": up["access_url"]}).json()
        wait_status(client, bad["status_url"], "COMPLETED")
        r = client.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        for line in ('ccsr_requests_finished_total{outcome="completed"} 2.0',
                     'ccsr_requests_finished_total{outcome="cancelled"} 1.0',
                     'ccsr_requests_finished_total{outcome="failed"} 1.0',
                     "ccsr_queue_depth 0.0", "ccsr_inference_seconds_count 2.0"):
            assert line in text, line
        steps = [l for l in text.splitlines() if l.startswith("ccsr_step_seconds_count")]
        assert steps and float(steps[0].split()[-1]) >= 4  # intervals between consecutive steps


def test_webhook_is_in_the_outbox_when_the_job_ends(tmp_path):
    from sqlalchemy import select

    from ccsr.service.webhooks import WebhookDelivery

    app, ctx = _server(tmp_path)
    with ctx as base, httpx.Client(base_url=base) as client:
        hook = "http://hooks.invalid/receive"
        r = client.post(Q, params={"fal_webhook": hook}, json={"image_url": png_data_uri(), "steps": 4})
        sub = r.json()
        wait_status(client, sub["status_url"], "COMPLETED")
        with app.state.store.session() as s:
            rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.request_id == sub["request_id"])).all()
        assert len(rows) == 1 and rows[0].url == hook
        body = json.loads(rows[0].body)
        assert body["status"] == "OK" and body["payload"]["image"]["url"].startswith(base + "/files/")
        assert client.post(Q, params={"fal_webhook": "ftp://x"}, json={"image_url": png_data_uri()}).status_code == 422
