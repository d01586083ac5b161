"""Benchmark: how long a submitted request waits before it starts, now that
dispatch claims from the database (a script, not a test).

Starts real ``ccsr serve`` subprocesses with the fake engine (0 s per step)
and submits ``--jobs`` requests one after another, each after the previous
one completed, so every submit finds an idle worker. The wait is the stored
``started_at - created_at`` (both written by the server). Measured for:

1. ``baseline``: one server running the sources given by ``--baseline-src``
   (e.g. the main branch's ``src``: dispatch from the in-memory queue);
2. ``one-node``: one server of this tree (dispatch through the claim);
3. ``two-nodes``: two servers of this tree on one database, submits sent
   round-robin (each job may start on either).

Medians and ratios against the baseline are printed and saved to
benchmarks/results/lease-<database>.json with the machine and load average.

    python benchmarks/bench_lease.py --baseline-src /path/to/main/src [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
Q = "/queue/fal-ai/ccsr"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SRC))

from machine_info import machine  # noqa: E402


def png_data_uri() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def servers(n: int, src: Path, data_dir: Path, db_url: str):
    procs, bases = [], []
    env = {**os.environ, "PYTHONPATH": str(src), "CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory",
           "CCSR_FAKE_STEP_SECONDS": "0", "CCSR_APPS": "fal-ai/ccsr", "CCSR_DATABASE_URL": db_url,
           "CCSR_API_KEYS": ""}
    try:
        for i in range(n):
            port = free_port()
            cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--data-dir", str(data_dir), "--device", "cpu", "--log-level", "warning"]
            log = open(data_dir / f"server-{i}-{port}.log", "ab")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs):
            deadline = time.time() + 120
            while True:
                assert proc.poll() is None, f"server exited; see {data_dir}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                assert time.time() < deadline, "server not ready"
                time.sleep(0.2)
        yield bases
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def measure(bases: list[str], jobs: int, db_url: str) -> dict:
    from ccsr.jobs.store import JobStore

    image = png_data_uri()
    clients = [httpx.Client(base_url=b, timeout=30) for b in bases]
    ids = []
    try:
        for i in range(jobs + 3):  # the first 3 warm up (imports, connections)
            c = clients[i % len(clients)]
            sub = c.post(Q, json={"image_url": image, "steps": 3, "scale": 2}).json()
            while c.get(sub["status_url"]).json()["status"] != "COMPLETED":
                time.sleep(0.005)
            if i >= 3:
                ids.append(sub["request_id"])
    finally:
        for c in clients:
            c.close()
    store = JobStore(db_url)
    try:
        store.create_all()  # the baseline's table lacks this tree's columns
        waits = [(r.started_at - r.created_at) * 1000 for r in (store.get(rid) for rid in ids)]
    finally:
        store.close()
    return {"jobs": len(waits), "median_wait_ms": round(statistics.median(waits), 2),
            "p90_wait_ms": round(sorted(waits)[int(0.9 * (len(waits) - 1))], 2), "max_wait_ms": round(max(waits), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-src", type=Path, required=True, help="src folder of the baseline (e.g. main's)")
    ap.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--jobs", type=int, default=40)
    args = ap.parse_args()
    load = os.getloadavg()
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": {**machine(), "load_average_at_start": [round(x, 2) for x in load]},
                     "database": args.database, "what": "submit -> start wait (started_at - created_at), idle worker"}
    runs = [("baseline", args.baseline_src, 1), ("one-node", SRC, 1)]
    if args.database == "postgresql":
        runs.append(("two-nodes", SRC, 2))  # SQLite serves one node
    for name, src, n in runs:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            if args.database == "postgresql":
                from ccsr.testing import temporary_postgres_database

                db_url = stack.enter_context(temporary_postgres_database())
            else:
                db_url = f"sqlite:///{Path(tmp) / 'ccsr.db'}"
            with servers(n, src, Path(tmp), db_url) as bases:
                results[name] = measure(bases, args.jobs, db_url)
        print(name, results[name], flush=True)
    base = results["baseline"]["median_wait_ms"]
    for name, _, _ in runs[1:]:
        results[name]["median_ratio_vs_baseline"] = round(results[name]["median_wait_ms"] / base, 2) if base else None
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = HERE / "results" / f"lease-{args.database}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
