"""Hostile requests against the whole app over real HTTP (fake engine):
SSRF URLs, decompression bombs, oversized and broken inputs, path traversal
on the file routes, webhooks aimed at private addresses, proxy abuse. Each
must end in a clear error naming the field or limit, never a traceback and
never a connection to a private address."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from ccsr.service.webhooks import FAILED, WebhookDelivery
from test_official_clients import KEY, LiveServer

Q = "/queue/fal-ai/ccsr"
AUTH = {"Authorization": f"Key {KEY}"}


def png(w=8, h=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def bomb(width=100_000, height=100_000) -> bytes:
    data = bytearray(png(1, 1))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


class Trap:
    """A local server that must never be contacted."""

    def __init__(self):
        self.hits = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(png())))
                self.end_headers()
                self.wfile.write(png())

            do_POST = do_GET

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def trap():
    t = Trap()
    yield t
    t.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = LiveServer(
        tmp_path_factory.mktemp("hostile"),
        allow_private_urls=False,
        max_data_uri_bytes=64 * 1024,
        max_input_pixels=1_000_000,
        max_upload_bytes=256 * 1024,
    )
    yield server
    server.close()


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.base, headers=AUTH, timeout=30) as c:
        yield c


def run_to_error(client, image_url) -> tuple[int, dict]:
    """Submit, wait for completion, return the result's status and body."""
    r = client.post(Q, json={"image_url": image_url, "steps": 6})
    if r.status_code != 200:
        return r.status_code, r.json()
    sub = r.json()
    deadline = time.time() + 20
    while client.get(sub["status_url"]).json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.03)
    res = client.get(sub["response_url"])
    return res.status_code, res.json()


def _assert_field_error(status, body, field="image_url", needle=None):
    assert status == 422, body
    text = str(body)
    assert field in text
    if needle:
        assert needle in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "make_url",
    [
        lambda t: f"http://127.0.0.1:{t.port}/x.png",
        lambda t: f"http://localhost:{t.port}/x.png",
        lambda t: f"http://[::ffff:127.0.0.1]:{t.port}/x.png",
        lambda t: f"http://2130706433:{t.port}/x.png",  # 127.0.0.1 as a decimal number
        lambda t: "http://169.254.169.254/latest/meta-data/",
        lambda t: "http://metadata.google.internal/computeMetadata/v1/",
        lambda t: "http://10.255.255.1/x.png",
        lambda t: "file:///etc/passwd",
        lambda t: "gopher://127.0.0.1:25/",
    ],
)
def test_ssrf_urls_are_refused(client, trap, make_url):
    status, body = run_to_error(client, make_url(trap))
    _assert_field_error(status, body)
    assert trap.hits == []


def test_decompression_bomb(client):
    status, body = run_to_error(client, uri(bomb()))
    _assert_field_error(status, body, needle="max_input_pixels")


def test_pixel_limit(client):
    status, body = run_to_error(client, uri(png(1001, 1000)))
    _assert_field_error(status, body, needle="max_input_pixels")


def test_huge_data_uri(client):
    status, body = run_to_error(client, "data:image/png;base64," + "A" * (100 * 1024))
    _assert_field_error(status, body, needle="max_data_uri_bytes")


@pytest.mark.parametrize(
    "data",
    [png()[: len(png()) // 2], b"<html>not an image</html>", b"", b"%!PS-Adobe-3.0 EPSF-3.0\n"],
    ids=["truncated", "html", "empty", "eps"],
)
def test_broken_images(client, data):
    status, body = run_to_error(client, uri(data))
    _assert_field_error(status, body)


@pytest.mark.parametrize(
    "path",
    [
        "/files/..%2F..%2F..%2Fetc%2Fpasswd/x",
        "/files/%2e%2e/ccsr.db",
        "/files/" + "A" * 32 + "/x.png",
        "/files/../ccsr.db/x",
        "/files/upload-token.secret/x",
        "/files/" + "A" * 32 + "/x.png/upload/" + "B" * 32,
    ],
)
def test_file_routes_resist_traversal(client, path):
    r = client.get(path)
    assert r.status_code in (404, 405)
    assert b"SQLite" not in r.content and b"root:" not in r.content


def test_oversized_upload_is_413(client):
    tok = client.post("/rest/storage/auth/token?storage_type=fal-cdn-v3", json={}).json()
    r = client.post(
        "/cdn/files/upload",
        content=b"x" * (256 * 1024 + 1),
        headers={"Authorization": f"Bearer {tok['token']}", "Content-Type": "image/png"},
    )
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]


def test_webhook_to_private_address_is_never_sent(client, live, trap):
    r = client.post(Q, params={"fal_webhook": f"http://127.0.0.1:{trap.port}/hook"}, json={"image_url": uri(png()), "steps": 6})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    deadline = time.time() + 20
    while True:
        with live.app.state.store.session() as s:
            row = s.execute(select(WebhookDelivery).where(WebhookDelivery.request_id == rid)).scalar_one_or_none()
        if row is not None and row.status == FAILED:
            break
        assert time.time() < deadline, "webhook row not refused"
        time.sleep(0.05)
    assert "allow_private_urls" in row.last_error
    assert trap.hits == []


def test_proxy_refuses_foreign_targets(client, trap):
    for target in (f"http://127.0.0.1:{trap.port}/x", "https://evil.example/fal-ai/ccsr", "https://fal.run/../api/fal/proxy"):
        r = client.post("/api/fal/proxy", headers={"x-fal-target-url": target}, json={})
        assert r.status_code == 400
    assert trap.hits == []
