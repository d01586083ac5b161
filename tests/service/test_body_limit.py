"""The request-body limit (413 on every route, enforced while the body
streams) and data URIs checked at submit (issue 11, point 2)."""

from __future__ import annotations

import base64
import io
import select
import socket
import time

import httpx
import pytest
from PIL import Image

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_claiming, png_data_uri, serve_app

Q = "/queue/fal-ai/ccsr"
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("bodylimit"), max_request_body_bytes=LIMIT,
                        max_data_uri_bytes=200 * 1024, max_upload_bytes=2 * 1024 * 1024,
                        max_input_pixels=1_000_000, max_output_pixels=512 * 512)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, app


def _413(r: httpx.Response, setting: str = "max_request_body_bytes") -> None:
    assert r.status_code == 413, (r.status_code, r.text[:300])
    msg = r.json()["detail"]
    assert setting in msg and "limit" in msg


@pytest.mark.parametrize("method,path", [("POST", Q), ("POST", "/fal-ai/ccsr"), ("POST", "/rest/storage/upload/initiate"),
                                         ("POST", "/no/such/route"), ("PUT", Q + "/requests/x/cancel")])
def test_declared_length_over_the_limit_is_413_on_any_route(server, method, path):
    client, _ = server
    body = b'{"image_url": "data:image/png;base64,' + b"A" * (LIMIT + 10) + b'"}'
    _413(client.request(method, path, content=body, headers={"content-type": "application/json"}))


def test_a_chunked_body_is_refused_while_streaming(server):
    """Sends a 50 MB chunked body on a raw socket and stops as soon as the
    server answers: it must answer 413 long before the body is sent."""
    client, _ = server
    url = httpx.URL(str(client.base_url))
    sock = socket.create_connection((url.host, url.port), timeout=10)
    sock.sendall(f"POST {Q} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"A" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    total, sent, answer, pending = 50 * 1024 * 1024, 0, b"", b""
    deadline = time.time() + 30
    sock.setblocking(False)
    while sent < total and time.time() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            try:
                answer = sock.recv(65536)
            except ConnectionError:
                answer = answer or b"(reset)"
            break
        if writable:
            pending = pending or framed  # a partial send continues where it stopped: the framing stays valid
            try:
                n = sock.send(pending)
            except (BlockingIOError, ConnectionError):
                continue
            sent, pending = sent + n, pending[n:]
    sock.setblocking(True)
    sock.settimeout(10)
    while b"max_request_body_bytes" not in answer:  # the head and the body may come in separate reads
        try:
            more = sock.recv(65536)
        except (OSError, ConnectionError):
            break
        if not more:
            break
        answer += more
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"max_request_body_bytes" in answer
    assert sent < total / 4, f"the server read {sent} bytes before answering"


def test_raw_uploads_have_their_own_larger_limit(server):
    client, _ = server
    data = b"x" * (LIMIT * 2)  # over the request limit, under max_upload_bytes
    r = client.post("/cdn/files/upload", content=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    _413(client.post("/cdn/files/upload", content=b"x" * (3 * 1024 * 1024),
                     headers={"content-type": "application/octet-stream"}), "max_upload_bytes")


def test_a_body_under_the_limit_is_accepted(server):
    client, _ = server
    r = client.post(Q, json={"image_url": png_data_uri(), "steps": 4})
    assert r.status_code == 200, r.text


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()




def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize("image_url,words", [
    ("data:image/png;base64,@@@@", "base64"),
    ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "supported format"),
    (_uri(png_claiming(6324, 6324)), "max_input_pixels"),
    ("data:image/png;base64," + "A" * (210 * 1024), "max_data_uri_bytes"),
])
@pytest.mark.parametrize("route", [Q, "/fal-ai/ccsr"])
def test_data_uris_are_checked_at_submit(server, image_url, words, route):
    client, app = server
    before = sum(app.state.store.count_by_status().values())
    r = client.post(route, json={"image_url": image_url, "steps": 4})
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "image_url"] and words in detail["msg"], detail
    assert sum(app.state.store.count_by_status().values()) == before  # no request was created


def test_output_size_of_a_data_uri_is_checked_at_submit(server):
    client, _ = server
    r = client.post(Q, json={"image_url": _uri(_png(400, 400)), "scale": 2, "steps": 4})
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "scale"] and "max_output_pixels" in detail["msg"]
