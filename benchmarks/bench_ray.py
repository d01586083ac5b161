"""Ray executor benchmark: throughput with 1, 2 and 3 actors, and the per-job
overhead of the Ray path against the local worker pool, in one run.

    python benchmarks/bench_ray.py                  # defaults below
    python benchmarks/bench_ray.py --jobs 36 --job-seconds 0.5

It starts a local Ray cluster on loopback (``ccsr.testing.ray_cluster``: a head
and three worker nodes, each offering one ``ccsr_worker`` in place of a GPU)
and drives the executors directly, the way the scheduler does: a job is
submitted whenever ``idle_slots()`` says an actor is free.

The engine is the fake one (``ccsr.testing.FakeEngine``): it *sleeps*
per step instead of computing, because this machine has 2 CPU cores shared by
the head, the nodes and the driver; an engine burning CPU would measure the
cores, not the executor. With real GPUs each actor has its own device, which
the sleeping engine stands in for.

Throughput: after one warm-up job per actor, ``--jobs`` jobs of about
``--job-seconds`` each; ratios are against 1 actor (the goal is >= 0.9 x N).
Overhead: ``--seq-jobs`` short jobs one after another on 1 actor and on a
1-process local pool; per job, wall time from submit to Done minus the time
the engine reported. Medians. JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ccsr.testing import ray_cluster as ray_testing  # noqa: E402  (sets Ray's environment before ray is imported)
from machine_info import machine  # noqa: E402

FAKE = "ccsr.testing:fake_engine_factory"
APP_ID = "fal-ai/ccsr"


def fake_steps(job_seconds: float, step_seconds: float) -> int:
    """The ``steps`` request field giving a fake job of about ``job_seconds`` (a third of steps run)."""
    return max(3, round(3 * job_seconds / step_seconds))


async def run_jobs(ex, events: asyncio.Queue, n: int, params, out_dir: str, concurrent: bool) -> dict:
    """Submit ``n`` jobs (as slots free up, or one at a time) and time them."""
    from ccsr.executors.base import Done, Failed, Task

    started: dict[str, float] = {}
    overheads, submitted, finished = [], 0, 0
    t0 = time.perf_counter()
    while finished < n:
        while submitted < n and ex.idle_slots() > 0 and (concurrent or submitted == finished):
            rid = f"job-{submitted}"
            started[rid] = time.perf_counter()
            # The executor's store is a local one holding the input at "in.png" (the
            # driver sends its bytes, as for any store the nodes don't share).
            ex.submit(Task(rid, APP_ID, params, "in.png", f"out/{rid}.png"))
            submitted += 1
        ev = await events.get()
        if isinstance(ev, Failed):
            raise RuntimeError(f"{ev.request_id} failed: {ev.message}")
        if isinstance(ev, Done):
            finished += 1
            overheads.append(time.perf_counter() - started[ev.request_id] - ev.inference_time)
    wall = time.perf_counter() - t0
    return {"jobs": n, "wall_s": wall, "jobs_per_s": n / wall, "overhead_median_ms": 1000 * statistics.median(overheads)}


async def with_executor(ex, store, ready: int, body):
    from ccsr.executors.base import Done, Failed

    events: asyncio.Queue = asyncio.Queue()
    await ex.start(lambda e: isinstance(e, (Done, Failed)) and events.put_nowait(e), store)
    try:
        deadline = time.time() + 120
        while ex.idle_slots() < ready:
            if time.time() > deadline:
                raise RuntimeError(f"actors not ready: {ex.describe()}")
            await asyncio.sleep(0.1)
        return await body(events)
    finally:
        await ex.close()


async def bench(args, cluster, store, out_dir: str) -> dict:
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.executors.pool import WorkerPool
    from ccsr.executors.ray import RayExecutor

    app = CCSRApp()
    params = app.Params(steps=fake_steps(args.job_seconds, args.step_seconds), scale=2)
    short = app.Params(steps=fake_steps(args.step_seconds * 2, args.step_seconds), scale=2)
    out: dict = {"throughput": {}, "overhead": {}}

    def ray_executor(n: int) -> RayExecutor:
        return RayExecutor({}, address=cluster.address, workers=n, actor_options=ray_testing.TEST_ACTOR_OPTIONS,
                           app_ref=app.ref, factory=FAKE)

    for n in (1, 2, 3):
        async def body(events, n=n):
            await run_jobs(ex, events, n, params, out_dir, concurrent=True)  # warm-up: one job per actor
            return await run_jobs(ex, events, args.jobs, params, out_dir, concurrent=True)

        ex = ray_executor(n)
        res = await with_executor(ex, store, n, body)
        out["throughput"][str(n)] = res
        print(f"{n} actor(s): {res['jobs_per_s']:.2f} jobs/s ({res['jobs']} jobs in {res['wall_s']:.2f} s)", flush=True)
    base = out["throughput"]["1"]["jobs_per_s"]
    out["ratios_vs_1_actor"] = {n: r["jobs_per_s"] / base for n, r in out["throughput"].items()}
    out["goal_0_9_n_met"] = all(out["ratios_vs_1_actor"][str(n)] >= 0.9 * n for n in (1, 2, 3))

    async def seq(events, ex_ref):
        await run_jobs(ex_ref[0], events, 2, short, out_dir, concurrent=False)  # warm-up
        return await run_jobs(ex_ref[0], events, args.seq_jobs, short, out_dir, concurrent=False)

    ex = ray_executor(1)
    out["overhead"]["ray"] = await with_executor(ex, store, 1, lambda ev: seq(ev, [ex]))
    pool = WorkerPool({}, ["cpu"], app_ref=app.ref, factory=FAKE)
    out["overhead"]["local_pool"] = await with_executor(pool, store, 1, lambda ev: seq(ev, [pool]))
    r, p = out["overhead"]["ray"]["overhead_median_ms"], out["overhead"]["local_pool"]["overhead_median_ms"]
    out["overhead"]["ray_minus_pool_ms"] = r - p
    print(f"per-job overhead (median, beyond the engine's own time): ray {r:.1f} ms, local pool {p:.1f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=36, help="timed jobs per actor count")
    ap.add_argument("--job-seconds", type=float, default=0.5, help="fake engine time per throughput job")
    ap.add_argument("--step-seconds", type=float, default=0.05, help="fake engine sleep per step")
    ap.add_argument("--seq-jobs", type=int, default=30, help="sequential short jobs for the overhead")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray-fake-local-cluster.json")
    args = ap.parse_args()

    import os

    from PIL import Image

    os.environ["CCSR_FAKE_STEP_SECONDS"] = str(args.step_seconds)  # the local pool's worker reads it
    t0 = time.time()
    with ray_testing.local_cluster(3, env={"CCSR_FAKE_STEP_SECONDS": args.step_seconds}) as cluster, \
            tempfile.TemporaryDirectory() as tmp:
        print(f"cluster up in {time.time() - t0:.1f} s ({cluster.address})", flush=True)
        # Each RayExecutor joins the cluster through its own driver process.
        from ccsr.storage.local import LocalBlobStore

        store = LocalBlobStore(f"{tmp}/blobs")
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (120, 80, 40)).save(buf, format="PNG")
        store.put("in.png", buf.getvalue())
        result = asyncio.run(bench(args, cluster, store, tmp))
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "setup": {
            "cluster": "ray.cluster_utils.Cluster on loopback: head + 3 worker nodes, 1 ccsr_worker each",
            "engine": "FakeEngine (sleeps per step; 2 shared CPU cores, so it must not burn CPU)",
            "step_seconds": args.step_seconds,
            "job_seconds": args.job_seconds,
            "jobs": args.jobs,
            "seq_jobs": args.seq_jobs,
            "ray": __import__("ray").__version__,
        },
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratios_vs_1_actor", "goal_0_9_n_met")}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
