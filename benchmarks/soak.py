"""Soak benchmark of ``ccsr serve`` (a script, not a test).

Runs a real ``ccsr serve`` with the fake engine on 127.0.0.1 for
``--minutes`` (default 30) under mixed traffic, all interleaved:

- submits of small requests (some with an ``Idempotency-Key``, some sent twice),
- ``--pollers`` status pollers (default 100) at ``--rate`` Hz (default 10),
- SSE status streams read to the end,
- uploads to ``/cdn/files/upload`` that are then submitted by URL,
- long requests cancelled while they run,
- hostile bodies and headers (NaN, 1e999, a lone surrogate, deep nesting,
  a body over the body limit, a deeply nested lifecycle header),
- slow connections trickling their request head.

Every 10 s (``--sample-seconds``) it samples the RSS of the server process and of all its children.
Checks: no 5xx on any route, no lost request (every accepted request reaches
COMPLETED and its result answers as expected), and memory flat (mean total
RSS over the last 10 minutes within 10% of the first 10; for short runs, the
last third against the first third). Results go to
benchmarks/results/soak-<database>.json (``--out`` to change) with the
machine it ran on; a summary is printed. Exit status 1 when a check fails.

    python benchmarks/soak.py [--minutes 30] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine_info import machine  # noqa: E402
from serving import wait_until_ready  # noqa: E402

Q = "/queue/fal-ai/ccsr"
SAMPLE_SECONDS = 10.0
BODY_LIMIT = 2 * 1024 * 1024  # the server runs with this body limit so a "huge" body is cheap to send


def png_bytes(w: int = 24, h: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (random.randrange(256), 80, 200)).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the server ---------------------------------------------------------------------------
def start_server(args, data_dir: Path) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--log-level", "warning", "--device", "cpu",
           "--engine-factory", "ccsr.testing:fake_engine_factory"]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCSR_")}
    env.update(CCSR_FAKE_STEP_SECONDS=str(args.step_seconds), CCSR_MAX_REQUEST_BODY_BYTES=str(BODY_LIMIT),
               CCSR_MAX_DATA_URI_BYTES=str(BODY_LIMIT - 4096), CCSR_HEADER_TIMEOUT="5")
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, base, data_dir / "server.log", poll=0.3)
    return proc, base, port


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def rss_sample(pid: int) -> dict:
    """RSS in MiB of the server process and of every process below it."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return {"total_mib": 0.0, "processes": {}}
    out = {}
    for p in procs:
        try:
            name = " ".join(p.cmdline()[1:4])[:60] or p.name()
            out[f"{p.pid} {name}"] = round(p.memory_info().rss / 2**20, 1)
        except psutil.Error:
            continue
    return {"total_mib": round(sum(out.values()), 1), "processes": out}


# --- the load ---------------------------------------------------------------------------------
class Tally:
    """Every answer seen, by kind of traffic and status code."""

    def __init__(self) -> None:
        self.codes: dict[str, dict[int, int]] = {}
        self.errors: dict[str, int] = {}
        self.server_errors: list[str] = []
        self.accepted: dict[str, str] = {}  # request id -> what its result must be ("ok" or "cancel")
        self.idempotent_mismatch = 0

    def code(self, kind: str, code: int, detail: str = "") -> None:
        by = self.codes.setdefault(kind, {})
        by[code] = by.get(code, 0) + 1
        if code >= 500 and len(self.server_errors) < 50:
            self.server_errors.append(f"{kind}: {code} {detail[:200]}")

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def fivexx(self) -> int:
        return sum(n for by in self.codes.values() for c, n in by.items() if c >= 500)


class KeepAliveGet:
    """A minimal HTTP/1.1 keep-alive GET client: a hundred pollers at 10 Hz with
    httpx would measure the load generator, not the server, on a small machine."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def get(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        await self.reader.readexactly(length)
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Soak:
    def __init__(self, args, base: str, port: int):
        self.args, self.base, self.port = args, base, port
        self.tally = Tally()
        self.recent: list[str] = []  # status paths pollers pick from
        self.end = time.monotonic() + args.minutes * 60
        self.polls = 0

    def running(self) -> bool:
        return time.monotonic() < self.end

    def remember(self, request_id: str, expect: str) -> None:
        self.tally.accepted[request_id] = expect
        self.recent.append(f"{Q}/requests/{request_id}/status")
        del self.recent[:-50]

    async def every(self, period: float, fn) -> None:
        """Run ``fn`` every ``period`` seconds (jittered) until the end; count
        transport errors instead of stopping."""
        await asyncio.sleep(random.random() * period)
        while self.running():
            try:
                await fn()
            except (httpx.HTTPError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.tally.error(f"{fn.__name__}: {type(exc).__name__}")
            await asyncio.sleep(period * (0.5 + random.random()))

    # each traffic kind -------------------------------------------------------------------
    async def submit(self) -> None:
        body = {"image_url": data_uri(png_bytes()), "steps": 6, "seed": 1}
        headers = {}
        key = None
        if random.random() < 0.3:
            key = f"soak-{random.getrandbits(64):x}"
            headers["Idempotency-Key"] = key
        r = await self.client.post(Q, json=body, headers=headers)
        self.tally.code("submit", r.status_code, r.text)
        if r.status_code != 200:
            return
        rid = r.json()["request_id"]
        self.remember(rid, "ok")
        if key:  # a client's retry: the same request must come back
            again = await self.client.post(Q, json=body, headers=headers)
            self.tally.code("submit", again.status_code, again.text)
            if again.status_code == 200 and again.json()["request_id"] != rid:
                self.tally.idempotent_mismatch += 1
                self.remember(again.json()["request_id"], "ok")

    async def sse(self) -> None:
        if not self.recent:
            return
        path = random.choice(self.recent) + "/stream?logs=1"
        async with self.client.stream("GET", path, timeout=httpx.Timeout(30.0, read=60.0)) as r:
            self.tally.code("sse", r.status_code)
            async for _ in r.aiter_lines():
                pass

    async def upload(self) -> None:
        raw = png_bytes(40, 30)
        r = await self.client.post("/cdn/files/upload", content=raw,
                                   headers={"content-type": "image/png", "x-fal-file-name": "soak.png"})
        self.tally.code("upload", r.status_code, r.text)
        if r.status_code != 200:
            return
        url = r.json()["access_url"]
        s = await self.client.post(Q, json={"image_url": url, "steps": 6})
        self.tally.code("submit_url", s.status_code, s.text)
        if s.status_code == 200:
            self.remember(s.json()["request_id"], "ok")

    async def cancel(self) -> None:
        r = await self.client.post(Q, json={"image_url": data_uri(png_bytes()), "steps": 600})
        self.tally.code("submit_long", r.status_code, r.text)
        if r.status_code != 200:
            return
        rid = r.json()["request_id"]
        self.remember(rid, "cancel")
        await asyncio.sleep(random.random() * 2)
        c = await self.client.put(f"{Q}/requests/{rid}/cancel")
        self.tally.code("cancel", c.status_code, c.text)
        if c.status_code not in (202, 400):
            self.tally.error(f"cancel answered {c.status_code}")

    async def hostile(self) -> None:
        img = data_uri(png_bytes())
        deep = "[" * 5000 + "]" * 5000
        cases = [
            ("nan", b'{"image_url": "%s", "scale": NaN}' % img.encode(), {}),
            ("inf", b'{"image_url": "%s", "t_max": 1e999}' % img.encode(), {}),
            ("surrogate", b'{"image_url": "ftp://\\ud800"}', {}),
            ("deep_json", ('{"image_url": %s}' % deep).encode(), {}),
            ("huge", b'{"image_url": "data:image/png;base64,' + b"A" * (BODY_LIMIT + 1024) + b'"}', {}),
            ("deep_header", b'{"image_url": "%s"}' % img.encode(),
             {"x-fal-object-lifecycle-preference": '{"a":' * 3000 + "1" + "}" * 3000}),
            ("bad_base64", b'{"image_url": "data:image/png;base64,@@@@"}', {}),
        ]
        name, body, extra = random.choice(cases)
        r = await self.client.post(Q, content=body, headers={"content-type": "application/json", **extra})
        self.tally.code(f"hostile_{name}", r.status_code, r.text)
        if r.status_code < 400:  # a hostile body must never be accepted
            self.tally.error(f"hostile_{name} accepted")
            if r.status_code == 200:
                self.remember(r.json()["request_id"], "any")

    async def slow_connection(self) -> None:
        """Trickle a request head one byte a second until the server hangs up
        (header timeout) or 20 s pass."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                writer.write(bytes([ch]))
                await writer.drain()
                await asyncio.sleep(1.0)
                if reader.at_eof():
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def health(self) -> None:
        r = await self.client.get("/healthz", timeout=5)
        self.tally.code("healthz", r.status_code)

    async def poller(self, offset: float) -> None:
        conn = KeepAliveGet(self.port)
        await asyncio.sleep(offset)
        nxt = time.monotonic()
        while self.running():
            if self.recent:
                try:
                    code = await asyncio.wait_for(conn.get(random.choice(self.recent)), 30)
                    self.polls += 1
                    self.tally.code("poll", code)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                    self.tally.error("poll transport")
                    conn.close()
            nxt += 1 / self.args.rate
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        conn.close()

    async def sampler(self, pid: int, samples: list) -> None:
        t0 = time.monotonic()
        while True:
            samples.append({"t_s": round(time.monotonic() - t0, 1), **rss_sample(pid)})
            if not self.running():
                return
            await asyncio.sleep(self.args.sample_seconds)

    async def drain(self, timeout: float) -> dict:
        """After the traffic: wait until every accepted request is COMPLETED and
        check its result; anything still open at the timeout is lost."""
        pending = set(self.tally.accepted)
        deadline = time.monotonic() + timeout
        wrong: list[str] = []
        while pending and time.monotonic() < deadline:
            for rid in list(pending)[:200]:
                r = await self.client.get(f"{Q}/requests/{rid}/status")
                self.tally.code("drain_status", r.status_code, r.text)
                if r.status_code == 200 and r.json()["status"] == "COMPLETED":
                    pending.discard(rid)
                    res = await self.client.get(f"{Q}/requests/{rid}")
                    self.tally.code("result", res.status_code, res.text)
                    expect = self.tally.accepted[rid]
                    ok = {"ok": (200,), "cancel": (200, 400), "any": tuple(range(200, 500))}[expect]
                    if res.status_code not in ok:
                        wrong.append(f"{rid}: {expect} but {res.status_code} {res.text[:120]}")
                elif r.status_code == 404:
                    pending.discard(rid)
                    wrong.append(f"{rid}: status 404")
            if pending:
                await asyncio.sleep(1.0)
        return {"still_open": sorted(pending), "wrong_result": wrong}

    async def warm_up(self) -> None:
        """One request run to the end before the clock starts, so the first
        memory window measures the server under load, not a worker still
        importing its engine."""
        r = await self.client.post(Q, json={"image_url": data_uri(png_bytes()), "steps": 6})
        r.raise_for_status()
        url = r.json()["status_url"]
        while (await self.client.get(url)).json()["status"] != "COMPLETED":
            await asyncio.sleep(0.2)

    async def run(self, pid: int) -> dict:
        samples: list = []
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as self.client:
            a = self.args
            await self.warm_up()
            self.end = time.monotonic() + a.minutes * 60
            tasks = [
                self.every(a.submit_every, self.submit),
                self.every(a.submit_every * 4, self.upload),
                self.every(a.submit_every * 4, self.cancel),
                self.every(a.submit_every * 2, self.sse),
                self.every(a.submit_every * 2, self.hostile),
                self.every(a.submit_every * 3, self.slow_connection),
                self.every(5.0, self.health),
                self.sampler(pid, samples),
            ] + [self.poller(i / a.pollers / a.rate) for i in range(a.pollers)]
            # the SSE and slow-connection loops each run several at once
            tasks += [self.every(a.submit_every * 2, self.sse) for _ in range(3)]
            tasks += [self.every(a.submit_every * 3, self.slow_connection) for _ in range(5)]
            await asyncio.gather(*tasks)
            outcome = await self.drain(timeout=max(120.0, a.minutes * 6))
        return {"samples": samples, **outcome}


def memory_check(samples: list) -> dict:
    """Mean total RSS of the first and the last window (10 min, or a third of
    a shorter run); flat when the last is within 10% of the first."""
    span = samples[-1]["t_s"] if samples else 0.0
    window = min(600.0, span / 3) if span else 0.0
    first = [s["total_mib"] for s in samples if s["t_s"] <= window]
    last = [s["total_mib"] for s in samples if s["t_s"] >= span - window]
    if not first or not last:
        return {"window_s": window, "flat": False, "reason": "too few samples"}
    f, l = statistics.fmean(first), statistics.fmean(last)
    return {"window_s": round(window, 1), "first_mean_mib": round(f, 1), "last_mean_mib": round(l, 1),
            "ratio": round(l / f, 3), "flat": l <= f * 1.10, "samples_first": len(first), "samples_last": len(last)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--pollers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="polls per second of each poller")
    ap.add_argument("--submit-every", type=float, default=1.0, help="mean seconds between submits")
    ap.add_argument("--step-seconds", type=float, default=0.01, help="fake engine time per step")
    ap.add_argument("--sample-seconds", type=float, default=SAMPLE_SECONDS,
                    help="seconds between RSS samples (the issue asks for 10; the smoke test takes less)")
    ap.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (with --database postgresql)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.database == "postgresql" and not args.database_url:
        args.database_url = "postgresql://postgres@127.0.0.1:5432/test"
    if args.database == "sqlite":
        args.database_url = None
    out = args.out or HERE / "results" / f"soak-{args.database}.json"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ccsr-soak-") as tmp:
        proc, base, port = start_server(args, Path(tmp))
        t0 = time.time()
        try:
            soak = Soak(args, base, port)
            result = asyncio.run(soak.run(proc.pid))
        finally:
            load_after = os.getloadavg()
            stop_server(proc)
        log_bytes = (Path(tmp) / "server.log").stat().st_size
        tracebacks = (Path(tmp) / "server.log").read_text(errors="replace").count("Traceback")
    t = soak.tally
    mem = memory_check(result["samples"])
    lost = len(result["still_open"]) + len(result["wrong_result"])
    checks = {"no_5xx": t.fivexx() == 0, "no_lost_request": lost == 0, "memory_flat": mem["flat"],
              "idempotency_held": t.idempotent_mismatch == 0,
              "hostile_never_accepted": not any(k.endswith("accepted") for k in t.errors)}
    report = {
        "benchmark": "soak", "machine": machine(), "database": args.database,
        "config": {"minutes": args.minutes, "pollers": args.pollers, "rate_hz": args.rate,
                   "submit_every_s": args.submit_every, "step_seconds": args.step_seconds,
                   "body_limit_bytes": BODY_LIMIT, "rss_sample_s": args.sample_seconds},
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_end": [round(x, 2) for x in load_after],
        "wall_s": round(time.time() - t0, 1),
        "answers": {k: {str(c): n for c, n in sorted(v.items())} for k, v in sorted(t.codes.items())},
        "transport_errors": t.errors, "polls": soak.polls, "polls_per_s": round(soak.polls / (args.minutes * 60), 1),
        "accepted_requests": len(t.accepted), "server_errors": t.server_errors,
        "lost": {"still_open": result["still_open"][:50], "wrong_result": result["wrong_result"][:50], "count": lost},
        "server_log": {"bytes": log_bytes, "tracebacks": tracebacks},
        "memory": mem, "checks": checks, "passed": all(checks.values()),
        "rss_samples": result["samples"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"soak {args.minutes} min, {args.database}: {len(t.accepted)} requests accepted, {soak.polls} polls "
          f"({report['polls_per_s']}/s), 5xx: {t.fivexx()}, lost: {lost}")
    print(f"RSS (all server processes): first {mem.get('first_mean_mib')} MiB, last {mem.get('last_mean_mib')} MiB "
          f"(ratio {mem.get('ratio')}); load average at the end {report['loadavg_end']}")
    print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in checks.items()))
    for line in t.server_errors[:10]:
        print("  5xx:", line)
    print(f"results: {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
