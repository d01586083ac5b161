"""Webhooks: Ed25519 signatures verifiable with the JWKS, the durable outbox,
retries with backoff (fake clock), restarts, SSRF refusals."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import stat
import threading
import types

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from ccsr.jobs.db import Base, make_engine
from ccsr.jobs.store import JobStore
from ccsr.service import fetch
from ccsr.service.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WebhookDelivery,
    WebhookKeys,
    WebhookSender,
    add_to_outbox,
    body_for_view,
    enqueue_webhook,
    jwks_router,
    make_session_factory,
    start_for_app,
    stop_for_app,
    verify_webhook,
    webhook_body,
)
from ccsr.settings import Settings

from svc_helpers import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def setup(tmp_path, **kw):
    settings = Settings(data_dir=tmp_path, allow_private_urls=kw.pop("allow_private_urls", True), **kw)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    return settings, engine, make_session_factory(engine), WebhookKeys.load_or_create(tmp_path)


def sender_for(settings, factory, keys, clock, **kw):
    return WebhookSender(factory, keys, settings, clock=clock, backoff=lambda n: 15.0 * 2 ** (n - 1), **kw)


def enqueue(factory, url, *, now, payload=None, request_id="req-1", user_id="owner1"):
    with factory() as s:
        enqueue_webhook(s, request_id, user_id, url, payload or webhook_body(request_id, ok=True, payload={"x": 1}), now=now)
        s.commit()


def rows(factory):
    with factory() as s:
        return s.execute(select(WebhookDelivery)).scalars().all()


# --- keys and signatures ----------------------------------------------------------------------


def test_key_file_is_private_and_stable(tmp_path):
    a = WebhookKeys.load_or_create(tmp_path)
    path = tmp_path / "webhook-ed25519.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    b = WebhookKeys.load_or_create(tmp_path)
    assert a.kid == b.kid and a.public_raw == b.public_raw
    assert WebhookKeys.load_or_create(tmp_path / "other").kid != a.kid


def test_signature_verifies_with_published_jwks(tmp_path):
    keys = WebhookKeys.load_or_create(tmp_path)
    app = FastAPI()
    app.include_router(jwks_router(settings=Settings(data_dir=tmp_path)))
    jwks = TestClient(app).get("/.well-known/jwks.json").json()
    (jwk,) = jwks["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == keys.kid
    body = b'{"request_id":"r1","status":"OK"}'
    sig = keys.sign("r1", "u1", "1700000000", body)
    # Verify independently of our helper, exactly as a receiver would.
    pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4)))
    pub.verify(bytes.fromhex(sig), b"r1\nu1\n1700000000\n" + hashlib.sha256(body).hexdigest().encode())
    ok = dict(request_id="r1", user_id="u1", timestamp="1700000000", signature_hex=sig, now=1700000100)
    assert verify_webhook(jwks, body=body, **ok)
    assert not verify_webhook(jwks, body=body + b" ", **ok)
    assert not verify_webhook(jwks, body=body, **{**ok, "user_id": "u2"})
    assert not verify_webhook(jwks, body=body, **{**ok, "now": 1700000000 + 301})  # stale timestamp
    assert not verify_webhook(jwks, body=body, **{**ok, "signature_hex": "zz"})


def test_bodies():
    ok = webhook_body("r", ok=True, payload={"image": {}})
    assert ok == {"request_id": "r", "gateway_request_id": "r", "status": "OK", "payload": {"image": {}}}
    err = webhook_body("r", ok=False, payload={"detail": []}, error="bad input")
    assert err["status"] == "ERROR" and err["error"] == "bad input"
    done = types.SimpleNamespace(
        request_id="r", status="completed", base_url="http://h:1", result={"image": {"url": "/files/k/a.png"}, "seed": 3},
        error=None, error_type=None, error_body=None,
    )
    assert body_for_view(done)["payload"] == {"image": {"url": "http://h:1/files/k/a.png"}, "seed": 3}
    failed = types.SimpleNamespace(
        request_id="r", status="failed", base_url="http://h:1", result=None, error="image_url: nope",
        error_type="validation_error", error_body={"detail": [{"loc": ["body", "image_url"]}]},
    )
    body = body_for_view(failed)
    assert body["status"] == "ERROR" and body["error"] == "image_url: nope" and body["payload"]["detail"]


# --- delivery ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delivery_headers_and_signature(tmp_path, receiver):
    settings, _, factory, keys = setup(tmp_path)
    clock = Clock()
    enqueue(factory, receiver.url, now=clock.t)
    assert await sender_for(settings, factory, keys, clock).run_once() == 1
    ((headers, body),) = receiver.got
    assert json.loads(body) == webhook_body("req-1", ok=True, payload={"x": 1})
    assert headers["content-type"] == "application/json"
    assert headers["x-fal-webhook-request-id"] == "req-1" and headers["x-fal-webhook-user-id"] == "owner1"
    assert headers["x-fal-webhook-timestamp"] == str(int(clock.t))
    assert verify_webhook(
        keys.jwks(), request_id="req-1", user_id="owner1", timestamp=headers["x-fal-webhook-timestamp"],
        body=body, signature_hex=headers["x-fal-webhook-signature"], now=clock.t,
    )
    (row,) = rows(factory)
    assert row.status == DELIVERED and row.attempts == 1 and row.last_status == 200


@pytest.mark.asyncio
async def test_retries_with_exponential_backoff(tmp_path):
    receiver = Receiver(statuses=[500, 503, 200])
    try:
        settings, _, factory, keys = setup(tmp_path)
        clock = Clock()
        t0 = clock.t
        sender = sender_for(settings, factory, keys, clock)
        enqueue(factory, receiver.url, now=t0)
        assert await sender.run_once() == 1  # attempt 1: 500
        (row,) = rows(factory)
        assert row.status == PENDING and row.next_attempt_at == t0 + 15 and row.last_status == 500
        clock.t = t0 + 14
        assert await sender.run_once() == 0  # not due yet
        clock.t = t0 + 15
        assert await sender.run_once() == 1  # attempt 2: 503, next in 30 s
        (row,) = rows(factory)
        assert row.next_attempt_at == t0 + 15 + 30
        clock.t = t0 + 44
        assert await sender.run_once() == 0
        clock.t = t0 + 45
        assert await sender.run_once() == 1  # attempt 3: delivered
        (row,) = rows(factory)
        assert row.status == DELIVERED and row.attempts == 3
        bodies = {b for _, b in receiver.got}
        assert len(receiver.got) == 3 and len(bodies) == 1  # the same bytes every time
        # Each attempt carries its own fresh timestamp and a valid signature.
        stamps = [h["x-fal-webhook-timestamp"] for h, _ in receiver.got]
        assert stamps == [str(int(t0)), str(int(t0 + 15)), str(int(t0 + 45))]
        clock.t += 10_000
        assert await sender.run_once() == 0
    finally:
        receiver.close()


def test_default_backoff_spans_about_two_hours():
    from ccsr.service.webhooks import default_backoff

    total = sum(default_backoff(n) for n in range(1, 10))  # 9 waits between 10 attempts
    assert 1.5 * 3600 < total < 2.5 * 3600


@pytest.mark.asyncio
async def test_gives_up_after_max_attempts(tmp_path):
    receiver = Receiver(statuses=[500])
    try:
        settings, _, factory, keys = setup(tmp_path, webhook_max_attempts=3)
        clock = Clock()
        sender = sender_for(settings, factory, keys, clock)
        enqueue(factory, receiver.url, now=clock.t)
        for _ in range(6):
            await sender.run_once()
            clock.t += 10_000
        (row,) = rows(factory)
        assert row.status == FAILED and row.attempts == 3 and len(receiver.got) == 3
    finally:
        receiver.close()


@pytest.mark.asyncio
async def test_unreachable_receiver_is_retried(tmp_path):
    settings, _, factory, keys = setup(tmp_path)
    clock = Clock()
    enqueue(factory, "http://127.0.0.1:9/hook", now=clock.t)  # nothing listens on port 9
    await sender_for(settings, factory, keys, clock).run_once()
    (row,) = rows(factory)
    assert row.status == PENDING and row.attempts == 1 and row.last_error


@pytest.mark.asyncio
async def test_survives_restart(tmp_path):
    """A new sender (new engine, new process in real life) picks up due rows,
    including one claimed by a sender that died mid-send."""
    receiver = Receiver(statuses=[500, 200])
    try:
        settings, engine, factory, keys = setup(tmp_path)
        clock = Clock()
        enqueue(factory, receiver.url, now=clock.t, request_id="a")
        await sender_for(settings, factory, keys, clock).run_once()  # fails once
        enqueue(factory, receiver.url, now=clock.t, request_id="b")
        dead = sender_for(settings, factory, keys, clock, lease=60)
        assert [i["request_id"] for i in dead._claim(clock.t)] == ["b"]  # claimed, then "crashes"
        engine.dispose()

        _, _, factory2, keys2 = setup(tmp_path)  # restart: same data dir and database
        assert keys2.kid == keys.kid
        fresh = sender_for(settings, factory2, keys2, clock)
        assert await fresh.run_once() == 0  # 'a' waits for its backoff, 'b' for its lease
        clock.t += 61
        assert await fresh.run_once() == 2
        assert {r.request_id: r.status for r in rows(factory2)} == {"a": DELIVERED, "b": DELIVERED}
    finally:
        receiver.close()


@pytest.mark.asyncio
async def test_two_senders_never_double_send(tmp_path, receiver):
    settings, _, factory, keys = setup(tmp_path)
    clock = Clock()
    for i in range(5):
        enqueue(factory, receiver.url, now=clock.t, request_id=f"r{i}")
    a, b = sender_for(settings, factory, keys, clock), sender_for(settings, factory, keys, clock)
    counts = await asyncio.gather(a.run_once(), b.run_once())
    assert sum(counts) == 5 and len(receiver.got) == 5


@pytest.mark.asyncio
async def test_ssrf_rules_apply_to_webhooks(tmp_path, receiver, monkeypatch):
    settings, _, factory, keys = setup(tmp_path, allow_private_urls=False)

    async def resolve(host, port):
        return {"hooks.example": ["10.1.2.3"]}[host]

    monkeypatch.setattr(fetch, "resolve_host", resolve)
    clock = Clock()
    enqueue(factory, receiver.url, now=clock.t, request_id="loop")
    enqueue(factory, "http://hooks.example/x", now=clock.t, request_id="dns")
    enqueue(factory, "http://169.254.169.254/latest", now=clock.t, request_id="meta")
    enqueue(factory, "ftp://example.com/", now=clock.t, request_id="scheme")
    await sender_for(settings, factory, keys, clock).run_once()
    for row in rows(factory):
        assert row.status == FAILED and row.attempts == 1, row.request_id  # refused for good
    assert receiver.got == []


@pytest.mark.asyncio
async def test_unserialisable_payload_is_reported(tmp_path, receiver):
    settings, _, factory, keys = setup(tmp_path)
    clock = Clock()
    enqueue(factory, receiver.url, now=clock.t, payload=webhook_body("r", ok=True, payload={"v": float("nan")}))
    await sender_for(settings, factory, keys, clock).run_once()
    body = json.loads(receiver.got[0][1])
    assert body["payload"] is None and "payload_error" in body


@pytest.mark.asyncio
async def test_app_wiring_enqueues_and_delivers(tmp_path, receiver):
    settings = Settings(data_dir=tmp_path, allow_private_urls=True)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    app = types.SimpleNamespace(state=types.SimpleNamespace(settings=settings, store=store))
    sender = await start_for_app(app)
    try:
        view = types.SimpleNamespace(
            request_id="req-9", owner="o9", webhook_url=receiver.url, status="completed", base_url="http://b",
            result={"image": {"url": "/files/k/x.png"}}, error=None, error_type=None, error_body=None,
        )
        with store.session() as s:  # what the scheduler does in the transaction that ends a job
            add_to_outbox(s, view)
            s.commit()
        sender.notify()
        for _ in range(100):
            if receiver.got:
                break
            await asyncio.sleep(0.05)
        headers, body = receiver.got[0]
        assert json.loads(body)["payload"]["image"]["url"] == "http://b/files/k/x.png"
        assert headers["x-fal-webhook-user-id"] == "o9"
    finally:
        await stop_for_app(app)
        store.close()


@pytest.mark.asyncio
async def test_stop_right_after_a_wake_still_stops(tmp_path):
    """A wake-up (a send finishing) in the same loop turn as stop() must not
    swallow the cancellation: on Python 3.11 ``asyncio.wait_for`` returns the
    finished inner wait instead of raising, and the loop then ran forever."""
    settings, _, factory, keys = setup(tmp_path)
    sender = sender_for(settings, factory, keys, Clock(), poll_interval=60.0)
    task = sender.start()
    for _ in range(200):  # until the loop sleeps on its wake event
        await asyncio.sleep(0.01)
        if sender._wake is not None and task._fut_waiter is not None:
            break
    sender.notify()
    stopping = asyncio.ensure_future(sender.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)  # asyncio.wait never cancels, so a hang shows
    if not done:
        task.cancel()  # a second cancel gets through; let the test end
        await stopping
    assert done and task.done()


@pytest.mark.asyncio
async def test_prune_removes_only_old_finished_rows(tmp_path, receiver):
    settings, _, factory, keys = setup(tmp_path)
    clock = Clock()
    sender = sender_for(settings, factory, keys, clock)
    enqueue(factory, receiver.url, now=clock.t, request_id="old")
    await sender.run_once()
    enqueue(factory, "http://127.0.0.1:9/", now=clock.t, request_id="still-pending")
    clock.t += 8 * 24 * 3600
    enqueue(factory, receiver.url, now=clock.t, request_id="new")
    await sender.run_once()
    assert sender.prune() == 1
    assert {r.request_id for r in rows(factory)} == {"still-pending", "new"}


@pytest.mark.asyncio
async def test_gone_410_is_not_retried(tmp_path):
    receiver = Receiver(statuses=[410, 200])
    try:
        settings, _, factory, keys = setup(tmp_path)
        clock = Clock()
        sender = sender_for(settings, factory, keys, clock)
        enqueue(factory, receiver.url, now=clock.t)
        assert await sender.run_once() == 1
        clock.t += 10_000
        assert await sender.run_once() == 0
        (row,) = rows(factory)
        assert row.status == FAILED and row.attempts == 1 and row.last_status == 410
        assert len(receiver.got) == 1
    finally:
        receiver.close()


@pytest.mark.asyncio
async def test_delivery_id_is_stable_across_retries_and_a_killed_send(tmp_path):
    """The same X-Fal-Webhook-Delivery-Id on a retry after a 500 and on the
    resend after a sender died mid-send (its lease expired); distinct webhooks
    get distinct ids."""
    receiver = Receiver(statuses=[500, 200])
    try:
        settings, _, factory, keys = setup(tmp_path)
        clock = Clock()
        enqueue(factory, receiver.url, now=clock.t, request_id="a")
        enqueue(factory, receiver.url, now=clock.t, request_id="b")
        sender = sender_for(settings, factory, keys, clock, lease=60)
        (claimed_b,) = [i for i in sender._claim(clock.t) if i["request_id"] == "b"]  # 'a' and 'b' claimed
        # 'b' was claimed by a sender that then died; 'a' is sent and fails once.
        clock.t += 61
        await sender.run_once()  # both due again: the lease of both expired
        clock.t += 10_000
        await sender.run_once()
        ids = {}
        for headers, body in receiver.got:
            ids.setdefault(json.loads(body)["request_id"], set()).add(headers["x-fal-webhook-delivery-id"])
        assert len(ids["a"]) == 1 and len(ids["b"]) == 1 and ids["a"] != ids["b"]
        assert ids["b"] == {claimed_b["delivery_id"]}
        assert {r.request_id: r.status for r in rows(factory)} == {"a": DELIVERED, "b": DELIVERED}
    finally:
        receiver.close()


class HangingReceiver:
    """Accepts connections on 127.0.0.1 and never answers; close() ends them."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.conns = []
        self._stop = threading.Event()

        def accept():
            self.sock.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    self.conns.append(self.sock.accept()[0])
                except OSError:
                    continue

        self.thread = threading.Thread(target=accept, daemon=True)
        self.thread.start()

    def close(self):
        self._stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.asyncio
async def test_hanging_receiver_does_not_delay_another_host(tmp_path):
    """40 webhooks to a receiver that never answers (127.0.0.1) hold at most
    the per-host cap; a webhook to another host ([::1]) is delivered within
    seconds while those are still stuck."""
    import http.server
    import socket
    import threading

    class V6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    hanging = HangingReceiver()
    normal = V6Server(("::1", 0), Handler)
    threading.Thread(target=normal.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    settings, _, factory, keys = setup(tmp_path, webhook_concurrency=8, webhook_per_host_concurrency=3)
    sender = WebhookSender(factory, keys, settings, timeout=60, poll_interval=0.2)
    try:
        now = __import__("time").time()
        for i in range(40):
            enqueue(factory, hanging.url, now=now - 10, request_id=f"hang{i}")  # older: first in line
        sender.start()
        await asyncio.sleep(0.5)
        enqueue(factory, f"http://[::1]:{normal.server_address[1]}/hook", now=now, request_id="normal")
        sender.notify()
        t0 = __import__("time").monotonic()
        while not got and __import__("time").monotonic() - t0 < 5:
            await asyncio.sleep(0.05)
        assert got and json.loads(got[0])["request_id"] == "normal"
        assert len(hanging.conns) == 3  # the per-host cap, still hanging
        statuses = {r.request_id: r.status for r in rows(factory)}
        assert len(got) == 1
        assert all(statuses[f"hang{i}"] == PENDING for i in range(40))
    finally:
        await sender.stop()
        hanging.close()
        normal.shutdown()
        normal.server_close()


@pytest.mark.asyncio
async def test_many_rows_for_a_hanging_host_do_not_fill_the_claim(tmp_path, receiver):
    """120 due webhooks to a receiver that never answers, more than the claim's
    batch of 50 and all older than the one to a healthy receiver: the healthy
    one is still sent at once, and the hanging host never holds more than its
    cap of connections."""
    import time

    hanging = HangingReceiver()
    settings, _, factory, keys = setup(tmp_path, webhook_concurrency=32, webhook_per_host_concurrency=4)
    sender = WebhookSender(factory, keys, settings, timeout=60, poll_interval=30.0)
    assert sender.batch < 120
    try:
        now = time.time()
        for i in range(120):
            enqueue(factory, hanging.url, now=now - 100 + i * 0.1, request_id=f"hang{i}")  # older: first in line
        sender.start()
        deadline = time.monotonic() + 5
        while len(hanging.conns) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(hanging.conns) == 4  # the hanging host is at its cap
        # the healthy receiver is "localhost", another host name on the same loopback
        enqueue(factory, receiver.url.replace("127.0.0.1", "localhost"), now=now, request_id="healthy")
        t0 = time.monotonic()
        sender.notify()
        assert await asyncio.to_thread(receiver.event.wait, 5), "the healthy host's webhook was held up"
        assert time.monotonic() - t0 < 5
        assert json.loads(receiver.got[0][1])["request_id"] == "healthy"
        await asyncio.sleep(0.5)
        assert len(hanging.conns) == 4  # still only the cap's connections
        statuses = {r.request_id: r.status for r in rows(factory)}
        assert statuses["healthy"] == DELIVERED
        assert sum(1 for i in range(120) if statuses[f"hang{i}"] == PENDING) == 120
    finally:
        await sender.stop()
        hanging.close()


def test_claim_skips_capped_hosts_in_the_query(tmp_path, any_db_url):
    """The claim alone (no sockets), on SQLite and PostgreSQL: with
    hanging.example at its cap through the in-flight counts, 200 older rows
    for it do not hide other hosts' rows."""
    settings, engine, factory, keys = setup(tmp_path, webhook_concurrency=32, webhook_per_host_concurrency=4)
    if any_db_url:
        engine = make_engine(any_db_url)
        Base.metadata.create_all(engine)
        factory = make_session_factory(engine)
    clock = Clock()
    sender = sender_for(settings, factory, keys, clock)
    for i in range(200):
        enqueue(factory, "https://hanging.example/hook", now=clock.t - 1000 + i, request_id=f"h{i}")
    for name in ("a", "b", "c"):
        enqueue(factory, f"https://{name}.example/hook", now=clock.t - 1, request_id=name)
    claimed = sender._claim(clock.t, room=32, busy={"hanging.example": 4})
    assert sorted(c["request_id"] for c in claimed) == ["a", "b", "c"]
    # with no send in flight it takes its cap from the hanging host and the others
    clock.t += 1000  # past the leases
    claimed = sender._claim(clock.t, room=32, busy={})
    hosts = [c["host"] for c in claimed]
    assert hosts.count("hanging.example") == 4 and {"a.example", "b.example", "c.example"} <= set(hosts)
    engine.dispose()


@pytest.mark.asyncio
async def test_outbox_made_before_delivery_ids_is_upgraded(tmp_path, receiver):
    from sqlalchemy import text

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    with store.engine.begin() as conn:  # the table as older versions made it
        conn.execute(text("ALTER TABLE ccsr_webhook_outbox DROP COLUMN delivery_id"))
        conn.execute(text("ALTER TABLE ccsr_webhook_outbox DROP COLUMN host"))
        # a row an older version left pending
        conn.execute(text("INSERT INTO ccsr_webhook_outbox (request_id, user_id, url, body, status, attempts, "
                          "next_attempt_at, created_at) VALUES ('r0', 'u', :url, '{}', 'pending', 0, 0, 0)"),
                     {"url": receiver.url})
    app = types.SimpleNamespace(state=types.SimpleNamespace(settings=Settings(data_dir=tmp_path, allow_private_urls=True), store=store))
    sender = await start_for_app(app)
    try:
        with store.session() as s:
            enqueue_webhook(s, "r1", "u", receiver.url, webhook_body("r1", ok=True, payload={}))
            s.commit()
        sender.notify()
        deadline = asyncio.get_running_loop().time() + 10
        while len(receiver.got) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert len(receiver.got) == 2
        assert all(h["x-fal-webhook-delivery-id"] for h, _ in receiver.got)
        assert {r.request_id: r.host for r in rows(store.session)} == {"r0": "127.0.0.1", "r1": "127.0.0.1"}
    finally:
        await stop_for_app(app)
        store.close()


class SlowReceiver:
    """Answers 200 after ``delay`` seconds; counts the POSTs it got."""

    def __init__(self, delay: float):
        self.delay = delay
        self.got: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                __import__("time").sleep(outer.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.asyncio
async def test_webhook_timeout_is_a_setting(tmp_path):
    """A receiver slower than webhook_timeout gets the delivery again (its
    answer came too late); with the setting above its time it gets it once."""
    slow = SlowReceiver(delay=1.5)
    try:
        settings, _, factory, keys = setup(tmp_path, webhook_timeout=0.5)
        clock = Clock()
        sender = sender_for(settings, factory, keys, clock)
        assert sender.timeout == 0.5 and sender.lease >= 2 * sender.timeout
        enqueue(factory, slow.url, now=clock.t)
        assert await sender.run_once() == 1
        (row,) = rows(factory)
        assert row.status == PENDING and row.attempts == 1  # too slow: to be tried again

        (tmp_path / "b").mkdir()
        settings2, _, factory2, keys2 = setup(tmp_path / "b", webhook_timeout=5.0)
        sender2 = sender_for(settings2, factory2, keys2, clock)
        enqueue(factory2, slow.url, now=clock.t, request_id="req-2")
        assert await sender2.run_once() == 1
        (row,) = rows(factory2)
        assert row.status == DELIVERED and row.attempts == 1
    finally:
        slow.close()


@pytest.mark.asyncio
async def test_the_apps_outbox_and_leases_run_on_the_databases_clock(tmp_path, monkeypatch):
    """Issue 24, point 3: a server whose clock is 1000 s ahead neither delays
    its webhooks by that much nor takes other senders' leases for passed."""
    import time

    from ccsr.jobs.dbclock import db_now

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 1000)
    app = types.SimpleNamespace(state=types.SimpleNamespace(settings=Settings(data_dir=tmp_path), store=store))
    sender = await start_for_app(app)
    try:
        await sender.stop()  # only its clock is looked at here
        with store.session() as s:
            enqueue_webhook(s, "r1", "u", "http://hooks.example/x", webhook_body("r1", ok=True, payload={}))
            s.commit()
        (row,) = rows(store.session)
        assert abs(row.next_attempt_at - real()) < 2 and abs(sender.clock() - db_now(store.engine)) < 1
        assert [c["request_id"] for c in sender._claim(sender.clock())] == ["r1"]
        assert abs(rows(store.session)[0].next_attempt_at - (real() + sender.lease)) < 2
    finally:
        await stop_for_app(app)
        store.close()
