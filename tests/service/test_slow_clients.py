"""Connection-level defences of ``ccsr serve`` (issue 11, point 4): slow
clients trickling header bytes are cut off after header_timeout, a flood of
them cannot lock /healthz out (the connection cap evicts the longest
waiting), and repeated log messages are rate-limited.

Loopback only, bounded: at most 80 slow connections for a few seconds."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.service.logflood import RepeatFilter
from ccsr.service.server import build_server
from ccsr.settings import Settings

from svc_helpers import free_port

SLOW = 80


@pytest.fixture
def guarded(tmp_path):
    settings = Settings(data_dir=tmp_path, port=free_port(), header_timeout=1.5, max_connections=40)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    server = build_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{settings.port}", settings.port
    server.should_exit = True
    thread.join(30)


def _slow(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def test_slow_header_clients_are_closed_after_header_timeout(guarded):
    _base, port = guarded
    s = _slow(port)
    started = time.time()
    s.settimeout(10)
    for _ in range(5):  # keep trickling: trickling does not extend the deadline
        time.sleep(0.2)
        s.sendall(b"a")
    assert s.recv(100) == b""  # closed by the server
    elapsed = time.time() - started
    assert 1.0 < elapsed < 6, elapsed
    s.close()


def test_healthz_stays_responsive_under_a_slow_connection_flood(guarded):
    base, port = guarded
    socks = []
    try:
        for _ in range(SLOW):
            try:
                socks.append(_slow(port))
            except OSError:
                pass
        # More slow connections than the cap are open or were evicted; a prompt client still gets in.
        times = []
        for _ in range(10):
            t0 = time.time()
            r = httpx.get(base + "/healthz", timeout=3, headers={"Connection": "close"})
            times.append(time.time() - t0)
            assert r.status_code == 200
            for s in socks[:3]:  # the flood continues
                try:
                    s.sendall(b"b")
                except OSError:
                    pass
        assert max(times) < 2.0, times
        # The cap held: the server closed the connections above it (the oldest waiting first).
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                closed += s.recv(10) == b""
            except socket.timeout:
                pass
            except OSError:
                closed += 1
        assert closed >= SLOW - 40, closed
    finally:
        for s in socks:
            s.close()


def test_repeated_log_messages_are_rate_limited():
    clock = [0.0]
    flt = RepeatFilter(limit=5, window=60, clock=lambda: clock[0])
    records = [logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "accept failed: %s", ("EMFILE",), None)
               for _ in range(1000)]
    passed = [r for r in records if flt.filter(r)]
    assert len(passed) == 5
    other = logging.LogRecord("ccsr", logging.ERROR, __file__, 1, "something else", (), None)
    assert flt.filter(other)  # distinct messages are not affected
    clock[0] = 61
    again = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "accept failed: %s", ("EMFILE",), None)
    assert flt.filter(again) and "995 similar messages suppressed" in again.getMessage()
