"""Soak on the real shape: two servers, one PostgreSQL, blobs on S3, faults inside.

The traffic of ``soak.py`` (submits with and without Idempotency-Key, status
pollers at ``--rate`` Hz, SSE streams, uploads submitted by URL, cancels,
hostile bodies, slow connections) goes to two ``ccsr serve`` processes (fake
engine) that share one PostgreSQL database and one bucket on SeaweedFS (the
real S3 server of the tests), all on 127.0.0.1. Requests alternate between
the servers; pollers are split between them. Inside the run:

- at a third of the time, SeaweedFS is killed (SIGKILL) and started again on
  the same ports and data ``--s3-down`` seconds later;
- at two thirds, the second server is killed (SIGKILL) and started again on
  its port ``--server-down`` seconds later; while it is down, traffic goes to
  the first.

Checks: no 5xx but the documented 503 (a store or a server that is not ready),
no lost request (every accepted request reaches COMPLETED with the expected
result), and the first server's memory flat. Results:
``benchmarks/results/soak-cluster-postgresql-s3.json`` with the machine.

    python benchmarks/soak_cluster.py [--minutes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
import soak  # noqa: E402
from machine_info import machine  # noqa: E402
from s3_server import start_seaweedfs  # noqa: E402


class RoundRobin(httpx.AsyncBaseTransport):
    """Send each request to the next live server (as a load balancer would)."""

    def __init__(self, ports: list[int], down: set[int]):
        self.ports, self.down, self.turn = ports, down, 0
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        live = [p for p in self.ports if p not in self.down] or self.ports
        self.turn += 1
        request.url = request.url.copy_with(port=live[self.turn % len(live)])
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Cluster:
    """The two servers and SeaweedFS, each restartable in place."""

    def __init__(self, args, tmp: Path):
        self.args, self.tmp = args, tmp
        self.weed, self.s3, _ = start_seaweedfs(tmp / "seaweedfs")
        self.prefix = "soak-" + secrets.token_hex(4) + "/"
        self.ports = [soak.free_port(), soak.free_port()]
        self.procs: list[subprocess.Popen] = [self.start(i) for i in range(2)]
        self.down: set[int] = set()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CCSR_")}
        s3 = {f"CCSR_{k.upper()}": str(v) for k, v in self.s3.settings(self.prefix).items()}
        env.update(s3, CCSR_FAKE_STEP_SECONDS=str(self.args.step_seconds), CCSR_MAX_REQUEST_BODY_BYTES=str(soak.BODY_LIMIT),
                   CCSR_MAX_DATA_URI_BYTES=str(soak.BODY_LIMIT - 4096), CCSR_HEADER_TIMEOUT="5",
                   CCSR_DATABASE_URL=self.args.database_url, CCSR_PUBLIC_URL=f"http://127.0.0.1:{self.ports[0]}",
                   CCSR_APPS="fal-ai/ccsr")
        return env

    def start(self, i: int) -> subprocess.Popen:
        data = self.tmp / f"server{i}"
        data.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(self.ports[i]),
               "--data-dir", str(data), "--log-level", "warning", "--device", "cpu",
               "--engine-factory", "ccsr.testing:fake_engine_factory"]
        log = open(data / "server.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        soak.wait_until_ready(proc, f"http://127.0.0.1:{self.ports[i]}", data / "server.log", poll=0.3)
        return proc

    def restart_weed(self, down_s: float, events: list) -> None:
        args, cwd = self.weed.args, self.tmp / "seaweedfs"
        self.weed.send_signal(signal.SIGKILL)
        self.weed.wait(10)
        events.append({"t": time.time(), "event": "seaweedfs killed"})
        time.sleep(down_s)
        with open(cwd / "weed.log", "ab") as out:
            self.weed = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        events.append({"t": time.time(), "event": "seaweedfs started"})

    def restart_server(self, i: int, down_s: float, events: list) -> None:
        self.down.add(self.ports[i])
        os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(10)
        events.append({"t": time.time(), "event": f"server {i} killed"})
        time.sleep(down_s)
        self.procs[i] = self.start(i)
        self.down.discard(self.ports[i])
        events.append({"t": time.time(), "event": f"server {i} ready again"})

    def stop(self) -> None:
        for p in self.procs:
            soak.stop_server(p)
        self.weed.kill()
        self.weed.wait(10)


class ClusterSoak(soak.Soak):
    def __init__(self, args, cluster: Cluster):
        super().__init__(args, f"http://127.0.0.1:{cluster.ports[0]}", cluster.ports[0])
        self.cluster, self.events, self._turn = cluster, [], 0

    @property  # pollers and slow connections take the servers in turn
    def port(self) -> int:
        self._turn += 1
        live = [p for p in self.cluster.ports if p not in self.cluster.down] or self.cluster.ports
        return live[self._turn % len(live)]

    @port.setter
    def port(self, value: int) -> None:
        pass

    async def chaos(self) -> None:
        third = self.args.minutes * 60 / 3
        await asyncio.sleep(third)
        await asyncio.to_thread(self.cluster.restart_weed, self.args.s3_down, self.events)
        await asyncio.sleep(third - self.args.s3_down)
        await asyncio.to_thread(self.cluster.restart_server, 1, self.args.server_down, self.events)

    async def run(self, pid: int) -> dict:
        samples: list = []
        transport = RoundRobin(self.cluster.ports, self.cluster.down)
        async with httpx.AsyncClient(base_url=self.base, timeout=60, transport=transport) as self.client:
            a = self.args
            await self.warm_up()
            self.end = time.monotonic() + a.minutes * 60
            tasks = [
                self.every(a.submit_every, self.submit), self.every(a.submit_every * 4, self.upload),
                self.every(a.submit_every * 4, self.cancel), self.every(a.submit_every * 2, self.sse),
                self.every(a.submit_every * 2, self.hostile), self.every(a.submit_every * 3, self.slow_connection),
                self.every(5.0, self.health), self.sampler(pid, samples), self.chaos(),
            ] + [self.poller(i / a.pollers / a.rate) for i in range(a.pollers)]
            await asyncio.gather(*tasks)
            outcome = await self.drain(timeout=max(180.0, a.minutes * 6))
        return {"samples": samples, **outcome}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--pollers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--submit-every", type=float, default=1.0)
    ap.add_argument("--step-seconds", type=float, default=0.01)
    ap.add_argument("--sample-seconds", type=float, default=soak.SAMPLE_SECONDS)
    ap.add_argument("--s3-down", type=float, default=15.0, help="seconds SeaweedFS stays down")
    ap.add_argument("--server-down", type=float, default=5.0, help="seconds the killed server stays down")
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL; default: a fresh database on 127.0.0.1")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak-cluster-postgresql-s3.json")
    args = ap.parse_args(argv)
    if not args.database_url:
        import psycopg

        name = "ccsr_soak_" + secrets.token_hex(4)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        args.database_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ccsr-soak-cluster-") as tmp:
        cluster = Cluster(args, Path(tmp))
        t0 = time.time()
        try:
            run = ClusterSoak(args, cluster)
            result = asyncio.run(run.run(cluster.procs[0].pid))
        finally:
            load_after = os.getloadavg()
            cluster.stop()
        logs = "".join((Path(tmp) / f"server{i}" / "server.log").read_text(errors="replace") for i in range(2))
    t = run.tally
    mem = soak.memory_check(result["samples"])
    lost = len(result["still_open"]) + len(result["wrong_result"])
    not_503 = sum(n for by in t.codes.values() for c, n in by.items() if c >= 500 and c != 503)
    answered_503 = sum(n for by in t.codes.values() for c, n in by.items() if c == 503)
    checks = {"no_5xx_but_503": not_503 == 0, "no_lost_request": lost == 0, "memory_flat": mem["flat"],
              "idempotency_held": t.idempotent_mismatch == 0,
              "hostile_never_accepted": not any(k.endswith("accepted") for k in t.errors)}
    report = {
        "benchmark": "soak-cluster", "machine": machine(), "shape": "2 servers, PostgreSQL, S3 (SeaweedFS), fake engine",
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "database_url")},
        "events": [{"t_s": round(e["t"] - t0, 1), "event": e["event"]} for e in run.events],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_end": [round(x, 2) for x in load_after],
        "wall_s": round(time.time() - t0, 1),
        "answers": {k: {str(c): n for c, n in sorted(v.items())} for k, v in sorted(t.codes.items())},
        "answered_503": answered_503, "transport_errors": t.errors, "polls": run.polls,
        "polls_per_s": round(run.polls / (args.minutes * 60), 1), "accepted_requests": len(t.accepted),
        "server_errors": t.server_errors,
        "lost": {"still_open": result["still_open"][:50], "wrong_result": result["wrong_result"][:50], "count": lost},
        "server_log_tracebacks": logs.count("Traceback"), "memory": mem, "checks": checks,
        "passed": all(checks.values()), "rss_samples": result["samples"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"cluster soak {args.minutes} min: {len(t.accepted)} accepted, {run.polls} polls ({report['polls_per_s']}/s), "
          f"5xx other than 503: {not_503}, 503: {answered_503}, lost: {lost}; events: {report['events']}")
    print(f"RSS of server 0: first {mem.get('first_mean_mib')} MiB, last {mem.get('last_mean_mib')} MiB")
    print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in checks.items()))
    for line in t.server_errors[:10]:
        print("  5xx:", line)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
