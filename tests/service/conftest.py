"""Fixtures for the service tests: a real uvicorn server on a free port.

``serve_app`` runs an app in a background thread, so tests talk real HTTP to it
(the clients cannot tell it from ``ccsr serve``); ``fake_server`` is the quick
variant with an in-process fake engine for queue semantics.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from ccsr.jobs.testing import temporary_postgres_database


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


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path):
    """A database URL for each backend (a fresh PostgreSQL database, dropped after)."""
    if request.param == "sqlite":
        yield None  # the default: <data_dir>/ccsr.db
    else:
        with temporary_postgres_database() as url:
            yield url


def wait_status(client: httpx.Client, status_url: str, want: str, timeout: float = 30.0, **params) -> dict:
    deadline = time.time() + timeout
    while True:
        body = client.get(status_url, params=params).json()
        if body["status"] == want:
            return body
        if time.time() > deadline:
            raise AssertionError(f"status stayed {body}")
        time.sleep(0.02)
