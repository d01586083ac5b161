"""The /api/fal/proxy route: target checks, host mapping, header filtering,
auth, in-process dispatch with streaming answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from ccsr.service.auth import KeyRing
from ccsr.service.proxy import TargetError, map_target, proxy_router
from ccsr.storage.files import FileStore
from ccsr.service.storage_routes import storage_router
from ccsr.settings import Settings

KEY = "proxy-key"


def make_app(tmp_path, keys=(KEY,)) -> FastAPI:
    settings = Settings(data_dir=tmp_path, api_keys=list(keys))
    ring = KeyRing(keys)
    app = FastAPI()
    release = asyncio.Event()
    app.state.release = release

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {"method": request.method, "path": request.url.path, "query": request.url.query,
             "headers": dict(request.headers), "body": body.decode(), "base": str(request.base_url)},
            status_code=201,
            headers={"x-fal-request-id": "rid-1", "x-custom": "yes"},
        )

    for path in ("/fal-ai/ccsr", "/queue/fal-ai/ccsr", "/queue/fal-ai/ccsr/requests/{rid}/status", "/files/x/y.png"):
        app.add_api_route(path, echo, methods=["GET", "POST", "PUT"])

    @app.get("/queue/fal-ai/ccsr/requests/{rid}/status/stream")
    async def stream(rid: str):
        async def events():
            yield b"data: {\"status\": \"IN_PROGRESS\"}\n\n"
            await app.state.release.wait()
            yield b"data: {\"status\": \"COMPLETED\"}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.include_router(storage_router(FileStore(tmp_path / "files"), settings=settings, keyring=ring))
    app.include_router(proxy_router(settings=settings, keyring=ring))
    return app


def call(client, method, target, *, key=KEY, headers=None, **kw):
    h = {"x-fal-target-url": target, **(headers or {})}
    if key:
        h["Authorization"] = f"Key {key}"
    return client.request(method, "/api/fal/proxy", headers=h, **kw)


@pytest.mark.parametrize(
    "target,path",
    [
        ("https://fal.run/fal-ai/ccsr", "/fal-ai/ccsr"),
        ("https://queue.fal.run/fal-ai/ccsr/requests/abc/status?logs=1", "/queue/fal-ai/ccsr/requests/abc/status"),
        ("https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3", "/rest/storage/upload/initiate"),
        ("https://v3.fal.media/files/upload", "/cdn/files/upload"),
        ("https://v3b.fal.media/files/upload", "/cdn/files/upload"),
        ("http://testserver/files/x/y.png", "/files/x/y.png"),
    ],
)
def test_host_mapping(target, path):
    assert map_target(target, {"http://testserver"})[0] == path


@pytest.mark.parametrize(
    "target",
    [
        None, "", "not a url", "https://evil.example/fal-ai/ccsr", "http://fal.run/fal-ai/ccsr",
        "https://fal.run:8443/x", "https://fal.run.evil.example/x", "https://user:pw@fal.run/x",
        "https://fal.run/../api/fal/proxy", "https://fal.run/%2e%2e/secret", "https://fal.run/api/fal/proxy",
        "http://127.0.0.1:9/x", "file:///etc/passwd", "https://queue.fal.run/a/./b",
    ],
)
def test_bad_targets_are_refused(target):
    with pytest.raises(TargetError):
        map_target(target, {"http://testserver"})


def test_missing_or_disallowed_target_is_400(tmp_path):
    client = TestClient(make_app(tmp_path))
    r = client.post("/api/fal/proxy", json={}, headers={"Authorization": f"Key {KEY}"})
    assert r.status_code == 400 and "x-fal-target-url" in r.json()["detail"]
    assert call(client, "POST", "https://example.com/x", json={}).status_code == 400


def test_unauthenticated_is_401_when_keys_are_configured(tmp_path):
    client = TestClient(make_app(tmp_path))
    assert call(client, "POST", "https://fal.run/fal-ai/ccsr", key=None, json={}).status_code == 401
    assert call(client, "POST", "https://fal.run/fal-ai/ccsr", key="wrong", json={}).status_code == 401
    open_client = TestClient(make_app(tmp_path / "open", keys=()))
    assert call(open_client, "POST", "https://fal.run/fal-ai/ccsr", key=None, json={}).status_code == 201


def test_forwarding_body_headers_status(tmp_path):
    client = TestClient(make_app(tmp_path))
    r = call(
        client, "POST", "https://queue.fal.run/fal-ai/ccsr?fal_webhook=https%3A%2F%2Fh%2Fw",
        json={"image_url": "data:,x"},
        headers={"x-fal-queue-priority": "low", "Cookie": "session=1", "X-Other": "no"},
    )
    assert r.status_code == 201
    assert r.headers["x-fal-request-id"] == "rid-1" and r.headers["x-custom"] == "yes"
    seen = r.json()
    assert seen["method"] == "POST" and seen["path"] == "/queue/fal-ai/ccsr"
    assert seen["query"] == "fal_webhook=https%3A%2F%2Fh%2Fw"
    assert seen["body"] == '{"image_url":"data:,x"}'
    h = seen["headers"]
    assert h["authorization"] == f"Key {KEY}" and h["x-fal-queue-priority"] == "low"
    assert "cookie" not in h and "x-other" not in h and "x-fal-target-url" not in h
    assert seen["base"] == "http://testserver/"  # absolute URLs keep pointing at us
    g = call(client, "GET", "https://queue.fal.run/fal-ai/ccsr/requests/abc/status?logs=1")
    assert g.json()["method"] == "GET" and g.json()["query"] == "logs=1"


def test_storage_initiate_through_proxy(tmp_path):
    client = TestClient(make_app(tmp_path))
    r = call(
        client, "POST", "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
        json={"content_type": "image/png", "file_name": "a.png"},
    )
    assert r.status_code == 200, r.text
    init = r.json()
    assert client.put(init["upload_url"], content=b"png", headers={"Content-Type": "image/png"}).status_code == 200
    assert client.get(init["file_url"]).content == b"png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streaming_answers_are_not_buffered(tmp_path):
    """The first SSE event arrives through the proxy while the stream is still open."""
    app = make_app(tmp_path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop_holder = {}

    def serve():
        loop = asyncio.new_event_loop()
        loop_holder["loop"] = loop
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        headers = {
            "x-fal-target-url": "https://queue.fal.run/fal-ai/ccsr/requests/abc/status/stream?logs=1",
            "Authorization": f"Key {KEY}",
            "Accept": "text/event-stream",
        }
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/fal/proxy", headers=headers, timeout=5) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines) == 'data: {"status": "IN_PROGRESS"}'
            loop_holder["loop"].call_soon_threadsafe(app.state.release.set)
            rest = [line for line in lines if line]
            assert rest == ['data: {"status": "COMPLETED"}']
    finally:
        server.should_exit = True
        thread.join(5)
