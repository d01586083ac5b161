"""Engine benchmark: per-stage times and peak memory of one upscale request.

Each case runs in its own subprocess so that peak RSS (and peak GPU memory)
belongs to that case alone. Results are printed and saved as JSON under
benchmarks/results/, with the machine named.

    python benchmarks/bench_engine.py                 # CPU cases (tiny 512 px, full-size 256->512)
    python benchmarks/bench_engine.py --cases tiny    # just the quick one
    python benchmarks/bench_engine.py --gpu           # GPU cases (default request, tiled 4K) in fp16 and bf16

Weights are random (the architecture, not the values, sets the cost), written
once into benchmarks/.cache/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
FIXTURES = ROOT / "tests" / "fixtures"  # in the repository: nothing beside it is needed

from machine_info import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

_TILED = dict(scale=2, steps=20, tile_diffusion="gaussian", tile_diffusion_size=512, tile_diffusion_stride=256)
# name: (config, weights dtype, input size, request fields, repeats, tile batch size)
CASES = {
    "tiny-512": ("tiny", "fp32", (256, 256), dict(scale=2, steps=50), 3, 4),
    # the same tiled request one tile at a time (the reference's way) and batched
    "tiny-1024-tiled-batch1": ("tiny", "fp32", (512, 512), _TILED, 3, 1),
    "tiny-1024-tiled-batch4": ("tiny", "fp32", (512, 512), _TILED, 3, 4),
    "full-256to512-cpu": ("v1", "fp32", (256, 256), dict(scale=2, steps=50), 1, 4),
    "gpu-default-512to1024": ("v1", "fp16", (512, 512), dict(scale=2, steps=50), 5, 4),
    "gpu-tiled-1080p-to-4k": ("v1", "fp16", (1920, 1080), dict(scale=2, steps=50, tile_diffusion="gaussian", tile_diffusion_size=1024, tile_diffusion_stride=512, tile_vae=True), 2, 4),
}
CPU_CASES = ["tiny-512", "tiny-1024-tiled-batch1", "tiny-1024-tiled-batch4", "full-256to512-cpu"]
GPU_CASES = ["gpu-default-512to1024", "gpu-tiled-1080p-to-4k"]


def load_config(name: str):
    """CCSRConfig of the named architecture: "v1" (full size) or "tiny" (tests/fixtures)."""
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig

    return CCSRConfig.v1() if name == "v1" else CCSRConfig.from_yaml(FIXTURES / "ccsr-tiny.yaml")


def checkpoint(config: str, dtype: str) -> Path:
    """Random weights of the named architecture, written once."""
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint
    from ccsr.engine.device import DTYPES

    path = CACHE / f"random-{config}-{dtype}.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", flush=True)
        write_random_checkpoint(load_config(config), path, seed=0, dtype=DTYPES[dtype])
    return path


def run_case(name: str, device: str, dtype: str) -> dict:
    """One case in this process (called in a subprocess by main)."""
    import resource

    import torch
    from PIL import Image

    from ccsr.models.ccsr_v1.networks.model import CCSRModel
    from ccsr.models.ccsr_v1 import preprocess
    from ccsr.engine.device import pick_dtype
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    config_name, wdtype, size, fields, repeats, tile_batch = CASES[name]
    cfg = load_config(config_name)
    path = checkpoint(config_name, wdtype)
    dev = torch.device(device)
    dt = pick_dtype(dtype, dev)
    t0 = time.perf_counter()
    model = CCSRModel.from_file(path, cfg, device=dev, dtype=dt)
    load_s = time.perf_counter() - t0
    # the text context is computed once per checkpoint at load; time it alone too
    from ccsr.models.ccsr_v1.networks.model import _text_context
    from ccsr.models.ccsr_v1.checkpoint import load_state_dict

    sd = load_state_dict(path, cfg, validate=False)
    t0 = time.perf_counter()
    _text_context(sd, cfg, dev)
    text_s = time.perf_counter() - t0
    del sd
    up = CCSRUpscaler(model, tile_batch_size=tile_batch)
    with Image.open(FIXTURES / "images" / "astronaut.png") as im:
        image = im.convert("RGB").resize(size, Image.BICUBIC)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for r in range(repeats + (1 if dev.type == "cuda" else 0)):  # one warm-up on GPU
        res = up(image, seed=r, **fields)
        t0 = time.perf_counter()
        png = preprocess.encode_image(res.image, "png")
        enc_cv = time.perf_counter() - t0
        t0 = time.perf_counter()
        import io

        res.image.save(io.BytesIO(), format="PNG")
        enc_pil = time.perf_counter() - t0
        runs.append({**res.timings, "image_encode_png_opencv": enc_cv, "image_encode_png_pillow": enc_pil,
                     "evaluations": res.evaluations, "output": list(res.image.size), "png_bytes": len(png)})
    if dev.type == "cuda":
        runs = runs[1:]
    keys = [k for k in runs[0] if isinstance(runs[0][k], float)]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    med["total_request"] = sum(med[k] for k in ("preprocess", "condition_encode", "sampling", "decode", "color_fix", "postprocess"))
    out = {
        "case": name, "device": str(dev), "dtype": str(dt).replace("torch.", ""), "weights": config_name,
        "input": list(size), "fields": fields, "tile_batch_size": tile_batch, "repeats": len(runs),
        "load_s": load_s, "text_context_s": text_s, "median_s": med,
        "evaluations": runs[0]["evaluations"], "output": runs[0]["output"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", help=f"cases to run (default: CPU cases, or GPU cases with --gpu): {', '.join(CASES)}")
    ap.add_argument("--gpu", action="store_true", help="run the GPU cases on cuda in fp16 and bf16")
    ap.add_argument("--one", nargs=3, metavar=("CASE", "DEVICE", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (default: benchmarks/results/engine-<cpu|gpu>.json)")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_case(*args.one)), flush=True)
        return

    if args.gpu:
        plan = [(case, "cuda", dtype) for case in args.cases or GPU_CASES for dtype in ("fp16", "bf16")]
    else:
        plan = [(case, "cpu", "fp32") for case in args.cases or CPU_CASES]
    results = []
    for case, device, dtype in plan:
        print(f"== {case} on {device} {dtype}", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", case, device, dtype], capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            results.append({"case": case, "device": device, "dtype": dtype, "error": proc.stderr.strip().splitlines()[-1:] })
            continue
        res = json.loads(line[len("RESULT "):])
        results.append(res)
        med = res["median_s"]
        print(f"   load {res['load_s']:.2f}s (text {res['text_context_s']:.2f}s) | encode {med['condition_encode']:.3f}s | "
              f"{res['evaluations']} evals {med['sampling']:.2f}s ({med['per_evaluation']:.3f}s each) | decode {med['decode']:.3f}s | "
              f"color fix {med['color_fix']:.3f}s | png {med['image_encode_png_opencv']:.3f}s (Pillow {med['image_encode_png_pillow']:.3f}s) | "
              f"total {med['total_request']:.2f}s | peak RSS {res['peak_rss_mb']:.0f} MB"
              + (f" | peak GPU {res['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in res else ""), flush=True)
    by = {r["case"]: r for r in results if "median_s" in r}
    ratios = {}
    if "tiny-1024-tiled-batch1" in by and "tiny-1024-tiled-batch4" in by:
        ratios["tile_batch4_speedup_vs_batch1_sampling"] = (
            by["tiny-1024-tiled-batch1"]["median_s"]["sampling"] / by["tiny-1024-tiled-batch4"]["median_s"]["sampling"])
    for r in by.values():
        m = r["median_s"]
        ratios[f"{r['case']}:{r['dtype']}:png_opencv_speedup_vs_pillow"] = m["image_encode_png_pillow"] / max(m["image_encode_png_opencv"], 1e-9)
    report = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": results, "ratios": ratios}
    out = args.out or RESULTS / f"engine-{'gpu' if args.gpu else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
