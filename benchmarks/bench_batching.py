"""Throughput of queued requests batched through the network (``batch_size``).

    python benchmarks/bench_batching.py                        # tiny random model, CPU
    python benchmarks/bench_batching.py --arch v1 --device cuda --dtype fp16 --size 512 --scale 2

For 1, 2, 4 and 8 requests waiting in the queue (one input size and settings,
each its own seed), a real worker process (``ccsr.executors.pool.WorkerPool``, the
executor ``ccsr serve`` uses) holding the engine on a random checkpoint is
handed all of them at once, the way the scheduler hands over what it claimed,
and the time until the last result is stored is measured: once with
``batch_size`` 1 (one request after another, the baseline) and once with
``batch_size`` N (one batch). After a warm-up request per pool, ``--repeats``
runs of each; medians, requests per second and the ratio batched / one by one
go to ``benchmarks/results/batching-<device>.json`` with the machine named.

On a CPU the network is compute-bound at batch 1 already, so batching gains
little there; the GPU is where it is meant to pay (see the README).
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

from bench_vs_official import FIXTURES, checkpoint  # noqa: E402  (the same cached random checkpoints)
from machine_info import machine  # noqa: E402


def _input(store, size: int) -> str:
    from PIL import Image

    with Image.open(FIXTURES / "images" / "astronaut.png") as im:
        im = im.convert("RGB").resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    store.put("inputs/bench", buf.getvalue(), content_type="image/png")
    return "inputs/bench"


async def _measure(settings: dict, device: str, batch_size: int, count: int, repeats: int, params: dict,
                   blobs_dir: Path, size: int) -> list[float]:
    """Seconds from handing ``count`` tasks to a fresh pool's idle worker until the last ended."""
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.storage import LocalBlobStore
    from ccsr.executors.base import Done, Failed, Task, WorkerState
    from ccsr.executors.pool import WorkerPool
    from ccsr.models.ccsr_v1.params import UpscaleParams

    app = CCSRApp()
    store = LocalBlobStore(blobs_dir)
    key = _input(store, size)
    ended: dict[str, object] = {}
    ready = asyncio.Event()

    def emit(ev) -> None:
        if isinstance(ev, WorkerState):
            if ev.ready:
                ready.set()
            else:
                raise SystemExit(f"the worker could not load the model: {ev.message}")
        elif isinstance(ev, (Done, Failed)):
            ended[ev.request_id] = ev

    pool = WorkerPool({**settings, "batch_size": batch_size}, [device], app_ref=app.ref, batch_size=batch_size)
    await pool.start(emit, store)
    await asyncio.wait_for(ready.wait(), 600)

    async def run(ids: list[str]) -> float:
        t0 = time.perf_counter()
        for n, rid in enumerate(ids):
            pool.submit(Task(rid, app.app_id, UpscaleParams(seed=1000 + n, **params), key, f"results/{rid}"))
        pool.flush()
        while not all(r in ended for r in ids):
            await asyncio.sleep(0.005)
        bad = [ended[r] for r in ids if not isinstance(ended[r], Done)]
        if bad:
            raise SystemExit(f"a request failed: {bad[0]}")
        return time.perf_counter() - t0

    try:
        await run([f"warm-{batch_size}-{count}"])
        return [await run([f"r{batch_size}-{count}-{k}-{n}" for n in range(count)]) for k in range(repeats)]
    finally:
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["tiny", "v1"], default="tiny", help="random checkpoint: tiny test sizes or the full v1 architecture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=128, help="input width = height in px")
    ap.add_argument("--scale", type=float, default=2)
    ap.add_argument("--steps", type=int, default=50, help="sampler steps (the default request: 50, 17 evaluations)")
    ap.add_argument("--counts", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.settings import Settings

    # What a worker process receives: the shared engine options and CCSR v1's settings section.
    settings = CCSRApp().worker_settings(Settings(
        weights=checkpoint(args.arch), device=args.device, dtype=args.dtype,
        config=FIXTURES / "ccsr-tiny.yaml" if args.arch == "tiny" else None))
    params = {"scale": args.scale, "steps": args.steps}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            row: dict = {"queued": count}
            for label, bs in (("one_by_one", 1), ("batched", count)):
                times = asyncio.run(_measure(settings, args.device, bs, count, args.repeats, params,
                                             Path(tmp) / f"{label}-{count}", args.size))
                med = statistics.median(times)
                row[label] = {"batch_size": bs, "seconds": [round(t, 3) for t in times], "median_s": round(med, 3),
                              "requests_per_s": round(count / med, 3)}
                print(f"{count} queued, batch_size {bs}: median {med:.2f} s, {count / med:.2f} requests/s", flush=True)
            row["speedup"] = round(row["one_by_one"]["median_s"] / row["batched"]["median_s"], 3)
            rows.append(row)
    out = args.out or RESULTS / f"batching-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "architecture": args.arch, "device": args.device, "dtype": args.dtype,
              "request": {"input": [args.size, args.size], **params},
              "note": "WorkerPool with a real worker process; seconds from handing over the queued requests to "
                      "the last stored result; medians; speedup = one_by_one / batched",
              "results": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
