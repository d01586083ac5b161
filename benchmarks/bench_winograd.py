"""The ``winograd`` setting in a long-running worker: one loaded CCSR-v2 engine
runs the same request with PyTorch's direct convolutions and with NNPACK's
Winograd kernels in turn (off, on, off, on ...), so both see the same machine
load, warm heaps and page cache. Whole-process figures (imports, loading and
the first call's allocations included) are ``bench_v2.py --also-direct``.

    python benchmarks/bench_winograd.py [--rounds 3] [--request two|one]
    python benchmarks/bench_winograd.py --stripes 64 128 256 [--rounds 7]

``--stripes``: only the VAE at 512 px (decode a 64 px latent, encode a 512 px
image), direct and with each stripe size in MiB in turn (``winograd-stripes-cpu.json``);
a larger stripe means fewer copies and a larger workspace NNPACK keeps (about
3.5x the stripe), so this is what chose ``STRIPE_BYTES``.

Full-size random weights (written into ``benchmarks/.cache/`` by bench_v2.py
or here); 256 px input; medians per stage saved in
``benchmarks/results/winograd-cpu.json`` with the machine named.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_v2 import TWO_STEP, v2_full_weights  # noqa: E402
from machine_info import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--request", choices=["two", "one"], default="two")
    ap.add_argument("--stripes", type=int, nargs="+", metavar="MIB", help="Compare stripe sizes on the VAE instead.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.stripes:
        return stripes(args)
    args.out = args.out or ROOT / "benchmarks" / "results" / "winograd-cpu.json"
    weights = v2_full_weights()
    from PIL import Image

    from ccsr.engine import winograd
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    up = V2Upscaler.from_folder(weights, device="cpu", dtype="fp32", winograd=False)
    nets = (up.nets.unet, up.nets.controlnet, up.nets.vae)
    image = Image.open(ROOT / "tests" / "fixtures" / "images" / "chelsea.png").convert("RGB").resize((256, 256), Image.BICUBIC)
    request = TWO_STEP if args.request == "two" else {"seed": 1, "scale": 2}
    runs: dict[str, list[dict]] = {"direct": [], "winograd": []}
    for i in range(args.rounds):
        for mode in ("direct", "winograd"):
            (winograd.enable if mode == "winograd" else winograd.disable)(*nets)
            start = time.perf_counter()
            timings = up(image, request).timings
            row = {"wall_s": time.perf_counter() - start, **{k: timings[k] for k in ("encode", "sampling", "decode")},
                   "peak_rss_gib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
            runs[mode].append(row)
            print(f"round {i + 1} {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    med = {mode: {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "encode", "sampling", "decode")}
           for mode, rows in runs.items()}
    result = {"machine": machine(), "request": request, "input": "256x256 (chelsea.png, bicubic)", "nnpack": winograd.available(),
              "runs": runs, "medians": med, "winograd_vs_direct": med["winograd"]["wall_s"] / med["direct"]["wall_s"]}
    print(json.dumps({"medians": med, "winograd_vs_direct": result["winograd_vs_direct"]}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


def stripes(args: argparse.Namespace) -> None:
    import torch

    from ccsr.engine import winograd
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    weights = v2_full_weights()
    up = V2Upscaler.from_folder(weights, device="cpu", dtype="fp32", release_weights=False)
    vae = up.nets.vae
    g = torch.Generator().manual_seed(0)
    z, x = torch.randn(1, 4, 64, 64, generator=g), torch.rand(1, 3, 512, 512, generator=g) * 2 - 1
    modes = ["direct", *args.stripes]
    runs: dict[str, list[dict]] = {str(m): [] for m in modes}
    for i in range(args.rounds + 1):  # round 0 warms every path (and grows NNPACK's workspace) and is not kept
        for mode in modes:
            (winograd.disable if mode == "direct" else winograd.enable)(vae)
            if mode != "direct":
                winograd.WinogradConv2d.stripe_bytes = mode << 20
            with torch.no_grad():
                start = time.perf_counter()
                vae.decode(z)
                decode = time.perf_counter() - start
                start = time.perf_counter()
                vae.encode(x)
                encode = time.perf_counter() - start
            if i:
                runs[str(mode)].append({"decode": decode, "encode": encode})
            print(f"round {i} {mode}: decode {decode:.2f} s, encode {encode:.2f} s", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rows) for k in ("decode", "encode")} for m, rows in runs.items()}
    result = {"machine": machine(), "case": "VAE at 512 px, full size, random fp32 weights", "stripe_mib": args.stripes,
              "runs": runs, "medians": med}
    print(json.dumps(med, indent=1))
    out = args.out or ROOT / "benchmarks" / "results" / "winograd-stripes-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
