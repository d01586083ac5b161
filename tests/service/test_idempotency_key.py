"""``Idempotency-Key`` on submit (issue 11, point 9), over HTTP on SQLite
and PostgreSQL: a retried submit returns the first request."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app

Q = "/queue/fal-ai/ccsr"
KEYS = ["alice-key", "bob-key"]


@pytest.fixture
def server(tmp_path, any_db_url):
    settings = Settings(data_dir=tmp_path, database_url=any_db_url, api_keys=KEYS)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": "Key alice-key"}) as client:
            yield client, app


def _post(client, key=None, steps=4, **headers):
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(Q, json={"image_url": png_data_uri(), "steps": steps}, headers=headers)


def test_same_key_same_body_returns_the_first_request(server):
    client, _ = server
    first = _post(client, "retry-1")
    second = _post(client, "retry-1")
    assert first.status_code == second.status_code == 200
    assert first.json()["request_id"] == second.json()["request_id"]
    assert first.json()["status_url"] == second.json()["status_url"]
    assert _post(client).json()["request_id"] != first.json()["request_id"]  # no key: a new request


def test_same_key_different_body_is_422(server):
    client, _ = server
    assert _post(client, "k2", steps=4).status_code == 200
    r = _post(client, "k2", steps=6)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_keys_are_per_api_key(server):
    client, _ = server
    a = _post(client, "shared").json()["request_id"]
    b = _post(client, "shared", Authorization="Key bob-key").json()["request_id"]
    assert a != b


def test_concurrent_retries_make_one_request(server):
    client, app = server
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _post(client, "burst"), range(6)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["request_id"] for r in answers}) == 1


def test_a_refused_submit_does_not_burn_the_key(server):
    client, _ = server
    bad = client.post(Q, json={"image_url": png_data_uri(), "steps": 2}, headers={"Idempotency-Key": "k3"})
    assert bad.status_code == 422
    # The same (invalid) body again is refused again, not replayed as a request
    assert client.post(Q, json={"image_url": png_data_uri(), "steps": 2}, headers={"Idempotency-Key": "k3"}).status_code == 422
    assert _post(client, "k3").status_code == 200


def test_a_malformed_key_is_422(server):
    client, _ = server
    r = _post(client, "x" * 300)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_a_key_left_by_a_killed_submit_is_reusable_after_a_short_bound(server):
    """A server killed between claiming a key and recording its request leaves
    a row without a request id. Retries (on any server sharing the database)
    get 409 only while the row is fresh; once it is STALE_PENDING old the key is
    taken over and the retry is queued, instead of 409 for the whole ttl."""
    from sqlalchemy import update

    from ccsr.jobs.idempotency import STALE_PENDING, IdempotencyRecord, NEW

    client, app = server
    keys = app.state.idempotency
    owner = app.state.keyring.owner_for("Key alice-key")
    assert keys.claim(owner, "crashed", "a different body, as if half-written").outcome == NEW  # then kill -9
    with keys.engine.begin() as conn:
        conn.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == "crashed")
                     .values(created_at=IdempotencyRecord.created_at - STALE_PENDING - 1,
                             touched_at=IdempotencyRecord.touched_at - STALE_PENDING - 1))
    first = _post(client, "crashed")
    assert first.status_code == 200, first.text
    again = _post(client, "crashed")
    assert again.json()["request_id"] == first.json()["request_id"]


@pytest.fixture
def quick_expiry_server(tmp_path, any_db_url):
    """A server whose pending keys expire after 1 s without a sign of life."""
    settings = Settings(data_dir=tmp_path, database_url=any_db_url, api_keys=KEYS, idempotency_pending_timeout=1)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": "Key alice-key"}) as client:
            yield client, app


def test_a_key_left_pending_by_a_killed_submit_is_reusable(quick_expiry_server, monkeypatch):
    # kill -9 between the key's claim and its completion: the row keeps no
    # request id. Before issue 24 every retry waited 10 s, then got 409 for 24 h.
    client, app = quick_expiry_server
    keys = app.state.idempotency
    monkeypatch.setattr(keys, "complete", lambda *a, **k: True)  # the server "dies" before writing it
    assert _post(client, "crashed").status_code == 200
    monkeypatch.undo()
    t0 = time.monotonic()
    retry = _post(client, "crashed")
    assert retry.status_code == 200, retry.text
    assert time.monotonic() - t0 < 5  # about idempotency_pending_timeout, not the 10 s wait and a 409
    assert _post(client, "crashed").json()["request_id"] == retry.json()["request_id"]  # the key holds again


def test_a_slow_submit_keeps_its_key(quick_expiry_server, monkeypatch):
    # Renewed while it runs: a submit slower than idempotency_pending_timeout
    # is not taken for dead, and a concurrent retry gets its request.
    client, _ = quick_expiry_server
    from ccsr.service.routes_queue import QueueAPI

    original = QueueAPI.submit
    slow = {"first": True}

    async def slow_submit(self, *a, **k):
        if slow.pop("first", False):
            await asyncio.sleep(3)
        return await original(self, *a, **k)

    monkeypatch.setattr(QueueAPI, "submit", slow_submit)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, client, "slow")
        time.sleep(1.8)
        retry = pool.submit(_post, client, "slow")
        answers = [first.result(), retry.result()]
    assert [r.status_code for r in answers] == [200, 200]
    assert answers[0].json()["request_id"] == answers[1].json()["request_id"]
