"""Runs cut short by a server kill are interruptions, not failed attempts
(issue 11 point 8), and a job whose server still holds its lease is left
alone (issue 8 point 3). Rows are put in the state a killed server leaves them
in, then a server starts on the database. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from sqlalchemy import update

from ccsr.executors.thread import ThreadExecutor
from ccsr.jobs.models import Job
from ccsr.jobs.store import JobStore
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import free_port, png_data_uri, serve_app, wait_status

Q = "/queue/fal-ai/ccsr"


def _set(store: JobStore, rid: str, **values) -> None:
    with store.session() as s, s.begin():
        s.execute(update(Job).where(Job.request_id == rid).values(**values))


def test_server_kills_are_counted_apart_and_capped(tmp_path, any_db_url):
    settings = Settings(data_dir=tmp_path, database_url=any_db_url, apps="fal-ai/ccsr",
                        heartbeat_interval=0.3, lease_seconds=1.0, poll_interval=0.1, max_interruptions=3)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.1)))
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        blocker = client.post(Q, json={"image_url": png_data_uri(), "steps": 300}).json()
        wait_status(client, blocker["status_url"], "IN_PROGRESS")
        subs = {name: client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json()
                for name in ("capped", "second", "third", "alive")}
        client.put(blocker["cancel_url"])
        wait_status(client, blocker["status_url"], "COMPLETED")
    store = app.state.store
    now = time.time()
    rid = {name: s["request_id"] for name, s in subs.items()}
    # as left by servers killed with kill -9 (leases passed), and one still held by a live server
    _set(store, rid["capped"], interruptions=3)
    _set(store, rid["second"], status="running", claimed_by="dead-1", lease_until=now - 1, attempts=1, interruptions=1)
    _set(store, rid["third"], status="running", claimed_by="dead-2", lease_until=now - 1, attempts=1, interruptions=2)
    _set(store, rid["alive"], status="running", claimed_by="alive-node", lease_until=now + 8, attempts=1)

    app2 = create_app(settings, executor=ThreadExecutor(FakeEngine(0.0)))
    with serve_app(app2) as base, httpx.Client(base_url=base) as client:
        url = {name: f"{Q}/requests/{r}/status" for name, r in rid.items()}
        # the live server's job is not taken while its lease holds
        assert client.get(url["alive"]).json()["status"] == "IN_PROGRESS"
        assert store.get(rid["alive"]).claimed_by == "alive-node"
        st = wait_status(client, url["capped"], "COMPLETED", timeout=20, logs=1)
        assert st["error_type"] == "internal_server_error", st
        assert "interrupted 3 times" in st["error"] and "max_interruptions" in st["error"]
        st = wait_status(client, url["third"], "COMPLETED", timeout=20, logs=1)
        assert "interrupted 3 times" in st["error"], st  # its third interruption was the last
        st = wait_status(client, url["second"], "COMPLETED", timeout=20, logs=1)
        assert "error" not in st, st  # two kills do not fail a healthy request
        msgs = [l["message"] for l in st["logs"]]
        assert "request started (after 2 server interruptions)" in msgs and not any("attempt 2" in m for m in msgs)
        rec = store.get(rid["second"])
        assert (rec.attempts, rec.interruptions) == (1, 2)
        # the live server's job is recovered by the periodic check once its lease has passed
        st = wait_status(client, url["alive"], "COMPLETED", timeout=20, logs=1)
        assert "error" not in st, st
        assert time.time() >= now + 8
        assert store.get(rid["alive"]).interruptions == 1


def test_kill_9_loses_no_log_line_older_than_the_flush_interval(tmp_path, any_db_url):
    """Lines a status poll showed more than log_flush_interval (0.5 s) before
    a kill -9 are in the database afterwards (slack: 0.5 s for a loaded CI box)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory",
           "CCSR_FAKE_STEP_SECONDS": "0.03", "CCSR_APPS": "fal-ai/ccsr", "CCSR_API_KEYS": ""}
    cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(tmp_path), "--device", "cpu", "--log-level", "warning"]
    if any_db_url:
        cmd += ["--database-url", any_db_url]
    with open(tmp_path / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        seen: dict[str, float] = {}  # line -> when a poll first showed it
        with httpx.Client(base_url=base, timeout=10) as c:
            sub = c.post(Q, json={"image_url": png_data_uri(), "steps": 1000, "t_max": 1.0, "t_min": 0.0}).json()
            while sum(1 for m in seen if m.startswith("step ")) < 60:
                now = time.time()
                st = c.get(sub["status_url"], params={"logs": 1}).json()
                assert st["status"] != "COMPLETED", st
                for line in st["logs"] or []:
                    seen.setdefault(line["message"], now)  # "step N/1000": unique
                time.sleep(0.02)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = JobStore(any_db_url or f"sqlite:///{tmp_path / 'ccsr.db'}")
    try:
        stored = {r.message for r in store.logs(sub["request_id"])}
    finally:
        store.close()
    old = [m for m, t in seen.items() if t < killed_at - 1.0]
    assert len(old) >= 20  # the check covers many lines
    missing = [m for m in old if m not in stored]
    assert not missing, missing[:5]
