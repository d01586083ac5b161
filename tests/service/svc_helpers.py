"""Helpers for the service tests: a real uvicorn server on a free port, small
images as data URIs, status polling. (A module of its own, not conftest, so
test files can import it by a unique name.)"""

from __future__ import annotations

import base64
import contextlib
import io
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Receiver:
    """A local webhook receiver: records (headers, body) of each POST, sets
    ``event`` on the first, and answers from ``statuses`` (the last repeats)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.got: list[tuple[dict, bytes]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses[min(len(outer.got), len(outer.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.event.set()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (valid CRC): a
    decompression bomb's shape, for checks that must refuse it from the header."""
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (1, 1), (9, 9, 9)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def wait_ready(base: str, proc, timeout: float = 240) -> dict:
    """Wait for a spawned ``ccsr serve`` to answer ``/readyz`` with 200; its body."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            r = httpx.get(base + "/readyz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready")


def stop_servers(procs) -> None:
    """SIGTERM every server process still running, then wait (kill one that hangs)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def working_blobs(blobs) -> list[str]:
    """The working blobs left in a blob store: run inputs, and result bytes
    that no stored file's metadata made visible (an unpublished result)."""
    from ccsr.storage import keys

    names = set(blobs.keys())
    unpublished = [k for k in names if keys.file_key_of(k) and not keys.is_file_meta(k)
                   and keys.file_meta(keys.file_key_of(k)) not in names]
    return sorted([k for k in names if k.startswith(keys.RUN_INPUTS)] + unpublished)


def settled_working_blobs(blobs, seconds: float = 5.0) -> list[str]:
    """:func:`working_blobs` once the server's asynchronous clean-ups have had up
    to ``seconds`` to finish (run inputs go after a run, delivered results are
    deleted metadata first, then bytes): what is left for good."""
    deadline = time.time() + seconds
    while working_blobs(blobs) and time.time() < deadline:
        time.sleep(0.05)
    return working_blobs(blobs)


def point_fal_client(monkeypatch, base: str) -> None:
    """Point the official Python fal-client's module URLs at ``base`` (docs/clients.md)."""
    import fal_client.client as C

    monkeypatch.setattr(C, "RUN_URL_FORMAT", base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", base + "/cdn")
