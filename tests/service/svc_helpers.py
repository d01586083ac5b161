"""Helpers for the service tests: a real uvicorn server on a free port, small
images as data URIs, status polling. (A module of its own, not conftest, so
test files can import it by a unique name.)"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(app, port: int | None = None):
    """Run ``app`` with uvicorn in a thread; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def png_data_uri(w: int = 16, h: int = 16, color=(200, 100, 50)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wait_status(client: httpx.Client, status_url: str, want: str, timeout: float = 30.0, **params) -> dict:
    deadline = time.time() + timeout
    while True:
        body = client.get(status_url, params=params).json()
        if body["status"] == want:
            return body
        if time.time() > deadline:
            raise AssertionError(f"status stayed {body}")
        time.sleep(0.02)
