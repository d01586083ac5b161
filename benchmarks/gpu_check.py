"""Every GPU check of issue 9 in one run: correctness, speed, memory, throughput.

    python benchmarks/gpu_check.py                       # on a CUDA machine (designed for < 8 min on an H200)
    python benchmarks/gpu_check.py --official /path/to/CCSR --official-python /path/to/venv/bin/python
    python benchmarks/gpu_check.py --cpu-smoke           # the same sections on the CPU, tiny model and sizes (< 2 min)

Sections (each prints as it goes; the JSON is rewritten after each one, so a
run cut short keeps what it measured):

- ``correctness``: fp16 and bf16 UNet+ControlNet, VAE encoder and decoder at
  1024 and 2048 px give no NaN/Inf (full-size architecture, random weights).
- ``fp16_psnr``: the same request in fp16 and fp32 on the device, tiny and
  full-size random checkpoints: PSNR of fp16 against fp32.
- ``noise``: the noise of a seed is the same on the CPU and on CUDA.
- ``speed``: stage times of the default 512 -> 1024 request (17 network
  evaluations), fp16 and bf16, eager and ``torch.compile``-d.
- ``official``: the official code's time for the same request on the same GPU
  (fp32, its own predictor; needs ``--official``; see bench_vs_official.py).
- ``memory``: with ``torch.cuda.set_per_process_memory_fraction``, a 1024 px
  input at scale 4 within 8 GB and a 1920x1080 input at scale 2 within 10 GB
  (automatic memory plan on), with peak memory.
- ``throughput``: requests per second for 1, 2, 4 and 8 queued requests of the
  default request, batched through the network (``run_batch``: what a worker
  runs for queued requests of one shape with ``batch_size`` N;
  ``bench_batching.py`` measures the same through a worker process).

On CUDA each section runs in its own process (a memory fraction and a crash
stay inside it) under its own time limit. Weights are random (the
architecture sets the cost); the full-size checkpoint is written once into
benchmarks/.cache/ (git-ignored). The result goes to
benchmarks/results/gpu-check-<machine>.json with the machine named.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine  # noqa: E402

SECTIONS = ["correctness", "fp16_psnr", "noise", "speed", "official", "memory", "throughput"]
#: Seconds each section may take on the GPU (about 7 minutes in all, plus the checkpoint).
BUDGET_S = {"correctness": 45, "fp16_psnr": 60, "noise": 20, "speed": 150, "official": 90, "memory": 120, "throughput": 60}

# Sizes of the full run and of the CPU smoke run.
FULL = dict(arch="v1", device="cuda", check_sizes=[1024, 2048], psnr_input=256, default_input=512,
            memory_cases=[("1024px-x4-8GB", (1024, 1024), 4, 8), ("1920x1080-x2-10GB", (1920, 1080), 2, 10)],
            queue=[1, 2, 4, 8], repeats=3, compile_mode="reduce-overhead", backend="inductor", steps=50, native=512,
            speed_variants=[("fp16", "eager"), ("bf16", "eager"), ("fp16", "compiled")])
SMOKE = dict(arch="tiny", device="cpu", check_sizes=[32, 64], psnr_input=32, default_input=32,
             memory_cases=[("64px-x4-small-budget", (64, 64), 4, None), ("96x54-x2-small-budget", (96, 54), 2, None)],
             queue=[1, 2, 4], repeats=1, compile_mode="default", backend="eager", steps=10, native=64,
             # fp32: half precision is emulated (slow) on most CPUs; the correctness sections cover fp16/bf16
             speed_variants=[("fp32", "eager"), ("fp32", "compiled")])


# ---------------------------------------------------------------- helpers
def _cfg(arch: str):
    from bench_engine import load_config

    return load_config(arch)


def _checkpoint(arch: str) -> Path:
    """Random weights: fp16 on disk for the full size (half the bytes to read), fp32 for the tiny one."""
    from bench_engine import checkpoint

    return checkpoint(arch, "fp16" if arch == "v1" else "fp32")


def _model(opts: dict, dtype):
    import torch

    from ccsr.models.ccsr_v1.networks.model import CCSRModel

    model = CCSRModel.from_file(_checkpoint(opts["arch"]), _cfg(opts["arch"]), device=torch.device(opts["device"]), dtype=dtype)
    if opts["device"] == "cpu":  # weights that share the file's mapped pages would count in the peak when re-read
        for t in list(model.parameters()) + list(model.buffers()):
            t.data = t.data.clone()
    return model


def _image(size: tuple[int, int]):
    from PIL import Image

    with Image.open(ROOT / "tests" / "fixtures" / "images" / "astronaut.png") as im:
        return im.convert("RGB").resize(size, Image.BICUBIC)


def _finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t.float()).all())


def _psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _dtypes():
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- sections
def correctness(opts: dict) -> dict:
    import torch

    out = {}
    for name in ("fp16", "bf16"):
        model = _model(opts, _dtypes()[name])
        for px in opts["check_sizes"]:
            lat = px // 8
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 4, lat, lat, generator=g).to(opts["device"])
            cond = torch.randn(1, 4, lat, lat, generator=g).to(opts["device"])
            img = torch.rand(1, 3, px, px, generator=g).to(opts["device"])
            res = {
                "unet_controlnet": _finite(model.eps(x, torch.tensor(999), cond)),
                "vae_encoder": _finite(model.encode_condition(img)),
                "vae_decoder": _finite(model.decode(x)),
            }
            out[f"{name}-{px}px"] = res
            _say(f"  {name} {px} px: finite {res}")
        del model
        _free(opts)
    out["all_finite"] = all(v for r in out.values() for v in r.values())
    return out


def fp16_psnr(opts: dict) -> dict:
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    out = {}
    image = _image((opts["psnr_input"], opts["psnr_input"]))
    for arch in sorted({"tiny", opts["arch"]}):
        imgs = {}
        for name in ("fp32", "fp16"):
            model = _model(dict(opts, arch=arch), _dtypes()[name])
            imgs[name] = CCSRUpscaler(model)(image, seed=1, scale=2, steps=opts["steps"]).image
            del model
            _free(opts)
        out[arch] = {"psnr_fp16_vs_fp32_db": _psnr(imgs["fp16"], imgs["fp32"])}
        _say(f"  {arch}: fp16 vs fp32 PSNR {out[arch]['psnr_fp16_vs_fp32_db']:.2f} dB")
    return out


def noise(opts: dict) -> dict:
    import torch

    from ccsr.models.ccsr_v1 import sampler

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = (1, 4, 128, 128)
    a = sampler._noise(shape, torch.Generator("cpu").manual_seed(1234), "cpu", torch.float32)
    b = sampler._noise(shape, torch.Generator("cpu").manual_seed(1234), device, torch.float32).cpu()
    equal = bool(torch.equal(a, b))
    _say(f"  seed noise on cpu == on {device}: {equal}")
    return {"compared": f"cpu vs {device}", "equal": equal}


def _request_times(up, image, repeats: int, warmup: int = 1, **fields) -> dict:
    for _ in range(warmup):
        up(image, seed=0, **fields)
    runs = [up(image, seed=r, **fields).timings for r in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["model"] = med["condition_encode"] + med["sampling"] + med["decode"]
    med["total"] = sum(med[k] for k in ("preprocess", "condition_encode", "sampling", "decode", "color_fix", "postprocess"))
    return med


def speed(opts: dict) -> dict:
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    image = _image((opts["default_input"], opts["default_input"]))
    fields = dict(scale=2, steps=opts["steps"])
    out = {}
    for name, kind in opts["speed_variants"]:
        how = "eager" if kind == "eager" else opts["compile_mode"]
        model = _model(opts, _dtypes()[name])
        t0 = time.perf_counter()
        if how != "eager":
            model.optimize(compile=how, backend=opts["backend"])
            CCSRUpscaler(model)(image, seed=0, **fields)  # compiles
        compile_s = time.perf_counter() - t0
        med = _request_times(CCSRUpscaler(model), image, opts["repeats"], **fields)
        key = f"{name}-{'eager' if how == 'eager' else 'compiled-' + how}"
        out[key] = {"median_s": med, "compile_and_first_request_s": compile_s if how != "eager" else None}
        _say(f"  {key}: model {med['model']:.3f} s (encode {med['condition_encode']:.3f}, sampling {med['sampling']:.3f} "
             f"= {med['per_evaluation'] * 1000:.1f} ms per evaluation, decode {med['decode']:.3f}), total {med['total']:.3f} s"
             + (f", compile+first {compile_s:.1f} s" if how != "eager" else ""))
        del model
        _free(opts)
    return out


def official(opts: dict) -> dict:
    if not opts.get("official"):
        return {"skipped": "no --official checkout given"}
    import bench_vs_official as bvo

    arch = opts["arch"]
    size = (opts["default_input"], opts["default_input"])
    spec = {"checkout": opts["official"], "arch": arch, "ckpt": str(bvo.checkpoint(arch)), "input": str(bvo.input_image(size)),
            "output": str(RESULTS / ".official-out.png"), "tiny_yaml": str(ROOT / "tests" / "fixtures" / "ccsr-tiny.yaml"),
            "fields": dict(scale=2, steps=opts["steps"]), "seed": 1, "device": opts["device"], "repeats": 1 + opts["repeats"]}
    proc = subprocess.run([opts["official_python"], bvo.__file__, "--official-run", json.dumps(spec)], cwd=opts["official"],
                          capture_output=True, text=True, timeout=BUDGET_S["official"] - 5)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OFFICIAL_TIMES ")), None)
    if proc.returncode or line is None:
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    times = json.loads(line.split(" ", 1)[1])
    res = {"predict_s_runs": times, "predict_s_median_after_first": statistics.median(times[1:] or times)}
    _say(f"  official predict() on {opts['device']} (fp32): {res['predict_s_median_after_first']:.3f} s (runs {times})")
    return res


def memory(opts: dict) -> dict:
    out = {}
    name = "fp16" if opts["device"] == "cuda" else "fp32"
    for case, size, scale, gib in opts["memory_cases"]:
        out[case] = _memory_case(opts, name, size, scale, gib, tiled=False)
        if out[case].get("error") == "oom":  # the same with tiled diffusion, the user's next move
            out[case + "-tiled-diffusion"] = _memory_case(opts, name, size, scale, gib, tiled=True)
    return out


def _memory_case(opts: dict, dtype_name: str, size, scale, gib, tiled: bool) -> dict:
    import torch

    from ccsr.errors import OutOfMemory
    from ccsr.models.ccsr_v1 import memory as mem
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    dev = torch.device(opts["device"])
    model = _model(opts, _dtypes()[dtype_name])
    weights = mem.weight_bytes(model)
    fields = dict(scale=scale, steps=opts["steps"])
    if tiled:
        fields.update(tile_diffusion="gaussian", tile_diffusion_size=1024, tile_diffusion_stride=512)
    if dev.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(gib * 1024 ** 3 / torch.cuda.get_device_properties(dev).total_memory, dev)
        # the same as free_memory() where torch exposes the fraction; explicit for torch builds that do not
        budget = int(gib * 1024 ** 3 - torch.cuda.memory_allocated(dev))
    else:  # no fraction on a CPU: the budget of the smallest plan makes the planner work
        p = CCSRUpscaler(model).validate(fields, *size)
        smallest = mem.plan(model.config, model.dtype, p, *size, tile_batch_size=4, budget=1, allow_offload=False).peak
        budget = int(smallest / mem.HEADROOM) + 1
    up = CCSRUpscaler(model, memory_budget=budget)
    image = _image(size)
    logs: list[str] = []
    t0 = time.perf_counter()
    try:
        res, peak = mem.measure_peak(lambda: up(image, seed=1, log=logs.append, **fields), dev)
    except OutOfMemory as exc:
        _say(f"  {size} x{scale} ({'tiled diffusion' if tiled else 'as asked'}): out of memory: {exc}")
        return {"error": "oom", "message": str(exc), "log": logs}
    finally:
        del model
        _free(opts)
    r = {"input": list(size), "scale": scale, "fields": fields, "budget_gib": gib, "weights_gib": weights / 1024 ** 3,
         "peak_activation_gib": peak / 1024 ** 3, "peak_total_gib": (peak + weights) / 1024 ** 3,
         "seconds": time.perf_counter() - t0, "output": list(res.image.size),
         "plan": res.memory_plan.as_dict() if res.memory_plan else None, "log": logs}
    _say(f"  {size} x{scale}{' tiled diffusion' if tiled else ''}: peak {r['peak_total_gib']:.2f} GiB "
         f"(weights {r['weights_gib']:.2f}) within {gib} GiB, {r['seconds']:.1f} s; "
         + (res.memory_plan.describe() if res.memory_plan else "no plan"))
    return r


def throughput(opts: dict) -> dict:
    from ccsr.models.ccsr_v1.params import UpscaleParams
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    name = "fp16" if opts["device"] == "cuda" else "fp32"
    model = _model(opts, _dtypes()[name])
    image = _image((opts["default_input"], opts["default_input"]))
    out = {}
    for n in opts["queue"]:
        up = CCSRUpscaler(model, batch_size=n)
        params = [UpscaleParams(scale=2, steps=opts["steps"], seed=s) for s in range(n)]
        up.run_batch([image] * n, params)  # warm-up at this batch size
        _sync(opts)
        t0 = time.perf_counter()
        up.run_batch([image] * n, params)
        _sync(opts)
        wall = time.perf_counter() - t0
        out[f"{n}-queued"] = {"seconds": wall, "requests_per_s": n / wall}
        _say(f"  {n} queued, batched: {wall:.3f} s, {n / wall:.2f} requests/s")
    out["speedup_largest_vs_1"] = (out[f"{opts['queue'][-1]}-queued"]["requests_per_s"] / out["1-queued"]["requests_per_s"])
    return out


def _free(opts: dict) -> None:
    import gc

    import torch

    gc.collect()
    if opts["device"] == "cuda":
        torch.cuda.empty_cache()


def _sync(opts: dict) -> None:
    import torch

    if opts["device"] == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- driver
def run_section(name: str, opts: dict) -> dict:
    t0 = time.perf_counter()
    res = globals()[name](opts)
    res["section_seconds"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, tiny sizes, on the CPU (checks the script works)")
    ap.add_argument("--sections", nargs="*", default=SECTIONS, choices=SECTIONS)
    ap.add_argument("--official", default=os.environ.get("CCSR_OFFICIAL"), help="official CCSR checkout (see bench_vs_official.py)")
    ap.add_argument("--official-python", default=os.environ.get("CCSR_OFFICIAL_PYTHON"), help="python of the official venv")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/gpu-check-<machine>.json)")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    args = ap.parse_args()
    opts = dict(SMOKE if args.cpu_smoke else FULL, official=args.official, official_python=args.official_python or sys.executable)
    import ccsr.models.ccsr_v1.params

    ccsr.models.ccsr_v1.params.NATIVE_SIZE = opts["native"]  # the smoke run's diffusion images are 64 px, not 512
    if args.section:  # one section in this process (the CUDA driver's child)
        print("RESULT " + json.dumps(run_section(args.section, opts)), flush=True)
        return

    info = machine()
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            ap.error("CUDA is not available here: run with --cpu-smoke to check the script on the CPU")
    label = "cpu-smoke" if args.cpu_smoke else info.get("gpu", "cuda").lower().replace(" ", "-")
    out_path = args.out or RESULTS / f"gpu-check-{label}.json"
    report = {"machine": info, "mode": "cpu-smoke" if args.cpu_smoke else "cuda", "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "load_average": os.getloadavg(), "options": {k: v for k, v in opts.items() if k != "official_python"},
              "sections": {}}
    start = time.perf_counter()
    _say(f"checkpoint: {_checkpoint(opts['arch'])}")  # written once, before the timed sections
    _checkpoint("tiny")
    if args.official and "official" in args.sections:  # the official code reads a Lightning .ckpt: written before the timed part
        import bench_vs_official

        _say(f"official checkpoint: {bench_vs_official.checkpoint(opts['arch'])}")
    for name in args.sections:
        _say(f"== {name}")
        t0 = time.perf_counter()
        try:
            if args.cpu_smoke:  # in this process: the smoke run is about the code, not about isolation
                res = run_section(name, opts)
            else:
                proc = subprocess.run([sys.executable, __file__, "--section", name] + (["--official", args.official] if args.official else [])
                                      + (["--official-python", args.official_python] if args.official_python else []),
                                      stdout=subprocess.PIPE, text=True, timeout=BUDGET_S[name])
                print("\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")), flush=True)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                res = json.loads(line.split(" ", 1)[1]) if line else {"error": f"exit {proc.returncode} without a result"}
        except subprocess.TimeoutExpired:
            res = {"error": f"over its time budget of {BUDGET_S[name]} s"}
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res.setdefault("section_seconds", time.perf_counter() - t0)
        report["sections"][name] = res
        report["total_seconds"] = time.perf_counter() - start
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2, default=str))
        if "error" in res:
            _say(f"  error: {res['error'][:500]}")
    _say(f"total {report['total_seconds']:.1f} s; saved {out_path}")


if __name__ == "__main__":
    main()
