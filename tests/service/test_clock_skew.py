"""Two ``ccsr serve`` processes on one PostgreSQL database whose clocks
disagree (issue 24, point 3).

Each server process runs with its ``time.time`` shifted (the launcher below
replaces it before anything is imported: the whole process sees a skewed
wall clock, as on a machine without NTP). Leases are decided on the
database's clock, so neither server takes the other's running jobs for dead:
every request completes, each run once, and the skewed server says at start
that its clock is off.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time

import httpx
import pytest

from ccsr.testing import temporary_postgres_database

from svc_helpers import free_port, png_data_uri, stop_servers, wait_ready

Q = "/queue/fal-ai/ccsr"
#: 60 steps of the fake engine at 0.02 s: runs of about 1.2 s, longer than a
#: heartbeat (0.25 s), so a lease wrongly seen as passed is noticed mid-run.
RUN = {"steps": 60, "t_max": 1.0, "t_min": 0.0, "scale": 2}

#: Starts ``ccsr serve`` with the process's wall clock shifted by argv[1] seconds.
LAUNCH = """
import sys, time
_skew, _real = float(sys.argv[1]), time.time
time.time = lambda: _real() + _skew
sys.argv = ["ccsr"] + sys.argv[2:]
from ccsr.cli import main
main()
"""


def _start(port: int, data_dir, db_url: str, run_log, name: str, skew: float):
    env = {
        **os.environ,
        "CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory",
        "CCSR_FAKE_STEP_SECONDS": "0.02",
        "CCSR_FAKE_RUN_LOG": str(run_log),
        "CCSR_APPS": "fal-ai/ccsr",
        "CCSR_DATABASE_URL": db_url,
        "CCSR_API_KEYS": "",
        "CCSR_LEASE_SECONDS": "1",
        "CCSR_HEARTBEAT_INTERVAL": "0.25",
        "CCSR_POLL_INTERVAL": "0.1",
    }
    cmd = [sys.executable, "-c", LAUNCH, str(skew), "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--device", "cpu", "--log-level", "warning"]
    log = open(os.path.join(data_dir, name), "ab")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _runs(run_log) -> list[tuple[int, int]]:
    if not os.path.exists(run_log):
        return []
    with open(run_log) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


@pytest.fixture
def skewed_servers(tmp_path):
    """Server 0 on time, server 1 with its clock 30 s ahead."""
    with temporary_postgres_database() as url:
        run_log = tmp_path / "runs.txt"
        ports = [free_port(), free_port()]
        procs = [_start(p, tmp_path, url, run_log, f"server-{i}.log", skew)
                 for i, (p, skew) in enumerate(zip(ports, (0.0, 30.0)))]
        try:
            bases = [f"http://127.0.0.1:{p}" for p in ports]
            for b, pr in zip(bases, procs):
                wait_ready(b, pr, timeout=120)
            yield bases, run_log, [tmp_path / f"server-{i}.log" for i in range(2)]
        finally:
            stop_servers(procs)


def test_every_request_completes_once_with_skewed_clocks(skewed_servers):
    (a, b), run_log, logs = skewed_servers
    n = 8
    with httpx.Client(base_url=a, timeout=30) as ca, httpx.Client(base_url=b, timeout=30) as cb:
        clients = [ca, cb]
        ids = []
        for i in range(n):
            r = clients[i % 2].post(Q, json={"image_url": png_data_uri(), "seed": 500 + i, **RUN})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        deadline = time.time() + 60
        for rid in ids:
            while (st := ca.get(f"{Q}/requests/{rid}/status").json())["status"] != "COMPLETED":
                assert time.time() < deadline, st
                time.sleep(0.05)
            assert "error" not in st, st["error"]  # not "interrupted 3 times ... by a server restart or kill"
    runs = _runs(run_log)
    per_seed = collections.Counter(seed for seed, _ in runs)
    assert per_seed == {500 + i: 1 for i in range(n)}, per_seed  # each ran exactly once
    assert len({pid for _, pid in runs}) == 2  # both servers ran some
    # the skewed server said so at start; the other did not
    assert "clock is 30.0 s ahead of the database's" in logs[1].read_text()
    assert "clock is" not in logs[0].read_text()
