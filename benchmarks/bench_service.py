"""Benchmark of ``ccsr serve``'s queue (a script, not a test).

Starts a real ``ccsr serve`` subprocess and measures, over HTTP:

1. status polling while a request runs: ``--pollers`` clients (default 100)
   each polling one status URL at ``--rate`` Hz (default 10) for
   ``--duration`` seconds; throughput achieved and latency percentiles. The
   pollers run in several processes so the load generator is not the limit.
2. submit latency: ``--submits`` sequential submits.
3. a burst of ``--burst`` submits (default 1000) from ``--concurrency``
   connections; then waits until every one is COMPLETED and checks that none
   was lost or failed (status of each, and the database's counts).

``--engine fake`` (default) runs workers with a fake engine that sleeps
``--step-seconds`` per step, so the queue, not the model, is measured;
``--engine tiny`` runs the real engine on a random tiny checkpoint.
Results go to benchmarks/results/service-<engine>-<database>.{json,md}.

    python benchmarks/bench_service.py [--database sqlite|postgresql] [--engine fake|tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURES = REPO / "tests" / "fixtures"  # in the repository: nothing beside it is needed
sys.path.insert(0, str(HERE))
from serving import wait_until_ready  # noqa: E402
Q = "/queue/fal-ai/ccsr"


def png_data_uri(w: int = 32, h: int = 32) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 80, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def summary_ms(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else None,
        "p50_ms": round(pct(values, 50) * 1000, 2),
        "p95_ms": round(pct(values, 95) * 1000, 2),
        "p99_ms": round(pct(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else None,
    }


# --- the server ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, data_dir: Path, db_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
           "--log-level", "warning", "--device", "cpu"]
    env = dict(os.environ)
    if args.engine == "fake":
        cmd += ["--engine-factory", "ccsr.testing:fake_engine_factory"]
        env["CCSR_FAKE_STEP_SECONDS"] = str(args.step_seconds)
    else:
        from ccsr.models.ccsr_v1.networks.config import CCSRConfig
        from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint

        cfg = FIXTURES / "ccsr-tiny.yaml"
        ckpt = write_random_checkpoint(CCSRConfig.from_yaml(cfg), data_dir / "tiny.safetensors", seed=0)
        cmd += ["--weights", str(ckpt), "--config", str(cfg)]
    if db_url:
        cmd += ["--database-url", db_url]
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, base, data_dir / "server.log")
    return proc, base


# --- 1. polling ----------------------------------------------------------------------------
class _KeepAliveGet:
    """A minimal HTTP/1.1 keep-alive GET client on asyncio streams.

    httpx costs about a millisecond of CPU per request; a hundred pollers at
    10 Hz would then measure the load generator, not the server, on a small
    machine. This one only writes a request line and reads the status and
    Content-Length body."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await self.reader.readexactly(length)
        return code, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _pollers(url: str, n: int, rate: float, duration: float) -> dict:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = parts.path + "?logs=1"
    latencies: list[float] = []
    lateness: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    end = time.perf_counter() + duration

    async def one(offset: float) -> None:
        nonlocal errors
        conn = _KeepAliveGet(parts.hostname, parts.port)
        await asyncio.sleep(offset)
        nxt = time.perf_counter()
        while nxt < end:
            t0 = time.perf_counter()
            lateness.append(max(0.0, t0 - nxt))
            try:
                code, body = await conn.get(target)
                latencies.append(time.perf_counter() - t0)
                if code >= 400:
                    errors += 1
                else:
                    s = json.loads(body)["status"]
                    statuses[s] = statuses.get(s, 0) + 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn.close()
                conn = _KeepAliveGet(parts.hostname, parts.port)
            nxt += 1 / rate
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
        conn.close()

    await asyncio.gather(*(one(i / n / rate) for i in range(n)))
    return {"latencies": latencies, "errors": errors, "statuses": statuses, "lateness": lateness}


def _poller_process(url: str, n: int, rate: float, duration: float, out: mp.Queue) -> None:
    out.put(asyncio.run(_pollers(url, n, rate, duration)))


def bench_polling(base: str, args) -> dict:
    c = httpx.Client(base_url=base, timeout=30)
    if args.engine == "fake" and args.duration > 333 * args.step_seconds - 2:
        raise SystemExit("--duration must be shorter than the polled request (333 * --step-seconds)")
    # 1000 steps = 333 network evaluations: long enough to poll throughout
    body = {"image_url": png_data_uri(64, 64), "steps": 1000}
    if args.engine == "tiny":
        body.update(tile_diffusion="gaussian", tile_diffusion_size=64, tile_diffusion_stride=64)
    sub = c.post(Q, json=body).json()
    while c.get(sub["status_url"]).json()["status"] != "IN_PROGRESS":
        time.sleep(0.05)
    procs = max(1, min(args.poll_processes, args.pollers))
    per = [args.pollers // procs + (1 if i < args.pollers % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    ps = [ctx.Process(target=_poller_process, args=(sub["status_url"], k, args.rate, args.duration, q)) for k in per]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    parts = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    lat = [x for p in parts for x in p["latencies"]]
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    still_running = c.get(sub["status_url"]).json()["status"] == "IN_PROGRESS"
    c.put(sub["cancel_url"])
    c.close()
    target = args.pollers * args.rate
    return {
        "pollers": args.pollers, "rate_hz": args.rate, "duration_s": args.duration,
        "target_rps": target, "achieved_rps": round(len(lat) / args.duration, 1),
        "errors": sum(p["errors"] for p in parts), "statuses": statuses,
        "request_still_running_at_end": still_running, "wall_s": round(wall, 2),
        "latency": summary_ms(lat),
        # how late pollers sent their requests (the load generator falling behind)
        "send_lateness": summary_ms([x for p in parts for x in p["lateness"]]),
    }


# --- 2. submit latency --------------------------------------------------------------------
def bench_submit_latency(base: str, args) -> dict:
    body = {"image_url": png_data_uri(), "steps": 4}
    lat = []
    ids = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(args.submits):
            t0 = time.perf_counter()
            r = c.post(Q, json=body)
            lat.append(time.perf_counter() - t0)
            ids.append(r.json()["request_id"])
        wait_all(c, ids, timeout=600)
    return {"submits": args.submits, "latency": summary_ms(lat)}


def wait_all(c: httpx.Client, ids: list[str], timeout: float) -> dict:
    deadline = time.time() + timeout
    outcome: dict[str, str] = {}
    pending = list(ids)
    while pending and time.time() < deadline:
        nxt = []
        for rid in pending:
            st = c.get(f"{Q}/requests/{rid}/status").json()
            if st["status"] == "COMPLETED":
                outcome[rid] = st.get("error_type") or "ok"
            else:
                nxt.append(rid)
        pending = nxt
        if pending:
            time.sleep(0.5)
    for rid in pending:
        outcome[rid] = "not finished"
    return outcome


# --- 3. burst ---------------------------------------------------------------------------------
async def _burst(base: str, n: int, concurrency: int) -> tuple[list[float], list[str], int]:
    body = {"image_url": png_data_uri(), "steps": 4}
    lat: list[float] = []
    ids: list[str] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one() -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(Q, json=body)
                    lat.append(time.perf_counter() - t0)
                    if r.status_code == 200:
                        ids.append(r.json()["request_id"])
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return lat, ids, errors


def bench_burst(base: str, args) -> dict:
    t0 = time.perf_counter()
    lat, ids, errors = asyncio.run(_burst(base, args.burst, args.concurrency))
    submit_wall = time.perf_counter() - t0
    with httpx.Client(base_url=base, timeout=30) as c:
        outcome = wait_all(c, ids, timeout=args.burst_timeout)
    done_wall = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for v in outcome.values():
        counts[v] = counts.get(v, 0) + 1
    return {
        "submitted": args.burst, "accepted": len(ids), "submit_errors": errors,
        "submit_wall_s": round(submit_wall, 2), "submit_rps": round(len(ids) / submit_wall, 1),
        "submit_latency": summary_ms(lat), "outcomes": counts,
        "all_completed_ok": counts.get("ok", 0) == args.burst, "drain_wall_s": round(done_wall, 2),
    }


# --- main ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--engine", choices=["fake", "tiny"], default="fake")
    ap.add_argument("--step-seconds", type=float, default=0.06,
                    help="fake engine time per network evaluation (a 1000-step request runs 333 of them)")
    ap.add_argument("--pollers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--poll-processes", type=int, default=2)
    ap.add_argument("--submits", type=int, default=200)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--burst-timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()

    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccsr-bench-")))
        db_url = None
        if args.database == "postgresql":
            from ccsr.testing import temporary_postgres_database

            db_url = stack.enter_context(temporary_postgres_database())
        proc, base = start_server(args, data_dir, db_url)
        try:
            results = {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                "engine": args.engine, "database": args.database,
            }
            print("polling ...", flush=True)
            results["polling"] = bench_polling(base, args)
            print(json.dumps(results["polling"], indent=1), flush=True)
            print("submit latency ...", flush=True)
            results["submit"] = bench_submit_latency(base, args)
            print(json.dumps(results["submit"], indent=1), flush=True)
            print(f"burst of {args.burst} ...", flush=True)
            results["burst"] = bench_burst(base, args)
            print(json.dumps(results["burst"], indent=1), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"service-{args.engine}-{args.database}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(render_md(results))
    print(f"wrote {stem}.json and .md")


def render_md(r: dict) -> str:
    p, s, b = r["polling"], r["submit"], r["burst"]
    return f"""# ccsr serve queue benchmark ({r['engine']} engine, {r['database']})

Measured {r['when']} on {r['machine']['cpus']} CPUs ({r['machine']['platform']}), server and load generator on
the same machine (load average at start {r['machine'].get('load_average_at_start', 'n/a')}: other work shared the CPUs). Engine: `{r['engine']}` (fake: workers sleep per step, so the queue is what is measured).

| measurement | result |
| --- | --- |
| status polling: {p['pollers']} pollers at {p['rate_hz']} Hz for {p['duration_s']} s, request running | {p['achieved_rps']} req/s of {p['target_rps']} targeted, {p['errors']} errors |
| polling latency p50 / p95 / p99 / max | {p['latency']['p50_ms']} / {p['latency']['p95_ms']} / {p['latency']['p99_ms']} / {p['latency']['max_ms']} ms |
| submit latency ({s['submits']} sequential) p50 / p95 / p99 | {s['latency']['p50_ms']} / {s['latency']['p95_ms']} / {s['latency']['p99_ms']} ms |
| burst: {b['submitted']} submits, {b['accepted']} accepted, {b['submit_errors']} errors | {b['submit_rps']} submits/s; latency p50 / p95 / p99 {b['submit_latency']['p50_ms']} / {b['submit_latency']['p95_ms']} / {b['submit_latency']['p99_ms']} ms |
| burst outcome | {b['outcomes']}; all completed: {b['all_completed_ok']}; drained in {b['drain_wall_s']} s |
"""


if __name__ == "__main__":
    main()
