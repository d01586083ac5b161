"""Servers sharing a database must share a blob store (issue 24, point 6).

Two servers on one PostgreSQL with separate local data directories used to
start without a word, and 19 of 20 jobs then failed with a 422 blaming the
client (the input was in the other server's directory). Now each server
writes a marker into its blob store and records it in the database; a server
whose store does not hold the marker of another live server refuses to start,
saying why.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import update

from ccsr.executors.thread import ThreadExecutor
from ccsr.service.app import create_app
from ccsr.service.store_check import ServerRecord, StoreMismatch
from ccsr.settings import Settings
from ccsr.testing import FakeEngine, temporary_postgres_database

from svc_helpers import free_port, png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


@pytest.fixture
def pg_url():
    with temporary_postgres_database() as url:
        yield url


def _app(data_dir, db_url):
    return create_app(Settings(data_dir=data_dir, database_url=db_url), executor=ThreadExecutor(FakeEngine(0.01)))


async def _start_and_stop(app) -> None:
    async with app.router.lifespan_context(app):
        pass


def test_a_server_with_another_local_store_refuses_to_start(tmp_path, pg_url):
    first = _app(tmp_path / "a", pg_url)
    with serve_app(first):
        second = _app(tmp_path / "b", pg_url)
        with pytest.raises(StoreMismatch) as info:
            asyncio.run(_start_and_stop(second))
    message = str(info.value)
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message  # both stores named
    assert "same database" in message and "s3_bucket" in message  # what is wrong, and the way out


def test_servers_sharing_a_store_start_and_share_the_work(tmp_path, pg_url):
    first, second = _app(tmp_path, pg_url), _app(tmp_path, pg_url)
    with serve_app(first) as a, serve_app(second) as b:
        with httpx.Client(timeout=30) as client:
            subs = [client.post(base + Q, json={"image_url": png_data_uri(), "steps": 4}).json()
                    for base in (a, b, a, b)]
            for sub in subs:
                assert "error" not in wait_status(client, sub["status_url"], "COMPLETED")
        tokens = {first.state.store_presence.token, second.state.store_presence.token}
        with first.state.store.session() as s:
            assert {r.token for r in s.query(ServerRecord)} == tokens
    # a clean stop leaves no row and no marker behind
    with first.state.store.engine.connect() as conn:
        assert conn.execute(ServerRecord.__table__.select()).all() == []
    assert not [k for k in first.state.storage.blobs.keys() if k.startswith("servers")]


def test_a_dead_servers_record_stops_counting_after_its_lease(tmp_path, pg_url):
    """A server killed while using another store (a machine moved to S3, say)
    blocks a different store only while it could still be alive: lease_seconds
    (10 s here) after it was last seen."""
    from ccsr.jobs.dbclock import db_now
    from ccsr.jobs.store import JobStore

    jobs = JobStore(pg_url)
    jobs.create_all()
    with jobs.engine.begin() as conn:
        now = db_now(conn)
        conn.execute(ServerRecord.__table__.insert().values(token="ab" * 16, node="killed-node", host="elsewhere",
                                                            store="local directory /elsewhere/blobs",
                                                            started_at=now - 60, last_seen=now - 5))
    with pytest.raises(StoreMismatch, match="killed-node"):
        asyncio.run(_start_and_stop(_app(tmp_path / "b", pg_url)))
    with jobs.engine.begin() as conn:
        conn.execute(update(ServerRecord).values(last_seen=ServerRecord.last_seen - 6))  # 11 s ago
    asyncio.run(_start_and_stop(_app(tmp_path / "b", pg_url)))
    jobs.close()


def test_ccsr_serve_says_why_it_refuses(tmp_path, pg_url):
    first = _app(tmp_path / "a", pg_url)
    with serve_app(first):
        env = {**os.environ, "CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory", "CCSR_APPS": "fal-ai/ccsr",
               "CCSR_DATABASE_URL": pg_url, "CCSR_API_KEYS": ""}
        cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
               "--data-dir", str(tmp_path / "b"), "--device", "cpu", "--log-level", "warning"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "same database" in last, done.stderr[-2000:]
